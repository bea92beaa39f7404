"""The manifest of derived files: which consume queues and IndexFiles a store has built.

A consume queue that was never written and one deleted by hand look the same on disk (no
directory), and recovery replays only from the checkpoint, so a lost queue would stay lost:
its messages unreachable, the queue "not found". The manifest, written with each checkpoint,
lists what existed then; a writable open that finds a listed file gone rebuilds the derived
files from the whole commit log, and a read-only open says so.

Files created after the last checkpoint are not listed yet, which is harmless: recovery's
replay from that checkpoint makes them again. A file mqtier itself deleted since (``clean``
between checkpoints, then a crash) is still listed: the open rebuilds without need, which
costs time, never data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mqtier.format import layout as L
from mqtier.store.commitlog import list_offset_files
from mqtier.store.fileio import write_atomic

MANIFEST_VERSION = 1


def manifest_doc(queues: Iterable[tuple[str, int]], index_files: Iterable[str]) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "queues": sorted([t, q] for t, q in queues),
        "index_files": sorted(index_files),
    }


def save_manifest(root: Path, doc: dict[str, Any]) -> None:
    write_atomic(root / L.FILE_DERIVED_MANIFEST, json.dumps(doc, indent=1).encode() + b"\n")


def missing_derived(root: Path) -> list[str]:
    """The derived files the manifest lists that are gone, as ``consumequeue/t/2`` or
    ``index/NAME``; empty without a manifest (a broker's store, or an older mqtier's)."""
    try:
        doc = json.loads((root / L.FILE_DERIVED_MANIFEST).read_bytes())
        queues = [(str(t), int(q)) for t, q in doc["queues"]]
        index_files = [str(n) for n in doc["index_files"]]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        return [L.FILE_DERIVED_MANIFEST]  # unreadable: trust nothing it would have said
    missing = []
    for topic, qid in queues:
        qdir = root / L.DIR_CONSUMEQUEUE / topic / str(qid)
        if not list_offset_files(qdir):
            missing.append(f"{L.DIR_CONSUMEQUEUE}/{topic}/{qid}")
    index_dir = root / L.DIR_INDEX
    missing.extend(f"{L.DIR_INDEX}/{n}" for n in index_files if not (index_dir / n).is_file())
    return missing
