"""Options and helpers of the commands that talk to the cold tier."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from mqtier.backend.metered import RequestBill
from mqtier.backend.open import open_cold_store
from mqtier.backend.retrying import RetryingColdStore
from mqtier.cli._common import emit_json, note
from mqtier.errors import ConfigError
from mqtier.settings import Settings, load_settings, merge_options

ColdUrl = Annotated[
    str | None,
    typer.Option(
        "--cold",
        "--to",
        envvar="MQTIER_COLD",
        help="Cold tier root URL: file:///dir, s3://bucket/prefix, ... (or $MQTIER_COLD).",
    ),
]
StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        "-o",
        help="fsspec storage option key=value (repeatable; dots nest: client_kwargs.region_name=x).",
    ),
]
Broker = Annotated[
    str | None,
    typer.Option(
        "--broker",
        help="Broker name in the cold tier (default: the config file's, else the store's own).",
    ),
]


def _value(text: str) -> Any:
    """'true', '3', '1.5', 'null' and JSON objects become typed; anything else stays text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--storage-option {pair!r}: expected key=value")
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise typer.BadParameter(f"--storage-option {pair!r}: {p} is not a group")
        node[leaf] = _value(value)
    return out


# Set by the root command's --config (mqtier/cli/__init__.py); None means "look it up".
config_path: Path | None = None


def settings() -> Settings:
    return load_settings(config_path)


def cold_url(given: str | None) -> str | None:
    """--cold/--to (or $MQTIER_COLD, which typer already applied), else the config file's."""
    return given or settings().cold_url


def require_cold_url(given: str | None, command: str) -> str:
    """:func:`cold_url`, or a one-line error naming the command that needs it."""
    url = cold_url(given)
    if not url:
        raise ConfigError(
            f"{command} needs the cold tier: give --cold/--to URL, set MQTIER_COLD or [cold] url "
            "in mqtier.toml"
        )
    return url


def broker_name(given: str | None, store_broker: str | None = None) -> str | None:
    """--broker, else the config file's cold.broker, else the store's own name."""
    return given or settings().broker or store_broker


def open_cold(url: str, options: list[str] | None) -> tuple[RetryingColdStore, RequestBill]:
    """The cold store at ``url`` with the config file's storage options under the flags'."""
    bill = RequestBill()
    merged = merge_options(settings().storage_options, parse_storage_options(options))
    return open_cold_store(url, merged, bill=bill), bill


def emit_with_bill(doc: dict[str, Any], bill: RequestBill) -> None:
    """A command's --json document, with its request bill under ``requests``."""
    doc["requests"] = bill.to_json()
    emit_json(doc)


def report_bill(bill: RequestBill, *, json_out: bool, json_lines: bool = False) -> None:
    """The request bill on stderr: one human line, or one JSON line for JSON Lines output.

    A command writing one --json document puts the bill in it instead (``emit_with_bill``);
    one writing JSON Lines (``read``) keeps stdout for messages, so the bill goes to stderr
    as ``{"requests": ...}``, its last line.
    """
    if not json_out:
        note(bill.summary())
    elif json_lines:
        sys.stderr.write(orjson.dumps({"requests": bill.to_json()}).decode() + "\n")
        sys.stderr.flush()
