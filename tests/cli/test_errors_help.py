"""Errors that help, and what operators reach for (issue #11 items 6 and 8), through the real
command: ``python -m mqtier`` in a subprocess, so ``main()`` and typer's own parsing run.

Every error is ``error: <what and where>`` on stderr, then, when there is one, ``try: <a
command that would work>``; with --json the JSON error object, its ``hint`` the ``try:``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from mqtier.cli import app
from tests.moto_s3 import start_moto_server

BIN = Path(sys.executable).parent  # the venv's bin/, where the `mqtier` script is
SMALL = ["--commitlog-file-size", "256K", "--broker", "broker-help"]


def mq(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MQTIER_")}
    return subprocess.run(
        [sys.executable, "-m", "mqtier", *args],
        cwd=cwd,
        env=base | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def lines(text: str) -> list[str]:
    return text.strip().splitlines()


def try_line(stderr: str) -> list[str]:
    """The ``try:`` command as argv (hints quote paths as a shell would: none here need it)."""
    (line,) = [x for x in lines(stderr) if x.startswith("try: ")]
    argv = line.removeprefix("try: ").split()
    assert argv[0] == "mqtier", line
    return argv[1:]


def json_error(stderr: str) -> dict[str, Any]:
    (line,) = lines(stderr)
    doc = json.loads(line)
    assert set(doc) == {"version", "error"}, doc
    error: dict[str, Any] = doc["error"]
    return error


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a small store ``s`` (topic orders, 2 queues, 20 messages)."""
    root = tmp_path_factory.mktemp("help")
    with (root / "in.jsonl").open("w") as fh:
        for i in range(20):
            fh.write(json.dumps({"body": f"order {i}", "keys": [f"ORDER-{i}"]}) + "\n")
    res = mq(
        "ingest", "--store", "s", "-t", "orders", "--queues", "2", *SMALL, "in.jsonl", cwd=root
    )
    assert res.returncode == 0, res.stderr
    return root


@pytest.fixture(scope="module")
def record(work: Path) -> dict[str, Any]:
    res = mq("query", "key", "ORDER-3", "--store", "s", "-t", "orders", "--json", cwd=work)
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


# -- item 6: errors that help --------------------------------------------------------------


@pytest.mark.parametrize("store", ["s", "no-such-store"])
@pytest.mark.parametrize("msg_id", ["ZZZ", "G" * 32, "0" * 34])
def test_query_id_not_an_offset_msg_id_is_a_usage_error_naming_the_form(
    work: Path, store: str, msg_id: str
) -> None:
    """Was Python's "non-hexadecimal number found in fromhex()" with exit 3."""
    res = mq("query", "id", msg_id, "--store", store, cwd=work)
    assert res.returncode == 2, res.stderr
    (line,) = lines(res.stderr)
    assert line.startswith(f"error: message id '{msg_id}' is ")
    assert "32 hex chars (IPv4 store host) or 56 (IPv6)" in line
    assert "fromhex" not in res.stderr


def test_query_id_given_a_uniq_key_says_try_query_uniq(work: Path, record: dict[str, Any]) -> None:
    uniq = record["uniq_key"]
    assert len(uniq) == 32  # the same length as an IPv4 offsetMsgId
    res = mq("query", "id", uniq, "--store", "s", cwd=work)
    assert res.returncode == 3, res.stderr
    first, second = lines(res.stderr)
    assert first.startswith("error: ") and "looks like a UNIQ_KEY" in first and uniq in first
    assert second == f"try: mqtier query uniq {uniq} --store s"
    # The command it suggests finds the message.
    found = mq(*try_line(res.stderr), "--json", cwd=work)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["msg_id"] == record["msg_id"]
    err = json_error(mq("query", "id", uniq, "--store", "s", "--json", cwd=work).stderr)
    assert err["exit_code"] == 3 and err["hint"] == second.removeprefix("try: ")


def test_an_offset_msg_id_naming_no_message_is_no_uniq_key(
    work: Path, record: dict[str, Any]
) -> None:
    """A real store host and port, an offset past the commit log: plain "not found"."""
    msg_id = record["msg_id"][:-16] + f"{10**9:016X}"
    res = mq("query", "id", msg_id, "--store", "s", cwd=work)
    assert res.returncode == 3, res.stderr
    assert "UNIQ_KEY" not in res.stderr and "try:" not in res.stderr


