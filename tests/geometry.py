"""Tiny store geometry for tests: files roll after a few dozen messages."""

from __future__ import annotations

from mqtier import StoreConfig

TINY = StoreConfig(
    broker_name="broker-t",
    commitlog_file_bytes=64 * 1024,
    cq_units_per_file=64,
    index_slots=97,
    index_items=512,
    max_batch_bytes=16 * 1024,
    flush_interval_ms=50,
)

__all__ = ["TINY"]
