"""Options and helpers of the commands that talk to the cold tier."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from mqtier.backend.metered import RequestBill
from mqtier.backend.open import RootCheck, open_cold_store
from mqtier.backend.retrying import RetryingColdStore
from mqtier.cli._common import note
from mqtier.cli._json import versioned
from mqtier.cli._waits import command_deadline, print_retry, timeout_option
from mqtier.errors import ConfigError
from mqtier.redact import redact_url, remember_secrets
from mqtier.settings import Settings, load_settings, merge_options

ColdUrl = Annotated[
    str | None,
    typer.Option(
        "--cold",
        "--to",
        metavar="URL",
        envvar="MQTIER_COLD",
        help="Cold tier root URL: file:///dir, s3://bucket/prefix, ... (or $MQTIER_COLD).",
    ),
]
StorageOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        "-o",
        metavar="KEY=VALUE",
        help="fsspec storage option key=value (repeatable; dots nest: client_kwargs.region_name=x).",
    ),
]
# Set by --endpoint-url (its callback, on every command that takes --cold); merged in open_cold.
endpoint_url: str | None = None


def _set_endpoint_url(value: str | None) -> str | None:
    global endpoint_url
    endpoint_url = value
    return value


EndpointUrl = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        metavar="URL",
        callback=_set_endpoint_url,
        help="S3-compatible endpoint (MinIO, Ceph, R2, ...): the same as "
        "-o client_kwargs.endpoint_url=URL.",
    ),
]
ColdTimeout = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        envvar="MQTIER_TIMEOUT",
        callback=timeout_option,
        help="Stop the whole command after this long (30s, 5m), between cold-tier requests "
        "(exit 14; or $MQTIER_TIMEOUT, [cold] timeout).",
    ),
]
Broker = Annotated[
    str | None,
    typer.Option(
        "--broker",
        metavar="NAME",
        help="Broker name in the cold tier (default: the store's own with --store, else the "
        "config file's [cold] broker).",
    ),
]


def _value(text: str) -> Any:
    """'true', '3', '1.5', 'null' and JSON objects become typed; anything else stays text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_storage_options(pairs: list[str] | None) -> dict[str, Any]:
    """``-o a.b=1 -o c=x`` as ``{"a": {"b": 1}, "c": "x"}``; errors never show a secret value."""
    out: dict[str, Any] = {}
    for number, pair in enumerate(pairs or [], 1):
        key, sep, value = pair.partition("=")
        *parents, leaf = key.split(".")
        if not sep or not all((*parents, leaf)):
            # Without '=' the whole text may be a pasted secret: name its place, not its text.
            raise ConfigError(
                f"--storage-option #{number} ({_shown_key(key) if sep else 'no ='}): "
                "expected NAME=VALUE (dots nest: client_kwargs.region_name=x)"
            )
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--storage-option {_shown_key(key)}: {p} is not a group")
        if isinstance(node.get(leaf), dict):
            raise ConfigError(
                f"--storage-option {_shown_key(key)}: {leaf} is a group (-o {key}.NAME=VALUE)"
            )
        node[leaf] = _value(value)
    return out


def _shown_key(key: str) -> str:
    return repr(key if len(key) <= 60 else key[:57] + "...")


def _refuse_memory(url: str) -> None:
    """memory:// lives in this process only: a CLI command would lose all it tiered at exit."""
    if any(part.strip().lower().startswith("memory:") for part in url.split("::")):
        raise ConfigError(
            f"{redact_url(url)}: memory:// is an in-process tier that vanishes when the "
            "command exits; give a directory (file:///dir) or a bucket (s3://bucket/prefix)"
        )


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
    """--broker, else the store's own name (``store_broker``), else the config file's broker.

    The store's name wins over the config file's: a file shared by several stores (or copied
    from another host) would otherwise tier this store under another's prefix. Only an
    explicit --broker renames, as when a store moved host keeps tiering under its old name;
    whether that prefix's history is this store's is checked against the store itself
    (:func:`mqtier.tier.dispatch.check_store_history`, exit 15).
    """
    if given:
        return given
    if not store_broker:
        return settings().broker
    configured = settings().broker
    if configured and configured != store_broker:
        # Said, since the config file used to win here: an operator relying on it must know.
        note(
            f"using broker {store_broker!r}, the store's own name (the config file's broker "
            f"{configured!r} is for commands without --store)"
        )
    return store_broker


def open_cold(
    url: str, options: list[str] | None, *, root: RootCheck = "existing"
) -> tuple[RetryingColdStore, RequestBill]:
    """The cold store at ``url`` with the config file's storage options under the flags'.

    Its root must exist (``root="existing"``, for commands that read the tier: a missing
    bucket or directory is exit 3, never an empty tier), or be creatable (``dispatch``).
    """
    bill = RequestBill()
    flags = _with_endpoint_url(url, parse_storage_options(options))
    merged = merge_options(settings().storage_options, flags)
    remember_secrets(url, merged)  # before anything can fail and print them
    _refuse_memory(url)
    deadline = command_deadline(settings().timeout)
    store = open_cold_store(
        url, merged, bill=bill, root=root, on_retry=print_retry, deadline=deadline
    )
    global opened_url  # one command per process: the tier it talks to
    opened_url = store.url
    return store, bill


# The URL of the cold tier this command opened (its secret-free form), for the ``try:`` line of
# a library error that can only say ``--cold URL`` (the library never sees the command line).
opened_url: str | None = None


def with_cold_url(hint: str | None) -> str | None:
    """``hint`` with its ``--cold URL`` placeholder replaced by the tier this command opened."""
    if hint is None or opened_url is None or "--cold URL" not in hint:
        return hint
    return hint.replace("--cold URL", f"--cold {shlex.quote(opened_url)}")


def _with_endpoint_url(url: str, flags: dict[str, Any]) -> dict[str, Any]:
    """--endpoint-url as the -o option it stands for (s3fs takes it in client_kwargs)."""
    if endpoint_url is None:
        return flags
    protocols = {part.split("://")[0].lower() for part in url.split("::") if "://" in part}
    if not protocols & {"s3", "s3a"}:
        raise ConfigError(
            f"--endpoint-url is for s3:// URLs (an S3-compatible store), not {redact_url(url)}"
        )
    client = flags.setdefault("client_kwargs", {})
    if not isinstance(client, dict):
        raise ConfigError("--storage-option client_kwargs: not a group, so no --endpoint-url")
    given = client.setdefault("endpoint_url", endpoint_url)
    if given != endpoint_url:
        raise ConfigError(
            "--endpoint-url and -o client_kwargs.endpoint_url disagree: give one of them"
        )
    return flags


def report_bill(bill: RequestBill, *, json_out: bool, json_lines: bool = False) -> None:
    """The request bill on stderr: one human line, or one JSON line for JSON Lines output.

    A command writing one --json document puts the bill in it instead (``doc["requests"]``);
    one writing JSON Lines (``read``) keeps stdout for messages, so the bill goes to stderr
    as ``{"version": 2, "requests": ...}``, its last line.
    """
    if not json_out:
        note(bill.summary())
    elif json_lines:
        line = versioned({"requests": bill.to_json()})
        sys.stderr.write(orjson.dumps(line).decode() + "\n")
        sys.stderr.flush()
