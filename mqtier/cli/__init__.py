"""The ``mqtier`` command: every registration in one place."""

from __future__ import annotations

import typer

from mqtier.cli import ingest, inspect, offsets, query, read, recover

app = typer.Typer(
    name="mqtier",
    help="RocketMQ-compatible message store with tiering to any fsspec URL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("ingest")(ingest.ingest)
app.command("offsets")(offsets.offsets)
app.command("read")(read.read)
app.command("inspect")(inspect.inspect)
app.command("recover")(recover.recover)

query_app = typer.Typer(
    no_args_is_help=True, help="Look messages up by key, message id or UNIQ_KEY."
)
query_app.command("key")(query.query_key)
query_app.command("id")(query.query_id)
query_app.command("uniq")(query.query_uniq)
app.add_typer(query_app, name="query")


def main() -> None:
    app()
