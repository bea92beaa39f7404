"""Tiering never copies the records of an ingest that may still roll back (invariant 6).

An ingest is all or nothing: a bad line undoes what it appended. Its earlier chunks are durable
and readable while it runs, so a dispatch running beside it must stop short of them; otherwise
the cold tier would keep messages the hot store dropped, and the next ingest's messages would
reuse their queue offsets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqtier import Message, Store
from mqtier.backend.open import open_cold_store
from mqtier.errors import InputFormatError, ReadOnlyStoreError
from mqtier.format import layout as L
from mqtier.ingest import ingest
from mqtier.inputs import Defaults
from mqtier.tier.catalog import load_catalog
from mqtier.tier.dispatch import DispatchOptions, run_dispatch
from mqtier.tier.reader import ColdReader
from tests.geometry import TINY

ROOT = Path(__file__).resolve().parents[2]


def _input(path: Path, n: int, *, bad_at_end: bool) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"topic": "orders", "queue": 0, "body": f"first-{i}"}) + "\n")
        if bad_at_end:
            fh.write("{not json\n")
    return path


def _dispatch_cli(store: Path, cold_url: str) -> dict[str, object]:
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtier",
            "dispatch",
            "--store",
            str(store),
            "--cold",
            cold_url,
            "--force",
            "--json",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    doc: dict[str, object] = json.loads(res.stdout)
    return doc


def test_dispatch_beside_a_failing_ingest_tiers_none_of_it(tmp_path: Path) -> None:
    cold_url = (tmp_path / "cold").as_uri()
    cfg = TINY.with_changes(commitlog_file_bytes=8 << 20)
    root = tmp_path / "store"
    with Store.open(root, create=True, config=cfg) as st:
        st.append_batch([Message("orders", f"old-{i}".encode(), queue_id=0) for i in range(10)])
    st = Store.open(root, writable=True)
    seen: list[dict[str, object]] = []

    def beside(_messages: int, _bytes: int) -> None:
        if not seen:  # the first chunk is durable and dispatched in the hot store
            assert st.wait_dispatched(10)
            assert (root / L.FILE_INGEST_FENCE).exists()
            seen.append(_dispatch_cli(root, cold_url))

    with pytest.raises(InputFormatError, match=r"in\.jsonl:5001"):
        ingest(
            st,
            [str(_input(tmp_path / "in.jsonl", 5000, bad_at_end=True))],
            defaults=Defaults(None, None),
            on_progress=beside,
        )
    assert seen and seen[0]["messages"] == 10  # the ten older messages, nothing of the ingest
    assert not (root / L.FILE_INGEST_FENCE).exists()
    cold = open_cold_store(cold_url)
    assert load_catalog(cold, cfg.broker_name).next_offset(("orders", 0)) == 10
    # The next ingest reuses the rolled-back offsets; hot and cold still agree.
    with Store.open(root, writable=True) as st2:
        ingest(
            st2,
            [str(_input(tmp_path / "ok.jsonl", 100, bad_at_end=False))],
            defaults=Defaults(None, None),
        )
        assert st2.wait_dispatched(10)  # dispatch tiers what the hot consume queues hold
        run_dispatch(st2, cold, DispatchOptions(force=True))
        got = ColdReader(cold, cfg.broker_name).read("orders", 0, 0, 200)
        assert [m.body for m in got] == [m.body for m in st2.read("orders", 0, 0, 200)]
        assert len(got) == 110


def test_a_fence_left_by_a_crashed_ingest_is_lifted_on_open(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True, config=TINY) as st:
        st.append_batch([Message("orders", b"kept", queue_id=0) for _ in range(5)])
        st.fence_ingest(0)  # as an ingest that was killed before it finished leaves it
    with Store.open(root) as ro:
        assert ro.unfinished_ingest_from == 0
    cold = open_cold_store((tmp_path / "cold").as_uri())
    with Store.open(root, writable=True) as st:
        assert st.unfinished_ingest_from is None
        run_dispatch(st, cold, DispatchOptions(force=True))
    assert load_catalog(cold, TINY.broker_name).next_offset(("orders", 0)) == 5


def test_an_ingest_on_a_read_only_store_leaves_no_fence(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store.open(root, create=True, config=TINY) as st:
        st.append(Message("orders", b"kept", queue_id=0))
    with Store.open(root) as ro, pytest.raises(ReadOnlyStoreError):
        ingest(
            ro,
            [str(_input(tmp_path / "in.jsonl", 10, bad_at_end=False))],
            defaults=Defaults(None, None),
        )
    assert not (root / L.FILE_INGEST_FENCE).exists()
