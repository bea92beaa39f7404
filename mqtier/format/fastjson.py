"""RocketMQ's ``config/*.json`` files, as fastjson's pretty printer writes them.

fastjson indents with tabs and writes non-string map keys unquoted (``{0:250,1:250}``), which is
not JSON. Reading quotes those keys first; writing reproduces the printer byte for byte, so a
file mqtier rewrites stays readable by a broker and diffs cleanly against the original.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Final

# A JSON string literal (kept as is) or a bare integer map key after '{' or ','.
_TOKEN: Final = re.compile(r'"(?:[^"\\]|\\.)*"|(?<=[{,])(\s*)(-?[0-9]+)(\s*)(?=:)')


def loads(text: str) -> Any:
    """Parse fastjson output (or plain JSON). Bare numeric map keys become ``int``.

    Bare keys are quoted with a random marker so they come back as ints, while keys the file
    quoted ("123" as a topic or group name) stay strings.
    """
    marker = "\x00" + secrets.token_hex(8) + ":"
    escaped = "\\u0000" + marker[1:]

    def quote(m: re.Match[str]) -> str:
        if m.group(2) is None:
            return m.group(0)
        return f'{m.group(1)}"{escaped}{m.group(2)}"{m.group(3)}'

    def int_keys(pairs: list[tuple[str, Any]]) -> dict[Any, Any]:
        return {int(k[len(marker) :]) if k.startswith(marker) else k: v for k, v in pairs}

    return json.loads(_TOKEN.sub(quote, text), object_pairs_hook=int_keys)


def dumps(value: Any) -> str:
    """Serialise like ``JSON.toJSONString(obj, prettyFormat=true)``."""
    out: list[str] = []
    _dump(value, 0, out)
    return "".join(out)


def _dump(value: Any, level: int, out: list[str]) -> None:
    if isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            if isinstance(key, str):
                out.append("\n" + "\t" * (level + 1) + json.dumps(key, ensure_ascii=False))
            else:  # fastjson writes non-string keys bare and without a line break before them
                out.append(str(key))
            out.append(":")
            _dump(item, level + 1, out)
        out.append("\n" + "\t" * level + "}")
    elif isinstance(value, list | tuple):
        if not value:
            out.append("[]")
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            out.append("\n" + "\t" * (level + 1))
            _dump(item, level + 1, out)
        out.append("\n" + "\t" * level + "]")
    else:
        out.append(json.dumps(value, ensure_ascii=False))
