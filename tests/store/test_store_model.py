"""A stateful property test: the store behaves like a list per queue across appends, file rolls,
index rolls, clean reopens and simulated crashes (an ``abort`` file left behind)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mqtier import Message, Store, StoreConfig
from mqtier.format import layout as L

CONFIG = StoreConfig(
    broker_name="model",
    commitlog_file_bytes=8 * 1024,  # rolls every few dozen messages
    cq_units_per_file=8,
    index_slots=5,  # long chains, collisions on every key
    index_items=24,  # index files roll often
    max_batch_bytes=2048,
    flush_interval_ms=10,
)
TOPICS = ("alpha", "beta")


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="mqtier-model-")) / "store"
        self.store = Store.open(self.root, create=True, config=CONFIG)
        self.model: dict[tuple[str, int], list[tuple[bytes, str]]] = {}
        self.n = 0

    @rule(
        topic=st.sampled_from(TOPICS),
        queue=st.integers(0, 2),
        bodies=st.lists(st.binary(max_size=600), min_size=1, max_size=6),
    )
    def append(self, topic: str, queue: int, bodies: list[bytes]) -> None:
        msgs = []
        for body in bodies:
            self.n += 1
            msgs.append(Message(topic, body, queue_id=queue, keys=(f"k{self.n}",), tags="t"))
        results = self.store.append_batch(msgs)
        q = self.model.setdefault((topic, queue), [])
        for m, r in zip(msgs, results, strict=True):
            assert r.queue_offset == len(q)
            q.append((m.body, m.keys[0]))

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = Store.open(self.root, writable=True)
        assert self.store.recovery is not None
        assert self.store.recovery.clean_shutdown

    @rule()
    def crash_and_recover(self) -> None:
        # Everything acknowledged is synced; leaving ``abort`` and no final checkpoint flush is
        # what a kill -9 right after the last acknowledgement looks like on disk.
        self.store.wait_dispatched()
        image = self.root.with_name("image")
        shutil.rmtree(image, ignore_errors=True)
        # A *.tmp being written by the live checkpoint may vanish mid-copy; a crash would have
        # left it behind, and the open removes it either way.
        shutil.copytree(self.root, image, ignore=shutil.ignore_patterns("*.tmp"))
        self.store.close()
        shutil.rmtree(self.root)
        image.rename(self.root)
        assert (self.root / L.FILE_ABORT).exists()
        self.store = Store.open(self.root, writable=True)
        assert self.store.recovery is not None
        assert not self.store.recovery.clean_shutdown

    @precondition(lambda self: self.n > 0)
    @rule(data=st.data())
    def query_a_key(self, data: st.DataObject) -> None:
        (topic, queue), q = data.draw(st.sampled_from(sorted(self.model.items())))
        if not q:
            return
        i = data.draw(st.integers(0, len(q) - 1))
        body, key = q[i]
        self.store.wait_dispatched()
        found = self.store.query_key(topic, key)
        assert [(m.queue_id, m.queue_offset, m.body) for m in found] == [(queue, i, body)]

    @invariant()
    def every_queue_reads_back(self) -> None:
        self.store.wait_dispatched()
        for (topic, queue), q in self.model.items():
            got = self.store.read(topic, queue, 0, len(q) + 5)
            assert [(m.body, m.keys[0]) for m in got] == q
            assert [m.queue_offset for m in got] == list(range(len(q)))

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.root.parent, ignore_errors=True)


StoreMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)
TestStoreModel = StoreMachine.TestCase
