"""Cold-tier URLs from the command line: secrets never shown, wrong tiers never read as empty.

Found in a hostile run (#10, items 9 and 10): ``--cold http://user:pass@127.0.0.1:1/x`` and
``s3://KEY:SECRET@bucket/x`` echoed the secret in errors; a deleted bucket read as an empty tier
(``offsets`` exit 0, all pending); ``--to s3://`` tiered into a local directory ``./s3:``; an
unreachable ``ftp://`` exited 1 without naming the URL; ``-o client_kwargs=x`` exited 14 with
an AttributeError; ``memory://`` was accepted and lost everything at exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mqtier.backend.open import open_cold_store, raw_cold_store
from mqtier.backend.retrying import RetryPolicy
from mqtier.cli import _cold
from mqtier.errors import ConfigError
from mqtier.redact import redact, redact_options, redact_url, remember_secrets
from tests.cli.test_cli import SMALL, run, write_jsonl
from tests.moto_s3 import s3_client, start_moto_server

BROKER = "broker-cli"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    monkeypatch.delenv("MQTIER_COLD", raising=False)
    monkeypatch.chdir(tmp_path)  # a stray "./s3:" directory would land here
    monkeypatch.setattr(_cold, "config_path", None)
    # Unreachable targets are really unreachable and really retried, without the waits.
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt: 0.0)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("urls")
    path = root / "s"
    src = write_jsonl(root / "o.jsonl", 40)
    res = run("ingest", "--store", str(path), "--topic", "orders", *SMALL, str(src))
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with start_moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def s3(moto: str) -> Any:
    return s3_client(moto)


MOTO_KEY = "AKIAMOTOKEYID0001"
MOTO_SECRET = "MotoSecret/Value+0001"


def moto_options(endpoint: str) -> list[str]:
    return [
        "-o", f"client_kwargs.endpoint_url={endpoint}",
        "-o", "client_kwargs.region_name=us-east-1",
        "-o", f"key={MOTO_KEY}",
        "-o", f"secret={MOTO_SECRET}",
        "-o", "skip_instance_cache=true",
    ]  # fmt: skip


def command(name: str, url: str, store: Path) -> list[str]:
    """Each command that takes a cold tier, with what it needs besides."""
    return {
        "offsets": ["offsets", "--store", str(store), "--cold", url],
        "offsets-cold-only": ["offsets", "--cold", url, "--broker", BROKER],
        "read": ["read", "--cold", url, "--broker", BROKER, "-t", "orders"],
        "read-both": ["read", "--store", str(store), "--cold", url, "-t", "orders"],
        "dispatch": ["dispatch", "--store", str(store), "--to", url, "--force"],
        "clean": ["clean", "--store", str(store), "--cold", url, "--keep", "72h"],
        "expire": ["expire", "--cold", url, "--broker", BROKER, "--ttl", "30d"],
        "compact": ["compact", "--cold", url, "--broker", BROKER],
    }[name]


COMMANDS = (
    "offsets",
    "offsets-cold-only",
    "read",
    "read-both",
    "dispatch",
    "clean",
    "expire",
    "compact",
)
READERS = tuple(c for c in COMMANDS if c != "dispatch")

# -- secrets -------------------------------------------------------------------------------------

UNREACHABLE_S3 = [
    "-o", "client_kwargs.endpoint_url=http://127.0.0.1:1",
    "-o", "config_kwargs.retries.max_attempts=1",
    "-o", "config_kwargs.connect_timeout=1",
]  # fmt: skip
# (url, extra arguments, the secrets none of which may be printed)
SECRET_TARGETS: dict[str, tuple[str, list[str], list[str]]] = {
    "http-userinfo": ("http://alice:HttpPassw0rd@127.0.0.1:1/x", [], ["HttpPassw0rd"]),
    "s3-userinfo": (
        "s3://AKIAURLKEYID0001:UrlSecret/Key+0001@bucket/x",
        [],
        ["UrlSecret/Key+0001", "AKIAURLKEYID0001", "UrlSecret"],
    ),
    "s3-options": (
        "s3://bucket/x",
        ["-o", "key=AKIAOPTKEYID0001", "-o", "secret=OptSecretValue0001", *UNREACHABLE_S3],
        ["AKIAOPTKEYID0001", "OptSecretValue0001"],
    ),
    "s3-token-bad-group": (
        "s3://bucket/x",
        ["-o", "token=SessTokenValue0001", "-o", "client_kwargs=notagroup"],
        ["SessTokenValue0001"],
    ),
    "s3-nested-secret": (
        "s3://bucket/x",
        ["-o", "client_kwargs.aws_secret_access_key=NestedSecret0001", *UNREACHABLE_S3],
        ["NestedSecret0001"],
    ),
    "ftp-userinfo": ("ftp://bob:FtpPassw0rd@127.0.0.1:1/x", [], ["FtpPassw0rd"]),
    "signed-query": (
        "http://127.0.0.1:1/x?X-Amz-Signature=SigSecretValue0001&X-Amz-Credential=CredValue0001",
        [],
        ["SigSecretValue0001", "CredValue0001"],
    ),
    "option-without-equals": ("s3://bucket/x", ["-o", "PastedSecretValue0001"], ["PastedSecret"]),
}


@pytest.mark.parametrize("json_out", [False, True], ids=["text", "json"])
@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("target", sorted(SECRET_TARGETS))
def test_secrets_are_never_printed(
    store: Path, target: str, cmd: str, json_out: bool, caplog: pytest.LogCaptureFixture
) -> None:
    url, extra, secrets = SECRET_TARGETS[target]
    res = run(*command(cmd, url, store), *extra, *(["--json"] if json_out else []))
    shown = res.stdout + res.stderr + caplog.text
    for secret in secrets:
        assert secret not in shown, shown
    assert res.exit_code != 70 and "Traceback" not in shown, shown
    if cmd != "read-both":  # reading both tiers falls back to the hot one, with a warning
        assert res.exit_code in (2, 3, 14), shown
        line = res.stderr.strip().splitlines()[-1]
        if json_out:
            assert json.loads(line)["error"]["exit_code"] == res.exit_code


def test_the_url_is_named_redacted(store: Path) -> None:
    res = run(*command("offsets", "http://alice:HttpPassw0rd@127.0.0.1:1/x", store))
    assert res.exit_code == 14
    assert "http://alice:***@127.0.0.1:1/x" in res.stderr


def test_secret_from_the_environment_is_not_printed(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MQTIER_COLD", "ftp://bob:EnvPassw0rd@127.0.0.1:1/x")
    res = run("offsets", "--store", str(store), "--json")
    assert res.exit_code == 14, res.output
    assert "EnvPassw0rd" not in res.output and "ftp://bob:***@127.0.0.1:1/x" in res.stderr


def test_warning_of_a_real_process_is_redacted(store: Path, tmp_path: Path) -> None:
    """The hot-only fallback's warning goes through logging to stderr: redacted there too."""
    env = {k: v for k, v in os.environ.items() if k not in ("MQTIER_COLD", "MQTIER_CONFIG")}
    res = subprocess.run(
        [sys.executable, "-m", "mqtier", "read", "--store", str(store), "-t", "orders",
         "--cold", "http://carol:ProcPassw0rd@127.0.0.1:1/x", "-n", "1"],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "cold tier unavailable" in res.stderr
    assert "ProcPassw0rd" not in res.stdout + res.stderr
    assert "http://carol:***@127.0.0.1:1/x" in res.stderr


def test_json_documents_show_the_url_without_secrets(store: Path, moto: str, s3: Any) -> None:
    """A working S3 tier: secrets of the options appear nowhere in the --json documents."""
    s3.create_bucket(Bucket="secret-docs")
    url = "s3://secret-docs/tier"
    for cmd in ("dispatch", "offsets", "offsets-cold-only", "expire", "compact"):
        res = run(*command(cmd, url, store), *moto_options(moto), "--json")
        assert res.exit_code == 0, res.output
        assert MOTO_SECRET not in res.output and MOTO_KEY not in res.output
    doc = json.loads(run(*command("offsets", url, store), *moto_options(moto), "--json").stdout)
    assert doc["cold"]["url"] == url
    assert all(q["pending"] == 0 for q in doc["queues"])  # the dispatch above tiered it all


# -- missing roots: exit 3, never an empty tier -------------------------------------------------


@pytest.mark.parametrize("cmd", READERS)
def test_missing_directory_is_not_found(store: Path, tmp_path: Path, cmd: str) -> None:
    url = f"file://{tmp_path / 'no-such-cold'}"
    res = run(*command(cmd, url, store))
    assert res.exit_code == 3, res.output
    assert "no-such-cold" in res.stderr and "no such directory" in res.stderr
    assert not (tmp_path / "no-such-cold").exists()


@pytest.mark.parametrize("cmd", READERS)
def test_missing_plain_path_is_not_found(store: Path, tmp_path: Path, cmd: str) -> None:
    res = run(*command(cmd, "missing-cold-dir", store))
    assert res.exit_code == 3, res.output
    assert "missing-cold-dir" in res.stderr
    assert not (tmp_path / "missing-cold-dir").exists()


def test_dispatch_creates_a_new_directory(store: Path, tmp_path: Path) -> None:
    cold = tmp_path / "fresh" / "cold"
    res = run(*command("dispatch", f"file://{cold}", store), "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["messages"] == 40
    assert run(*command("offsets", f"file://{cold}", store)).exit_code == 0


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_file_as_root_is_a_usage_error(store: Path, tmp_path: Path, cmd: str) -> None:
    (tmp_path / "afile").write_text("x")
    res = run(*command(cmd, f"file://{tmp_path / 'afile'}", store))
    assert res.exit_code == 2, res.output
    assert "not a directory" in res.stderr
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize("cmd", COMMANDS)
def test_missing_bucket_is_not_found(store: Path, moto: str, cmd: str) -> None:
    res = run(*command(cmd, "s3://no-such-bucket-mqtier/tier", store), *moto_options(moto))
    assert res.exit_code == 3, res.output
    assert "bucket 'no-such-bucket-mqtier' does not exist" in res.stderr


def test_deleted_bucket_is_not_an_empty_tier(store: Path, moto: str, s3: Any) -> None:
    s3.create_bucket(Bucket="deleted-later")
    url = "s3://deleted-later/tier"
    assert run(*command("dispatch", url, store), *moto_options(moto)).exit_code == 0
    before = run(*command("offsets", url, store), *moto_options(moto), "--json")
    assert before.exit_code == 0 and json.loads(before.stdout)["cold"]["committed_seq"] == 1
    for obj in s3.list_objects_v2(Bucket="deleted-later").get("Contents", []):
        s3.delete_object(Bucket="deleted-later", Key=obj["Key"])
    s3.delete_bucket(Bucket="deleted-later")
    for cmd in READERS:
        res = run(*command(cmd, url, store), *moto_options(moto))
        assert res.exit_code == 3, (cmd, res.output)
        assert "deleted-later" in res.stderr


# -- malformed URLs and options: exit 2 ---------------------------------------------------------

MALFORMED = [
    "s3://",
    "s3:///x",
    "s3:",
    "s3:bucket/x",
    "gs:/x",
    "gs://",
    "nosuchprotocol-xyz://bucket/x",
    "file://relative/dir",
    "memory://x",
    "memory://",
    "MEMORY://x",
    "simplecache::memory://x",
    " file:///tmp/x",
    "file:///tmp/x\n",
]


@pytest.mark.parametrize("cmd", COMMANDS)
@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_urls_are_usage_errors(store: Path, tmp_path: Path, url: str, cmd: str) -> None:
    res = run(*command(cmd, url, store))
    assert res.exit_code == 2, res.output
    assert "internal error" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no "./s3:" or the like


def test_memory_is_still_there_for_the_library(tmp_path: Path) -> None:
    cold = open_cold_store("memory://lib-asks-for-it", root="existing")
    cold.put("k", b"v")
    assert open_cold_store("memory://lib-asks-for-it").get("k") == b"v"


def test_unreachable_ftp_names_the_url(store: Path) -> None:
    res = run(*command("offsets", "ftp://127.0.0.1:1/cold", store))
    assert res.exit_code == 14, res.output
    assert "ftp://127.0.0.1:1/cold: cannot connect" in res.stderr


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["-o", "client_kwargs=x"], "-o client_kwargs"),
        (["-o", "config_kwargs=3"], "-o config_kwargs"),
        (["-o", "noequals"], "--storage-option #1"),
        (["-o", "=x"], "--storage-option #1"),
        (["-o", "a..b=1"], "--storage-option #1"),
        (["-o", "a.b=1", "-o", "a=2"], "--storage-option 'a'"),
        (["-o", "a=1", "-o", "a.b=2"], "--storage-option 'a.b'"),
        (["-o", "session=x"], "-o session"),
        (["-o", "client_kwargs.region_name=5"], "-o client_kwargs"),
        (["-o", "not_an_s3fs_option=1"], "-o not_an_s3fs_option"),
    ],
)
def test_malformed_storage_options_are_usage_errors(
    store: Path, moto: str, options: list[str], named: str
) -> None:
    endpoint = (
        ["-o", f"client_kwargs.endpoint_url={moto}"] if "client_kwargs=" not in options[1] else []
    )
    res = run(*command("offsets", "s3://bucket/x", store), *options, *endpoint)
    assert res.exit_code == 2, res.output
    assert named in res.stderr, res.stderr
    assert "AttributeError" not in res.stderr or "refused" in res.stderr