def test_a_missing_input_file_is_an_os_error_naming_the_file(work: Path) -> None:
    """docs/cli-json.md: exit 1 (it was 8, "malformed input")."""
    res = mq("ingest", "--store", "new", "-t", "orders", "in.jsonl", "missing.jsonl", cwd=work)
    assert res.returncode == 1, res.stderr
    (line,) = lines(res.stderr)
    assert line.startswith("error: ") and "missing.jsonl" in line
    assert not (work / "new").exists()
    res = mq("ingest", "--store", "new", "-t", "o", "missing.jsonl", "--json", cwd=work)
    err = json_error(res.stderr)
    assert (err["type"], err["exit_code"]) == ("FileNotFoundError", 1)
    assert "missing.jsonl" in err["message"]


def test_inspect_a_store_directory_says_so_and_what_to_run(work: Path) -> None:
    res = mq("inspect", "s", cwd=work)
    assert res.returncode == 2, res.stderr
    first, second = lines(res.stderr)
    assert first == "error: s is a store directory; inspect describes one file of a store"
    assert second == "try: mqtier offsets --store s"
    assert "no such file" not in res.stderr
    assert mq(*try_line(res.stderr), cwd=work).returncode == 0


def test_inspect_a_directory_in_a_store_suggests_a_file_in_it(work: Path) -> None:
    res = mq("inspect", "s/commitlog", cwd=work)
    assert res.returncode == 2, res.stderr
    first, second = lines(res.stderr)
    assert first == "error: s/commitlog is a directory; inspect describes one file"
    assert second == "try: mqtier inspect s/commitlog/00000000000000000000"
    assert mq(*try_line(res.stderr), cwd=work).returncode == 0


@pytest.mark.parametrize(
    ("toml", "where", "key", "close"),
    [
        ('[cold]\nbrokr = "b"\n', "in [cold]", "brokr", "broker"),
        ('[cold]\nstorage_option = { key = "k" }\n', "in [cold]", "storage_option",
         "storage_options"),
        ('[cld]\nbroker = "b"\n', "at the top level", "cld", "cold"),
    ],
)  # fmt: skip
def test_a_bad_config_key_names_the_file_the_section_the_key_and_the_closest(
    work: Path, toml: str, where: str, key: str, close: str
) -> None:
    """Was ``unknown key(s) in : brokr``: rich took ``[cold]`` for markup and dropped it."""
    (work / "typo.toml").write_text(toml)
    res = mq("offsets", "--store", "s", "--cold", "file:///nowhere", "--config", "typo.toml",
             cwd=work)  # fmt: skip
    assert res.returncode == 2, res.stderr
    first, second = lines(res.stderr)
    assert first.startswith(f"error: typo.toml: unknown key '{key}' {where} (known: ")
    assert second == f"try: {close} (not {key}) {where} of typo.toml"


def test_offsets_of_a_missing_topic_exits_3_like_read(work: Path) -> None:
    """Was exit 0 with an empty table, while ``read`` of a missing topic exits 3."""
    res = mq("offsets", "--store", "s", "--topic", "nope", cwd=work)
    assert res.returncode == 3, res.stderr
    assert lines(res.stderr) == ["error: no topic 'nope' in s", "try: mqtier offsets --store s"]
    assert res.stdout == ""
    listing = mq(*try_line(res.stderr), cwd=work)
    assert listing.returncode == 0 and "orders" in listing.stdout  # lists the topics there are
    assert mq("read", "--store", "s", "--topic", "nope", cwd=work).returncode == 3
    err = json_error(mq("offsets", "--store", "s", "--topic", "nope", "--json", cwd=work).stderr)
    assert (err["type"], err["exit_code"]) == ("NotFoundError", 3)


def test_offsets_of_a_topic_only_the_cold_tier_holds_is_no_error(work: Path) -> None:
    cold = (work / "cold").as_uri()
    res = mq("dispatch", "--store", "s", "--to", cold, "--force", cwd=work)
    assert res.returncode == 0, res.stderr
    # Without a store the cold tier alone answers: its topic is there, another is not.
    there = mq("offsets", "--cold", cold, "--broker", "broker-help", "-t", "orders", "--json",
               cwd=work)  # fmt: skip
    assert there.returncode == 0, there.stderr
    assert {q["topic"] for q in json.loads(there.stdout)["queues"]} == {"orders"}
    res = mq("offsets", "--cold", cold, "--broker", "broker-help", "-t", "nope", cwd=work)
    assert res.returncode == 3, res.stderr
    assert lines(res.stderr)[-2:] == [
        f"error: no topic 'nope' in {cold}",
        f"try: mqtier offsets --cold {cold} --broker broker-help",
    ]
    both = mq("offsets", "--store", "s", "--cold", cold, "-t", "orders", cwd=work)
    assert both.returncode == 0, both.stderr


