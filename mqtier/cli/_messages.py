"""How ``read`` and ``query`` write messages: one listing, the --json object, a --format template."""

from __future__ import annotations

import re
import string
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import typer

from mqtier.cli._output import Column, Listing, Output, body_text, local_time
from mqtier.errors import ConfigError
from mqtier.format.message import MessageRecord

B64 = Annotated[bool, typer.Option("--b64", help="Always give bodies as body_b64 in --json.")]
Full = Annotated[
    bool,
    typer.Option(
        "--full", help="On a terminal, show whole bodies (each under its row), not elided."
    ),
]
Template = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        metavar="TEMPLATE",
        help="One line per message from a template, e.g. '{queue_offset}\\t{keys}\\t{body}' "
        "(fields: those of --json; see mqtier-read(1)).",
    ),
]

MESSAGE_COLUMNS: Sequence[Column] = (
    Column("topic"),
    Column("queue", kind="int"),
    Column("queue_offset", kind="int", title="offset"),
    Column("commitlog_offset", kind="int", in_table=False),
    Column("store_time", kind="time", title="stored"),
    Column("msg_id"),
    Column("uniq_key", in_table=False),
    Column("keys", fit="elide"),
    Column("tags", fit="elide"),
    Column("body", get=body_text, fit="elide"),
)

# The fields a template may name: every field of the --json object, bodies as text, plus
# times as local ISO 8601 and one property by name.
_FIELDS = frozenset(
    {
        "topic",
        "queue",
        "queue_offset",
        "commitlog_offset",
        "size",
        "msg_id",
        "uniq_key",
        "keys",
        "tags",
        "born_time",
        "store_time",
        "born_host",
        "store_host",
        "sysflag",
        "flag",
        "reconsume_times",
        "body",
        "body_b64",
        "born_iso",
        "store_iso",
    }
)
_SAMPLE: Mapping[str, Any] = {
    "topic": "t",
    "queue": 0,
    "queue_offset": 0,
    "commitlog_offset": 0,
    "size": 0,
    "msg_id": "",
    "uniq_key": None,
    "keys": [],
    "tags": None,
    "properties": {},
    "born_time": 0,
    "store_time": 0,
    "born_host": "",
    "store_host": "",
    "sysflag": 0,
    "flag": 0,
    "reconsume_times": 0,
    "body": "",
    "body_b64": "",
}
_PROPERTY = re.compile(r"properties\[([^\]]+)\]\Z")
_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\\\": "\\"}


class MessageTemplate:
    """A --format template: ``{field}`` and ``{field:spec}`` as in Python's str.format,
    ``{properties[NAME]}``, ``\\t`` and ``\\n``; each message ends with a newline.

    Field names are checked before anything is read, so a typo fails at once (exit 2) and a
    template can reach no attribute of any object: only the fields listed in mqtier-read(1).
    """

    def __init__(self, text: str) -> None:
        self.source = text
        self.text = re.sub(r"\\[tn\\]", lambda m: _ESCAPES[m.group()], text)
        try:
            parsed = list(string.Formatter().parse(self.text))
        except ValueError as exc:
            raise ConfigError(f"--format {text!r}: {exc}") from None
        for _literal, name, spec, _conversion in parsed:
            if name is None:
                continue
            _check_spec(text, name, spec or "")
            if name not in _FIELDS and not _PROPERTY.match(name):
                known = ", ".join(sorted(_FIELDS))
                raise ConfigError(
                    f"--format {text!r}: unknown field {{{name}}}; fields: {known}, "
                    "properties[NAME]"
                )
        self.needs_b64 = "body_b64" in self.text
        self.render(_SAMPLE)  # a spec that does not fit its field ({queue:s}) fails here, too

    def render(self, doc: Mapping[str, Any]) -> str:
        values = dict(doc)
        values["body"] = body_text(doc)
        values["keys"] = " ".join(doc.get("keys") or [])
        values["tags"] = doc.get("tags") or ""
        values["uniq_key"] = doc.get("uniq_key") or ""
        values["born_iso"] = local_time(doc["born_time"])
        values["store_iso"] = local_time(doc["store_time"])
        values["properties"] = _Properties(doc.get("properties") or {})
        try:
            line = self.text.format_map(values)
        except (ValueError, TypeError) as exc:  # a spec that does not fit the value: {topic:d}
            raise ConfigError(f"--format {self.source!r}: {exc}") from None
        return line if line.endswith("\n") else line + "\n"


_MAX_SPEC_NUMBER = 9999  # widths and precisions beyond a line's use would only exhaust memory


def _check_spec(text: str, name: str, spec: str) -> None:
    """A field's spec is a literal spec of bounded width: ``{queue_offset:>8}``.

    A spec may hold fields of its own (``{queue:{topic}}``), which str.format resolves with
    attribute and index access that the field check never sees, and a width such as
    ``{queue:>99999999999}`` makes str.format allocate that many characters per message.
    """
    if "{" in spec or "}" in spec:
        raise ConfigError(f"--format {text!r}: {{{name}:{spec}}}: a spec cannot hold fields")
    if any(int(n) > _MAX_SPEC_NUMBER for n in re.findall(r"\d+", spec)):
        raise ConfigError(
            f"--format {text!r}: {{{name}:{spec}}}: widths and precisions go up to "
            f"{_MAX_SPEC_NUMBER}"
        )


class _Properties(dict[str, str]):
    """``{properties[NAME]}`` of a message without that property renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


def write_messages(
    out: Output,
    batches: Iterable[Sequence[MessageRecord]],
    *,
    b64: bool,
    template: MessageTemplate | None = None,
) -> int:
    """Every message of ``batches`` as JSON lines, a template's lines, plain rows or a table;
    JSON, template and plain lines stream as batches come. Returns how many were written."""
    written = 0
    if template is not None:
        stream = sys.stdout
        for msgs in batches:
            for m in msgs:
                stream.write(template.render(m.to_json(b64=b64 or template.needs_b64)))
                written += 1
            stream.flush()
        return written

    def docs() -> Iterable[dict[str, Any]]:
        nonlocal written
        for msgs in batches:
            for m in msgs:
                written += 1
                yield m.to_json(b64=b64)

    out.rows(Listing(MESSAGE_COLUMNS, docs()))
    return written
