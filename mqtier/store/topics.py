"""``config/topics.json``: the topic table a broker reads, kept in fastjson style."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

from mqtier.errors import ConfigError
from mqtier.format import fastjson
from mqtier.format import layout as L
from mqtier.store.fileio import write_atomic

# Most queues mqtier gives a topic (queue ids 0..1023). RocketMQ keeps the counts as Java ints
# and enforces no limit of its own (its defaults are 4 and 8 queues); each queue is a directory
# of consume-queue files and a broker thread's share of work, so counts in the thousands are a
# typo or an attack, and a count past 2**31-1 overflows every broker that reads topics.json.
MAX_QUEUES: Final = 1024


class TopicTable:
    """Queue counts per topic. Persisted like ``ConfigManager``: keep ``.bak``, write, sync."""

    def __init__(self, config_dir: Path) -> None:
        self.path = config_dir / L.FILE_TOPICS
        self.doc: dict[Any, Any] = {}
        for candidate in (self.path, self.path.with_name(L.FILE_TOPICS + ".bak")):
            try:
                text = candidate.read_text(encoding="utf-8")
            except OSError:
                continue
            if text.strip():
                try:
                    self.doc = fastjson.loads(text)
                    break
                except ValueError:
                    continue
        self.doc.setdefault("topicConfigTable", {})

    @property
    def table(self) -> dict[str, dict[str, Any]]:
        t: dict[str, dict[str, Any]] = self.doc["topicConfigTable"]
        return t

    def queues(self, topic: str) -> int | None:
        cfg = self.table.get(topic)
        return int(cfg.get("writeQueueNums", 0)) or None if cfg else None

    def ensure(self, topic: str, queues: int) -> bool:
        """Add ``topic`` with ``queues`` queues, or widen it; True when the table changed.

        Raises:
            ConfigError: ``queues`` is not between 1 and :data:`MAX_QUEUES`.
        """
        cfg = self.table.get(topic)
        if cfg is not None and int(cfg.get("writeQueueNums", 0)) >= queues:
            return False  # a broker's wider topic stays as it is, whatever its count
        if not 1 <= queues <= MAX_QUEUES:
            raise ConfigError(
                f"topic {topic!r}: {queues} queues is out of range (1 to {MAX_QUEUES})"
            )
        if cfg is not None:
            # Widen only: a broker's perm, order, attributes and flags stay as they were.
            cfg["readQueueNums"] = max(int(cfg.get("readQueueNums", 0)), queues)
            cfg["writeQueueNums"] = queues
            self._bump_version()
            return True
        self.table[topic] = {
            "order": False,
            "perm": 6,
            "readQueueNums": queues,
            "topicFilterType": "SINGLE_TAG",
            "topicName": topic,
            "topicSysFlag": 0,
            "writeQueueNums": queues,
        }
        self._bump_version()
        return True

    def _bump_version(self) -> None:
        dv = self.doc.setdefault("dataVersion", {"counter": 0, "timestamp": 0})
        dv["counter"] = int(dv.get("counter", 0)) + 1
        dv["timestamp"] = int(time.time() * 1000)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            write_atomic(self.path.with_name(L.FILE_TOPICS + ".bak"), self.path.read_bytes())
        ordered = {k: self.doc[k] for k in sorted(self.doc)}  # bean properties: alphabetical
        write_atomic(self.path, fastjson.dumps(ordered).encode("utf-8"))
