"""What every part of a :class:`~mqtier.store.store.Store` shares: its files, queues and
settings, as the open leaves them. The parts (opening and appending in ``store.py``, the
read-only tail in ``tailview.py``, reads and queries in ``reads.py``) are mixins over it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mqtier.errors import CorruptRecordError
from mqtier.format import layout as L
from mqtier.format.checkpoint import unpack_dispatch_offset
from mqtier.format.message import parse_host, validate_topic
from mqtier.store.cache import RecordCache
from mqtier.store.config import StoreConfig
from mqtier.store.consumequeue import ConsumeQueue, ConsumeQueueExt
from mqtier.store.health import StoreHealth

if TYPE_CHECKING:
    from mqtier.store.commitlog import CommitLog
    from mqtier.store.framing import FramedBatch, Framer
    from mqtier.store.groupcommit import GroupCommitter
    from mqtier.store.indexfile import IndexService
    from mqtier.store.lock import StoreLock
    from mqtier.store.rebuild import RebuildReport
    from mqtier.store.recovery import RecoveryReport
    from mqtier.store.reput import Reput
    from mqtier.store.store import Placed
    from mqtier.store.topics import TopicTable


class StoreState:
    """The state of one open store (see :class:`~mqtier.store.store.Store`)."""

    def __init__(self, root: Path, config: StoreConfig, *, read_only: bool) -> None:
        self.root = root
        self.config = config
        self.read_only = read_only
        self._lock: StoreLock | None = None
        self._writer: GroupCommitter[FramedBatch, Placed] | None = None
        self._reput: Reput | None = None
        self._cqs: dict[tuple[str, int], ConsumeQueue] = {}
        self._exts: dict[tuple[str, int], ConsumeQueueExt] = {}
        self._queue_offsets: dict[tuple[str, int], int] = {}
        self._framer: Framer | None = None  # writable: validates and frames appends
        self._memory_keys: dict[str, list[int]] = {}  # read-only: index keys of the tail
        self.cache = RecordCache(config.cache_bytes)
        self.store_host = parse_host(config.store_host)
        self.recovery: RecoveryReport | None = None
        self.rebuild_report: RebuildReport | None = None
        self._manifest_saved: dict[str, Any] | None = None  # as last written (mqtier.derived)
        self._health = StoreHealth("clean", read_only=read_only)
        # Read-only: the first record past the consume queues whose header failed its checks
        # (the read-only view ends before it; tiering stops there with exit 4)
        self.tail_damage: CorruptRecordError | None = None
        self._queues_on_disk = False  # whether any consume queue existed when opened
        self._lost: set[tuple[str, int]] = set()  # queues the manifest says went missing
        self._closed = False
        # Read-only: the ingest fences seen while the view was taken (see refresh)
        self._view_fences: set[int | None] = set()
        self.commitlog: CommitLog
        self.index: IndexService
        self.topics: TopicTable

    def _queue_dir(self, topic: str, qid: int) -> Path:
        return self.root / L.DIR_CONSUMEQUEUE / topic / str(qid)

    def _read_only_queue(self, topic: str, qid: int) -> ConsumeQueue:
        return ConsumeQueue(
            self._queue_dir(topic, qid),
            topic,
            qid,
            self.config.cq_units_per_file,
            writable=False,
        )

    @property
    def unfinished_ingest_from(self) -> int | None:
        """Where the records of an ingest that may still roll back begin, if one runs."""
        try:
            return unpack_dispatch_offset((self.root / L.FILE_INGEST_FENCE).read_bytes())
        except FileNotFoundError:
            return None


def queue_dir_name(topic: str) -> bool:
    """Whether ``topic`` (from a record's header) can name a consume-queue directory."""
    try:
        validate_topic(topic, allow_v2=True)
    except ValueError:
        return False
    return True
