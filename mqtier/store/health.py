"""How a store was left, as an open finds it: the first thing an operator needs to know.

A read-only open of a crashed store shows what recovery would keep, and nothing on disk says
so: without this, ``mqtier read`` on a crashed broker's directory would hide a torn tail
silently. Commands print :meth:`StoreHealth.warning` on stderr; ``offsets --json`` carries the
fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from mqtier.format import layout as L
from mqtier.store.lock import is_locked_elsewhere

State = Literal["clean", "in_use", "crashed"]


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """``state``: ``clean`` (shut down cleanly), ``in_use`` (another process holds the lock: a
    running broker or writer) or ``crashed`` (an ``abort`` file and no owner).

    ``torn_at``/``torn_reason``: where the durable data ends early (a torn tail, not shown);
    ``undispatched``: durable records missing from the consume queues or the index that a
    read-only open dispatched in memory (a crashed writer's last moments, or a running writer's newest records).
    ``repaired``: a writable open recovered the store on disk.
    ``unfinished_ingest_from``: where the records of an ingest that died unfinished begin;
    recovery rolls them back (a read-only open hides them).
    ``missing_derived``: consume queues and IndexFiles the store had built that are gone (a
    read-only open; a writable one rebuilds them).
    ``damaged``: a record past the consume queues whose header fails its checks (read-only);
    the view ends before it.
    """

    state: State
    read_only: bool
    torn_at: int | None = None
    torn_reason: str | None = None
    undispatched: int = 0
    repaired: bool = False
    unfinished_ingest_from: int | None = None
    missing_derived: tuple[str, ...] = ()
    damaged: str | None = None

    @staticmethod
    def probe(root: Path) -> State:
        """The state of the store at ``root``, read without taking or changing anything."""
        if is_locked_elsewhere(root):
            return "in_use"
        return "crashed" if (root / L.FILE_ABORT).exists() else "clean"

    def warning(self, root: Path | str) -> str | None:
        """One line for an operator when what is shown is not simply the store's files."""
        if self.damaged is not None:
            return (
                f"{root}: {self.damaged}; that record and those after it are not shown, and "
                "dispatch stops before it (exit 4) until it is repaired"
            )
        if self.missing_derived:
            listed = ", ".join(self.missing_derived[:3])
            more = len(self.missing_derived) - 3
            return (
                f"{root}: {listed}{f' and {more} more' if more > 0 else ''} went missing, so "
                "some messages cannot be found; "
                f"'mqtier recover --store {root} --rebuild' derives the files again"
            )
        if self.state == "crashed" and self.read_only:
            parts = [f"{root} was not shut down cleanly (an 'abort' file is present)"]
            if self.torn_at is not None:
                parts.append(
                    f"its commit log ends in a torn tail at offset {self.torn_at:,} "
                    f"({self.torn_reason}), which is not shown"
                )
            if self.unfinished_ingest_from is not None:
                parts.append(
                    "the records of an ingest that died unfinished, from commit-log offset "
                    f"{self.unfinished_ingest_from:,}, are not shown (it acknowledged nothing)"
                )
            if self.undispatched:
                parts.append(
                    f"{self.undispatched:,} records missing from its consume queues or index "
                    "are read from the commit log"
                )
            parts.append(f"nothing was changed; 'mqtier recover --store {root}' repairs it")
            return "; ".join(parts)
        if self.state == "crashed" and self.repaired:
            where = f", cut a torn tail at offset {self.torn_at:,}" if self.torn_at else ""
            return (
                f"{root} was not shut down cleanly: recovered it{where}; "
                "'mqtier recover --dry-run' shows what recovery does"
            )
        # in_use: a running writer's last record may be half-written; that is no news.
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "torn_at": self.torn_at,
            "torn_reason": self.torn_reason,
            "undispatched": self.undispatched,
            "unfinished_ingest_from": self.unfinished_ingest_from,
            "missing_derived": list(self.missing_derived),
            "damaged": self.damaged,
        }
