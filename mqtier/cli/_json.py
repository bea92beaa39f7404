"""The version of the ``--json`` contract (docs/cli-json.md), in one place.

Every document a command writes, and the error object, starts with ``"version"``. A change
that renames or removes a field, or changes its type, shape or meaning, bumps it (and goes in
CHANGELOG.md); adding a field does not. Version 1 is the unversioned output of mqtier 0.x
before the per-queue arrays; messages of ``read``/``query`` are objects, not documents, and
carry no version.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

JSON_VERSION = 2


def versioned(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with ``"version"`` as its first key (a reader checks it before anything else)."""
    return {"version": JSON_VERSION, **doc}
