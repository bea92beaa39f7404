"""Store settings, persisted in ``config/mqtier.json`` for stores mqtier creates.

A RocketMQ store has no such file: its geometry is read off its files (see ``Store.open``).
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from mqtier.errors import ConfigError
from mqtier.format import layout as L
from mqtier.format.message import validate_topic
from mqtier.store.fileio import write_atomic


def default_broker_name() -> str:
    return socket.gethostname().split(".")[0] or "broker"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """How a store lays out its files and behaves. Defaults are RocketMQ's.

    Attributes:
        broker_name: names this store in the cold tier (default: the host name).
        commitlog_file_bytes: size of each commit-log file (RocketMQ: 1 GiB).
        cq_units_per_file: 20-byte units per consume-queue file (RocketMQ: 300,000).
        index_slots, index_items: IndexFile geometry (RocketMQ: 5M slots, 20M items).
        max_message_bytes: largest body accepted (RocketMQ: 4 MiB).
        store_host: ``ip:port`` written into each record; part of every offsetMsgId.
        append_prop_crc: add the ``__CRC32#`` whole-record CRC property.
        default_queues: queues of a topic created implicitly by an append.
        max_batch_bytes: most bytes one group-commit write+sync carries.
        group_wait_us: longest the writer holds a batch open for expected writers.
        cache_bytes: memory for recently appended records (hot reads).
        flush_interval_ms: how often consume queues and index are flushed and checkpointed.
        prewrite: zero-fill a window of the commit log ahead of the appends (faster syncs).
    """

    broker_name: str = ""
    commitlog_file_bytes: int = L.DEFAULT_COMMITLOG_FILE_BYTES
    cq_units_per_file: int = L.DEFAULT_CQ_UNITS_PER_FILE
    index_slots: int = L.DEFAULT_INDEX_SLOTS
    index_items: int = L.DEFAULT_INDEX_ITEMS
    max_message_bytes: int = L.DEFAULT_MAX_MESSAGE_BYTES
    store_host: str = "127.0.0.1:10911"
    append_prop_crc: bool = False
    default_queues: int = 4
    max_batch_bytes: int = 4 << 20
    group_wait_us: int = 500
    cache_bytes: int = 64 << 20
    flush_interval_ms: int = 1000
    prewrite: bool = True

    def __post_init__(self) -> None:
        if not self.broker_name:
            object.__setattr__(self, "broker_name", default_broker_name())
        try:
            validate_topic(self.broker_name)
        except ValueError as exc:
            raise ConfigError(f"broker name: {exc}") from None
        if self.commitlog_file_bytes < 4096:
            raise ConfigError(f"commit-log file size {self.commitlog_file_bytes} is under 4096")
        if self.max_message_bytes + 64 * 1024 > self.commitlog_file_bytes:
            # Tiny files (tests, demos): a record must still fit, headers and properties too.
            object.__setattr__(self, "max_message_bytes", self.commitlog_file_bytes // 2)
        for name in ("cq_units_per_file", "index_slots", "index_items", "default_queues"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")

    def with_changes(self, **changes: Any) -> StoreConfig:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {"format_version": 1, **asdict(self)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> StoreConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in known})

    @classmethod
    def load(cls, path: Path) -> StoreConfig | None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable store settings: {exc}") from None
        return cls.from_json(doc)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, (json.dumps(self.to_json(), indent=2) + "\n").encode("utf-8"))
