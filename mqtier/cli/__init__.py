"""The ``mqtier`` command: every registration in one place."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer

# typer 0.29 runs on its own copy of click (typer._click), so its exceptions are these, not
# those of a separately installed click.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from mqtier.cli import (
    _cold,
    clean,
    compact,
    dispatch,
    expire,
    ingest,
    inspect,
    log,
    offsets,
    query,
    read,
    recover,
)
from mqtier.cli._common import ConfigPath, report_usage_error
from mqtier.redact import redact_logs


def _no_type_names(params: list[Any]) -> list[Any]:
    """Help that names what to give (``N``, ``URL``, ``DIR``), not Python's types.

    typer shows ``<bool>`` beside every flag (--help and the completion options included),
    ``<list[str]>`` or ``<path>`` beside arguments whatever their metavar, and a range as
    ``[0<=x<=1023]``. A flag takes no value: an empty metavar shows nothing. An argument's
    metavar already names it. The ranges are checked all the same; where a limit matters to
    people (queue ids, --concurrency), the option's help says it in words.
    """
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        if isinstance(param, TyperArgument) and param.metavar is not None:
            param.display_type_rich = _nothing  # type: ignore[method-assign]
        if isinstance(param, TyperOption | TyperArgument):
            param._get_number_range_help_str = _nothing  # type: ignore[method-assign]
    return params


def _nothing(*_: Any, **__: Any) -> None:
    return None


class _Command(TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_type_names(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _no_type_names(super().get_params(ctx))


class _Mqtier(_Group):
    """The root group: option-parser errors in the CLI's one error style.

    Click and typer print a usage line and a boxed panel for a bad option, a missing option or
    a bad value; every other mqtier error is ``error: <what and where>`` (+ ``try:``) or, with
    --json, the JSON error object. Running the group with ``standalone_mode=False`` hands
    those errors here instead, in the real command and under CliRunner alike.
    """

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        try:
            code = super().main(argv, prog_name, complete_var, False, **extra)
        except NoArgsIsHelpError:
            sys.exit(2)  # the help is printed already (stdout), as before
        except UsageError as exc:
            path = exc.ctx.command_path if exc.ctx else "mqtier"
            report_usage_error(_wants_json(argv), f"{path}: {exc.format_message()}",
                               f"{path} --help")  # fmt: skip
            sys.exit(exc.exit_code)
        except ClickException as exc:  # a file option typer could not open, ...
            report_usage_error(_wants_json(argv), exc.format_message(), None)
            sys.exit(exc.exit_code)
        except typer.Abort:
            report_usage_error(_wants_json(argv), "aborted", None)
            sys.exit(1)
        # Without standalone mode, an Exit (a command's exit code, --help's 0) comes back here.
        sys.exit(code if isinstance(code, int) else 0)


def _wants_json(argv: list[str]) -> bool:
    """--json among the options (not after ``--``, where it would be a file name)."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def _version(value: bool) -> None:
    if value:
        try:
            # Imported here: importlib.metadata costs ~30 ms, every other command's start-up.
            from importlib.metadata import PackageNotFoundError, version

            number = version("mqtier")
        except PackageNotFoundError:  # run from a source tree that was never installed
            number = "unknown"
        print(f"mqtier {number}")
        raise typer.Exit(0)


app = typer.Typer(
    name="mqtier",
    cls=_Mqtier,
    help="RocketMQ-compatible message store with tiering to any fsspec URL.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Markdown reflows the docstrings' paragraphs to the terminal's width.
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("ingest", cls=_Command)(ingest.ingest)
app.command("offsets", cls=_Command)(offsets.offsets)
app.command("read", cls=_Command)(read.read)
app.command("inspect", cls=_Command)(inspect.inspect)
app.command("recover", cls=_Command)(recover.recover)
app.command("dispatch", cls=_Command)(dispatch.dispatch)
app.command("clean", cls=_Command)(clean.clean)
app.command("expire", cls=_Command)(expire.expire)
app.command("compact", cls=_Command)(compact.compact)
app.command("log", cls=_Command)(log.log)

query_app = typer.Typer(
    cls=_Group, no_args_is_help=True, help="Look messages up by key, message id or UNIQ_KEY."
)
query_app.command("key", cls=_Command)(query.query_key)
query_app.command("id", cls=_Command)(query.query_id)
query_app.command("uniq", cls=_Command)(query.query_uniq)
app.add_typer(query_app, name="query")


@app.callback()
def root(
    config: ConfigPath = None,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=_version,
            help="Print mqtier's version and exit.",
        ),
    ] = False,
) -> None:
    """RocketMQ-compatible message store with tiering to any fsspec URL."""
    _cold.config_path = config
    # Warnings go to stderr through logging's last-resort handler: no secret may ride along.
    redact_logs(logging.lastResort)


def main() -> None:
    # "mqtier" also under `python -m mqtier`: errors' `try:` lines name the installed command.
    app(prog_name="mqtier")
