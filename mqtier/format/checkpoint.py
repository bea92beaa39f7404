"""The ``checkpoint`` file (4 KiB, first 40 bytes used) and mqtier's dispatch checkpoint."""

from __future__ import annotations

from dataclasses import dataclass

from mqtier.format import layout as L
from mqtier.format.crc import crc32


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """RocketMQ's ``StoreCheckpoint``: flush timestamps (ms) and two offsets."""

    physic_msg_timestamp: int = 0
    logics_msg_timestamp: int = 0
    index_msg_timestamp: int = 0
    master_flushed_offset: int = 0
    confirm_phy_offset: int = 0

    def to_bytes(self) -> bytes:
        head = L.CHECKPOINT.pack(
            self.physic_msg_timestamp,
            self.logics_msg_timestamp,
            self.index_msg_timestamp,
            self.master_flushed_offset,
            self.confirm_phy_offset,
        )
        return head + b"\0" * (L.CHECKPOINT_FILE_BYTES - len(head))

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Parse a checkpoint; a short file (older brokers wrote 24 bytes) is zero-padded."""
        padded = data[: L.CHECKPOINT.size].ljust(L.CHECKPOINT.size, b"\0")
        return cls(*L.CHECKPOINT.unpack(padded))

    @property
    def min_timestamp(self) -> int:
        """``getMinTimestamp``: where abnormal recovery may start, with RocketMQ's 3 s margin."""
        return max(0, min(self.physic_msg_timestamp, self.logics_msg_timestamp) - 3000)


def pack_dispatch_offset(offset: int) -> bytes:
    """mqtier's dispatch checkpoint: the commit-log offset up to which CQs and index are flushed."""
    raw = L.INT64.pack(offset)
    return L.DISPATCH_CHECKPOINT.pack(offset, crc32(raw))


def unpack_dispatch_offset(data: bytes) -> int | None:
    """The offset, or None when the file is short or its CRC fails (then recovery starts at 0)."""
    if len(data) < L.DISPATCH_CHECKPOINT.size:
        return None
    offset, crc = L.DISPATCH_CHECKPOINT.unpack_from(data)
    if crc32(L.INT64.pack(offset)) != crc or offset < 0:
        return None
    return int(offset)
