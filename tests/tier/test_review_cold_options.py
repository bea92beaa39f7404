"""Storage options a backend accepts but misuses are usage errors (exit 2), found by review.

* ``-o default_block_size=-1``: s3fs read every object as zeros, so an intact catalog was
  reported as damaged (exit 4, "restore it from a backup") and blocks failed their CRCs.
* ``-o client_kwargs.endpoint_url=localhost:9000`` (no scheme) or a malformed
  ``client_kwargs.region_name``: botocore's ValueError became exit 14, "a request failed".

None of these needs a server: each fails before the first request.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mqtier.backend.open import check_storage_options
from mqtier.cli import app
from mqtier.errors import ConfigError

ENDPOINT = ["-o", "client_kwargs.endpoint_url=http://127.0.0.1:1", "-o", "key=k", "-o", "secret=s"]


def read_cold(*options: str) -> tuple[int, str]:
    res = CliRunner().invoke(
        app,
        [
            "read",
            "--cold",
            "s3://bucket/x",
            "--broker",
            "b",
            "--topic",
            "t",
            "--queue",
            "0",
            *options,
        ],
        env={"MQTIER_COLD": None, "MQTIER_STORE": None, "AWS_CONFIG_FILE": "/nonexistent"},
    )
    return res.exit_code, res.stderr


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["-o", "client_kwargs.endpoint_url=localhost:9000", "-o", "key=k", "-o", "secret=s"],
         "Invalid endpoint"),
        ([*ENDPOINT, "-o", "client_kwargs.region_name=../../x"], "region_name"),
        ([*ENDPOINT, "-o", "default_block_size=-1"], "-o default_block_size"),
        ([*ENDPOINT, "-o", "default_block_size=abc"], "-o default_block_size"),
        ([*ENDPOINT, "-o", "config_kwargs.connect_timeout=soon"], "-o config_kwargs.connect_timeout"),
    ],
)  # fmt: skip
def test_misused_options_are_usage_errors(options: list[str], named: str) -> None:
    code, err = read_cold(*options)
    assert code == 2, err
    assert named in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_numbers_are_checked_and_secret_values_not_shown() -> None:
    check_storage_options({"default_block_size": 5 << 20, "config_kwargs": {"retries": {}}})
    with pytest.raises(ConfigError, match="is negative") as exc:
        check_storage_options({"client_kwargs": {"session_timeout": -7}})
    assert "-7" not in str(exc.value)


def test_expire_refuses_one_topic_given_two_ttls(tmp_path: Path) -> None:
    """``--topic-ttl a=1d --topic-ttl a=30d`` silently used the last TTL, deleting data."""
    res = CliRunner().invoke(
        app,
        [
            "expire",
            "--cold",
            f"file://{tmp_path}",
            "--broker",
            "b",
            "--dry-run",
            "--topic-ttl",
            "a=1d",
            "--topic-ttl",
            "a=30d",
        ],
        env={"MQTIER_COLD": None, "MQTIER_STORE": None},
    )
    assert res.exit_code == 2, res.stderr
    assert "--topic-ttl 'a': given twice" in res.stderr
