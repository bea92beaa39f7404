"""The ``mqtier`` command: every registration in one place."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mqtier.cli import (
    _cold,
    clean,
    compact,
    dispatch,
    expire,
    ingest,
    inspect,
    offsets,
    query,
    read,
    recover,
)
from mqtier.redact import redact_logs

app = typer.Typer(
    name="mqtier",
    help="RocketMQ-compatible message store with tiering to any fsspec URL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown reflows the docstrings' paragraphs to the terminal's width.
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("ingest")(ingest.ingest)
app.command("offsets")(offsets.offsets)
app.command("read")(read.read)
app.command("inspect")(inspect.inspect)
app.command("recover")(recover.recover)
app.command("dispatch")(dispatch.dispatch)
app.command("clean")(clean.clean)
app.command("expire")(expire.expire)
app.command("compact")(compact.compact)

query_app = typer.Typer(
    no_args_is_help=True, help="Look messages up by key, message id or UNIQ_KEY."
)
query_app.command("key")(query.query_key)
query_app.command("id")(query.query_id)
query_app.command("uniq")(query.query_uniq)
app.add_typer(query_app, name="query")


@app.callback()
def root(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="MQTIER_CONFIG",
            help="Config file (default ./mqtier.toml if present; see mqtier(1)).",
        ),
    ] = None,
) -> None:
    """RocketMQ-compatible message store with tiering to any fsspec URL."""
    _cold.config_path = config
    # Warnings go to stderr through logging's last-resort handler: no secret may ride along.
    redact_logs(logging.lastResort)


def main() -> None:
    app()