# -- the redaction functions ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pass@127.0.0.1:1/x", "http://user:***@127.0.0.1:1/x"),
        ("s3://KEY:SECRET@bucket/x", "s3://***@bucket/x"),
        ("s3://KEY:SEC/RET+1@bucket/x", "s3://***@bucket/x"),  # '/' in the secret
        ("ftp://token@host/x", "ftp://***@host/x"),
        ("abfs://container@account.dfs.core.windows.net/x", "abfs://container@account.dfs.core.windows.net/x"),
        ("s3://b/x?X-Amz-Signature=abc&part=1", "s3://b/x?X-Amz-Signature=***&part=1"),
        ("file:///tmp/a@b", "file:///tmp/a@b"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
    ],
)  # fmt: skip
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# What a URL's userinfo may hold unencoded: printable ASCII but for the delimiters and quotes.
_URL_CHARS = "".join(chr(c) for c in range(33, 127) if chr(c) not in "@:?#'\"<>")
password_text = st.text(alphabet=_URL_CHARS, min_size=1, max_size=30)
user_text = st.text(alphabet=_URL_CHARS.replace("/", ""), min_size=1, max_size=20)


@given(
    st.sampled_from(["http", "ftp", "s3", "gs", "sftp"]),
    user_text,
    password_text,
    st.text(alphabet=_URL_CHARS, max_size=20),
)
def test_redact_url_never_keeps_a_password(
    scheme: str, user: str, password: str, tail: str
) -> None:
    url = f"{scheme}://{user}:{password}@host.example/{tail}"
    # A password that also occurs in what redaction keeps (the mask, the host, the message)
    # would be "found" without having leaked.
    assume(
        password not in f"{scheme}://{user}:***@host.example/{tail} error: cannot reach (refused)"
    )
    assert password not in redact_url(url)
    assert password not in redact(f"error: cannot reach {url} (refused)")


def test_remembered_secrets_are_masked_anywhere() -> None:
    remember_secrets("s3://bucket/x", {"secret": "Remembered0001", "client_kwargs": {"a": 1}})
    assert redact("botocore said: bad key 'Remembered0001'") == "botocore said: bad key '***'"
    assert redact_options({"secret": "x", "client_kwargs": {"aws_session_token": "t", "n": 1}}) == {
        "secret": "***",
        "client_kwargs": {"aws_session_token": "***", "n": 1},
    }


def test_backend_url_is_redacted() -> None:
    cold = raw_cold_store("http://dave:BackendPassw0rd@127.0.0.1:1/x")
    assert cold.url == "http://dave:***@127.0.0.1:1/x"


def test_library_refuses_malformed_urls_too() -> None:
    for url in ("s3://", "s3:bucket", "gs://"):
        with pytest.raises(ConfigError):
            raw_cold_store(url)