USAGE_ERRORS = [
    (["offsets", "--bogus"], "mqtier offsets", "No such option: --bogus"),
    (["read", "--store", "s"], "mqtier read", "Missing option '--topic'"),
    (["read", "-t", "orders", "--queue", "abc"], "mqtier read", "Invalid value for '--queue'"),
    (["read", "-t", "orders", "--queue", "5000"], "mqtier read", "--queue"),
    (["query", "id"], "mqtier query id", "Missing argument 'MSG_ID'"),
    (["nosuch"], "mqtier", "No such command 'nosuch'"),
    (["ingest", "-t", "orders", "--queues", "4", "--format", "xml", "in.jsonl"], "mqtier ingest",
     "--format must be one of"),
]  # fmt: skip


@pytest.mark.parametrize(("argv", "path", "what"), USAGE_ERRORS, ids=lambda v: str(v))
def test_usage_errors_are_one_error_line_and_a_try_line(
    work: Path, argv: list[str], path: str, what: str
) -> None:
    """Was typer's "Usage: ..." line, "Try ..." and a boxed "Error" panel."""
    res = mq(*argv, cwd=work, env={"COLUMNS": "80"})
    assert res.returncode == 2, res.stderr
    first, second = lines(res.stderr)
    assert first.startswith(f"error: {path}: ") and what in first, first
    assert second == f"try: {path} --help"
    assert res.stdout == ""
    if argv == USAGE_ERRORS[0][0]:
        assert mq(*try_line(res.stderr), cwd=work).returncode == 0  # the help it points to


@pytest.mark.parametrize(("argv", "path", "what"), USAGE_ERRORS, ids=lambda v: str(v))
def test_usage_errors_under_json_are_the_json_error_object(
    work: Path, argv: list[str], path: str, what: str
) -> None:
    res = mq(*argv, "--json", cwd=work)
    assert res.returncode == 2, res.stderr
    err = json_error(res.stderr)
    assert err["type"] == "UsageError" and err["exit_code"] == 2
    assert err["message"].startswith(f"{path}: ") and what in err["message"]
    assert err["hint"] == f"{path} --help"


def test_help_and_no_arguments_still_print_the_help(work: Path) -> None:
    for argv in (["--help"], ["offsets", "-h"], ["query", "--help"]):
        res = mq(*argv, cwd=work)
        assert res.returncode == 0 and "Usage: mqtier" in res.stdout, res.stderr
    for argv in ([], ["query"]):  # no_args_is_help: the help, exit 2 as before
        res = mq(*argv, cwd=work)
        assert res.returncode == 2 and "Usage: mqtier" in res.stdout
        assert "error:" not in res.stderr


# -- item 8: what operators reach for ------------------------------------------------------


def test_version(work: Path) -> None:
    res = mq("--version", cwd=work)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"mqtier {version('mqtier')}\n"


