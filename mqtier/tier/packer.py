"""Packing queue runs into cold data objects, compressing and uploading them in parallel.

Shared by the tiering job and compaction: records go in queue run by queue run (each queue one
contiguous segment per object), an object is cut when its compressed size reaches
``object_bytes`` (or its records ``object_raw_limit``), blocks compress on one thread pool and
finished objects upload on another while the caller goes on adding.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from mqtier.backend.base import ColdStore
from mqtier.format.coldobject import (
    Block,
    CompressionMeter,
    ObjectBuilder,
    Segment,
    SourceRecord,
)

OBJECT_BYTES = 8 << 20  # target compressed bytes per data object
OBJECT_RAW_LIMIT = 32 << 20  # and at most this much raw (memory per object in flight)
BLOCK_BYTES = 256 << 10
UPLOAD_CONCURRENCY = 4


def default_compress_threads() -> int:
    # zstd and CRC32 release the GIL, so blocks compress beside the thread that adds records
    return min(8, max(2, os.cpu_count() or 2))


@dataclass(frozen=True, slots=True)
class PackOptions:
    object_bytes: int = OBJECT_BYTES
    object_raw_limit: int = OBJECT_RAW_LIMIT
    block_bytes: int = BLOCK_BYTES
    level: int = 1  # zstd level
    upload_concurrency: int = UPLOAD_CONCURRENCY
    compress_threads: int = field(default_factory=default_compress_threads)
    max_bytes_per_sec: float | None = None  # upload bandwidth cap


class _Uploader:
    """Finishes and uploads objects on a thread pool while the caller builds the next."""

    def __init__(
        self, cold: ColdStore, concurrency: int, bytes_per_sec: float | None = None
    ) -> None:
        self.cold = cold
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="mqtier-put")
        self.inflight: list[Future[list[Segment]]] = []
        self.limit = concurrency + 2  # objects held in memory: uploading, and ready to
        self.bytes_per_sec = bytes_per_sec
        self.sent = 0
        self.started = time.monotonic()
        self._pace = threading.Lock()
        self.finished: list[Future[list[Segment]]] = []  # done, in the order they were sealed
        # each uploaded segment's blocks, by (object, topic, queue, first offset)
        self.blocks: dict[tuple[str, str, int, int], list[Block]] = {}

    def submit(self, builder: ObjectBuilder) -> None:
        # Bound the objects held in memory; .result() re-raises a failed upload here, early.
        while len(self.inflight) >= self.limit:
            self.inflight[0].result()
            self.finished.append(self.inflight.pop(0))
        self.inflight.append(self.pool.submit(self._upload, builder))

    def _upload(self, builder: ObjectBuilder) -> list[Segment]:
        data = builder.finish()
        if self.bytes_per_sec:
            # Pace the starts so the average since the run began stays under the cap.
            with self._pace:
                due = self.started + self.sent / self.bytes_per_sec
                self.sent += len(data)
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self.cold.put(builder.key, data)
        for seg, blocks in zip(builder.segments, builder.blocks, strict=True):
            self.blocks[(seg.object, seg.topic, seg.queue, seg.first)] = blocks
        return builder.segments

    def drain(self) -> list[Segment]:
        """Wait for every upload; the segments of the objects in the order they were sealed."""
        done, self.finished, pending, self.inflight = self.finished, [], self.inflight, []
        return [seg for f in (*done, *pending) for seg in f.result()]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class ObjectPacker:
    """Fills objects with queue runs and uploads each one as soon as it is full."""

    def __init__(
        self,
        cold: ColdStore,
        run_id: str,
        key_for: Callable[[int], str],
        opts: PackOptions,
        *,
        verify_from: str | None = None,
        may_open: Callable[[], bool] | None = None,
    ) -> None:
        """``key_for(n)`` names the n-th object; ``may_open()`` False refuses a new object."""
        self.run_id = run_id
        self.opts = opts
        self.objects = 0  # objects opened so far
        self._key_for = key_for
        self._verify_from = verify_from
        self._may_open = may_open
        self._uploader = _Uploader(cold, opts.upload_concurrency, opts.max_bytes_per_sec)
        self._compressors = ThreadPoolExecutor(
            opts.compress_threads, thread_name_prefix="mqtier-zstd"
        )
        self._meter = CompressionMeter()
        self._current: ObjectBuilder | None = None

    @property
    def is_open(self) -> bool:
        """Whether an object is being filled (False right after one was sealed)."""
        return self._current is not None

    def add(self, topic: str, queue: int, records: Sequence[SourceRecord]) -> bool:
        """Add consecutive records of one queue; False when ``may_open`` refused a new object."""
        if self._current is None:
            if self._may_open is not None and not self._may_open():
                return False
            self.objects += 1
            self._current = ObjectBuilder(
                self._key_for(self.objects),
                bytes.fromhex(self.run_id),
                int(time.time() * 1000),
                block_bytes=self.opts.block_bytes,
                level=self.opts.level,
                pool=self._compressors,
                meter=self._meter,
                verify_from=self._verify_from,
            )
        self._current.add_segment(topic, queue, records)
        if (
            self._current.raw_bytes >= self.opts.object_raw_limit
            or self._current.stored_estimate >= self.opts.object_bytes
        ):
            self.seal()
        return True

    def seal(self) -> None:
        """Upload the object being filled, if any."""
        if self._current is not None and self._current.raw_bytes:
            self._uploader.submit(self._current)
        self._current = None

    def drain(self) -> list[Segment]:
        """Seal, wait for every upload, and return the new segments in the order they were added.

        Raises whatever failed: an upload, or a record check (CorruptionError).
        """
        self.seal()
        return self._uploader.drain()

    def blocks_of(self, seg: Segment) -> list[Block]:
        """The blocks of a segment this packer uploaded (known once :meth:`drain` returned)."""
        return self._uploader.blocks[(seg.object, seg.topic, seg.queue, seg.first)]

    def close(self) -> None:
        self._uploader.close()  # before the compressors: an upload in progress waits for blocks
        self._compressors.shutdown(wait=True, cancel_futures=True)