def _bash_completions(script: str, words: str, cword: int, cwd: Path) -> list[str]:
    """COMPREPLY from the completion function ``script`` defines, run by bash itself."""
    bash = shutil.which("bash")
    if bash is None or not (BIN / "mqtier").is_file():
        pytest.skip("needs bash and the installed mqtier script")
    run = "\n".join(
        [
            script,
            f"COMP_WORDS=({words}); COMP_CWORD={cword}",
            "_mqtier_completion mqtier",
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTIER_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([bash, "-c", run], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    return done.stdout.split()


def test_shell_completion_for_bash(work: Path) -> None:
    res = mq("--show-completion", cwd=work, env={"SHELL": "/bin/bash"})
    assert res.returncode == 0, res.stderr
    script = res.stdout
    assert "_mqtier_completion" in script and "complete " in script
    assert "offsets" in _bash_completions(script, "mqtier off", 1, work)
    assert _bash_completions(script, "mqtier query ''", 2, work) == ["key", "id", "uniq"]
    assert "--endpoint-url" in _bash_completions(script, "mqtier read --end", 2, work)


def test_install_completion_for_bash(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None or not (BIN / "mqtier").is_file():
        pytest.skip("needs bash and the installed mqtier script")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQTIER_")}
    env |= {"HOME": str(tmp_path), "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    # Run from bash, as a user would: typer asks the parent process which shell it is.
    done = subprocess.run([bash, "-c", "mqtier --install-completion"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    installed = tmp_path / ".bash_completions" / "mqtier.sh"
    assert "_mqtier_completion" in installed.read_text()
    assert str(installed) in (tmp_path / ".bashrc").read_text()


def test_completion_options_are_on_the_root_help_only(work: Path) -> None:
    assert "--install-completion" in mq("--help", cwd=work).stdout
    for command in ("offsets", "read", "ingest"):
        out = mq(command, "--help", cwd=work).stdout
        assert "completion" not in out and "--version" not in out


def test_config_after_the_command(work: Path) -> None:
    cold = (work / "cold-config").as_uri()
    assert mq("dispatch", "--store", "s", "--to", cold, "--force", cwd=work).returncode == 0
    (work / "good.toml").write_text(f'[cold]\nurl = "{cold}"\n')
    (work / "typo.toml").write_text('[cold]\nbrokr = "b"\n')
    for argv in (
        ["offsets", "--config", "good.toml", "--store", "s", "--json"],
        ["--config", "good.toml", "offsets", "--store", "s", "--json"],  # before, as it was
        ["--config", "typo.toml", "offsets", "--config", "good.toml", "--store", "s", "--json"],
    ):
        res = mq(*argv, cwd=work)
        assert res.returncode == 0, (argv, res.stderr)
        assert json.loads(res.stdout)["cold"]["url"] == cold  # the file's url was used
    env = {"MQTIER_CONFIG": str(work / "typo.toml")}  # the option wins over the variable
    assert mq("offsets", "--config", "good.toml", "-s", "s", cwd=work, env=env).returncode == 0
    assert mq("offsets", "-s", "s", cwd=work, env=env).returncode == 2


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with start_moto_server() as endpoint:
        yield endpoint


def test_endpoint_url_is_short_for_the_storage_option(work: Path, moto: str) -> None:
    import boto3

    boto3.client("s3", aws_access_key_id="k", aws_secret_access_key="s", endpoint_url=moto,
                 region_name="us-east-1").create_bucket(Bucket="help")  # fmt: skip
    creds = ["-o", "key=k", "-o", "secret=s", "-o", "client_kwargs.region_name=us-east-1"]
    url = "s3://help/mq"
    res = mq("dispatch", "--store", "s", "--to", url, "--endpoint-url", moto, *creds, "--force",
             "--json", cwd=work)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["messages"] == 20
    for endpoint in (["--endpoint-url", moto], ["-o", f"client_kwargs.endpoint_url={moto}"]):
        res = mq("offsets", "--store", "s", "--cold", url, *endpoint, *creds, "--json", cwd=work)
        assert res.returncode == 0, res.stderr
        assert sum(q["cold_max_offset"] for q in json.loads(res.stdout)["queues"]) == 20
    res = mq("read", "--cold", url, "--broker", "broker-help", "-t", "orders", "-q", "0",
             "--endpoint-url", moto, *creds, "--json", cwd=work)  # fmt: skip
    assert res.returncode == 0 and res.stdout.count("\n") == 10, res.stderr
    # The same value twice is fine; two different ones are an error, as for a file:// tier.
    same = ["--endpoint-url", moto, "-o", f"client_kwargs.endpoint_url={moto}"]
    assert mq("offsets", "-s", "s", "--cold", url, *same, *creds, cwd=work).returncode == 0
    other = ["--endpoint-url", moto, "-o", "client_kwargs.endpoint_url=http://127.0.0.1:1"]
    res = mq("offsets", "-s", "s", "--cold", url, *other, *creds, cwd=work)
    assert res.returncode == 2 and "disagree" in res.stderr, res.stderr
    res = mq("offsets", "-s", "s", "--cold", (work / "cold").as_uri(), "--endpoint-url", moto,
             cwd=work)  # fmt: skip
    assert res.returncode == 2 and "--endpoint-url is for s3:// URLs" in res.stderr


def _commands() -> Iterator[list[str]]:
    def walk(cmd: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def test_help_shows_no_python_type_names() -> None:
    """Was ``<bool>`` beside every flag, ``<list[str]>``, ``<int range> [x>=0]``.

    In process (CliRunner runs the same root group and its ``main``): 15 interpreters less.
    """
    runner = CliRunner()
    for argv in _commands():
        res = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "80"})
        assert res.exit_code == 0, (argv, res.output)
        out = res.stdout
        assert "Usage:" in out, argv
        for word in ("<bool>", "<str>", "<int", "<path>", "<list[", "x>=", "<=x", "<=9"):
            assert word not in out, (argv, word, out)
        assert max(map(len, out.splitlines())) <= 80, argv
    read = runner.invoke(app, ["read", "--help"], env={"COLUMNS": "80"}).stdout
    for metavar in ("DIR", "TOPIC", "OFFSET", "URL", "KEY=VALUE", "NAME"):
        assert f" {metavar} " in read, metavar
