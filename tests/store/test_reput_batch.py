"""The batched (numpy) dispatch writes exactly the bytes of the one-by-one reference paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtier.format import layout as L
from mqtier.format.javahash import index_key_hash, java_string_hash
from mqtier.format.javahash_batch import index_key_hashes, java_hashes
from mqtier.store.consumequeue import ConsumeQueue
from mqtier.store.indexfile import IndexFile, IndexService
from mqtier.store.mapped import MappedFile
from mqtier.store.reputbatch import index_keys, put_items

# Keys mix ASCII with characters outside ASCII and outside the BMP (two UTF-16 units).
keys = st.text(alphabet=st.sampled_from("aZ09#_-. é中😀"), min_size=0, max_size=40)


@given(st.lists(keys, max_size=60))
def test_java_hashes_match_string_hashcode(strings: list[str]) -> None:
    assert java_hashes(strings).tolist() == [java_string_hash(s) for s in strings]


@given(st.lists(st.tuples(st.sampled_from(["t", "orders", "x" * 127]), keys), max_size=60))
def test_index_key_hashes_match_the_scalar_rule(pairs: list[tuple[str, str]]) -> None:
    got = index_key_hashes([f"{t}#{k}" for t, k in pairs]).tolist()
    assert got == [index_key_hash(t, k) for t, k in pairs]


def test_index_key_hash_of_integer_min_value_is_zero() -> None:
    # "polygenelubricants".hashCode() == Integer.MIN_VALUE, a known Java example.
    assert java_string_hash("polygenelubricants") == -(2**31)
    assert index_key_hashes(["polygenelubricants"]).tolist() == [0]


# One dispatch batch: per record (gap to the previous offset, seconds later, key hashes).
records = st.lists(
    st.tuples(
        st.integers(1, 500),
        st.integers(0, 3),
        st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=40,
)


def _flatten(
    batch: list[tuple[int, int, list[int]]], phy: int, ts: int
) -> tuple[list[int], list[int], list[int], int, int]:
    hashes: list[int] = []
    phys: list[int] = []
    stamps: list[int] = []
    for gap, secs, hs in batch:
        phy += gap
        ts += secs * 1000 + 7
        hashes.extend(hs)
        phys.extend([phy] * len(hs))
        stamps.extend([ts] * len(hs))
    return hashes, phys, stamps, phy, ts


@settings(max_examples=60, deadline=None)
@given(st.lists(records, min_size=1, max_size=4), st.sampled_from([1, 3, 17]), st.integers(8, 64))
def test_put_items_writes_the_bytes_of_put_one_by_one(
    tmp_path_factory: object,
    batches: list[list[tuple[int, int, list[int]]]],
    slots: int,
    items: int,
) -> None:
    base = Path(tmp_path_factory.mktemp("idx"))  # type: ignore[attr-defined]
    one = IndexFile(base / "one", slots, items, writable=True, create=True)
    many = IndexFile(base / "many", slots, items, writable=True, create=True)
    phy, ts = 1000, 1_700_000_000_000
    try:
        for batch in batches:
            hashes, phys, stamps, phy, ts = _flatten(batch, phy, ts)
            fitted = 0
            for h, p, t in zip(hashes, phys, stamps, strict=True):
                if not one.put(h, p, t):
                    break
                fitted += 1
            done = put_items(
                many,
                np.array(hashes, dtype=np.int64),
                np.array(phys, dtype=np.int64),
                np.array(stamps, dtype=np.int64),
            )
            assert done == fitted
            assert many.header == one.header
            one.flush()
            many.flush()
            assert many.mm[:] == one.mm[:]
    finally:
        one.close()
        many.close()


def test_index_keys_rolls_files_and_skips_what_is_indexed(tmp_path: Path) -> None:
    one = IndexService(tmp_path / "one", 5, 10, writable=True)
    many = IndexService(tmp_path / "many", 5, 10, writable=True)
    keys_of = [[f"k{i}", f"u{i}"] for i in range(12)]  # 24 items: three files of 9 items
    # Records 1.5 s apart: a new file's first item is timed from the previous file's end.
    phys = [1500 * (i + 1) for i in range(12)]
    for ks, p in zip(keys_of, phys, strict=True):
        one.put([index_key_hash("t", k) for k in ks], p, 1_700_000_000_000 + p)
    flat_keys = [f"t#{k}" for ks in keys_of for k in ks]
    flat_phys = [p for p, ks in zip(phys, keys_of, strict=True) for _ in ks]
    index_keys(many, flat_keys, flat_phys, [1_700_000_000_000 + p for p in flat_phys])
    # A redispatch of the same records below end_phy adds nothing (the record at end_phy is
    # indexed again, as put() does).
    index_keys(
        many, flat_keys[:-2], flat_phys[:-2], [1_700_000_000_000 + p for p in flat_phys[:-2]]
    )
    for ks, p in zip(keys_of[:-1], phys[:-1], strict=True):
        one.put([index_key_hash("t", k) for k in ks], p, 1_700_000_000_000 + p)
    assert len(many.files) == len(one.files) == 3
    for a, b in zip(one.files, many.files, strict=True):
        assert a.header == b.header
        a.flush()
        b.flush()
        assert a.mm[:] == b.mm[:]
    one.close()
    many.close()


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6), st.integers(0, 3))
def test_put_run_writes_the_bytes_of_put(
    tmp_path_factory: object, runs: list[int], start: int
) -> None:
    base = Path(tmp_path_factory.mktemp("cq"))  # type: ignore[attr-defined]
    one = ConsumeQueue(base / "one", "t", 0, 4, writable=True)
    many = ConsumeQueue(base / "many", "t", 0, 4, writable=True)
    offset, phy = start, 0
    for n in runs:
        units = []
        for _ in range(n):
            units.append((offset, phy, 50 + offset, offset * 7 - 3))
            offset += 1
            phy += 50 + offset
        for u in units:
            one.put(*u)
        many.put_run(units)
    assert many.max_offset == one.max_offset
    assert many.first_offset == one.first_offset
    assert [f.path.name for f in many.files] == [f.path.name for f in one.files]
    for a, b in zip(one.files, many.files, strict=True):
        assert a.mm[:] == b.mm[:]
    one.close()
    many.close()


def test_a_flush_syncs_the_items_before_the_header_that_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A power cut during one msync may keep any subset of its pages: the header that counts
    # new items must go in a later sync than the items, or recovery would skip their records.
    f = IndexFile(tmp_path / "i", 5, 10, writable=True, create=True)
    try:
        f.put(index_key_hash("t", "a"), 100, 1_700_000_000_000)
        f.flush()
        seen: list[int] = []  # the item count each sync finds in the mapped header
        real = MappedFile.flush

        def sync(self: MappedFile) -> None:
            if self is f.file and self.dirty:
                seen.append(L.INDEX_HEADER.unpack_from(f.mm, 0)[5])
            real(self)

        monkeypatch.setattr(MappedFile, "flush", sync)
        f.put(index_key_hash("t", "b"), 200, 1_700_000_000_001)
        f.flush()
        assert seen == [2, 3]  # the items synced under the old header, then the new header
        seen.clear()
        f.flush()
        assert seen == []  # nothing new: no sync at all
    finally:
        f.close()


def test_a_head_at_the_next_item_number_is_no_chain(tmp_path: Path) -> None:
    # A slot head equal to the item count names the item about to be written: linking to it
    # would make that item its own predecessor (a loop that hides the slot's older items).
    for batch in (False, True):
        f = IndexFile(tmp_path / f"i{batch}", 5, 10, writable=True, create=True)
        try:
            h = index_key_hash("t", "a")
            f.put(h, 100, 1_700_000_000_000)
            n = f.header.index_count  # the next item's number
            slot_pos = L.INDEX_HEADER.size + (h % 5) * L.INDEX_SLOT_BYTES
            f.mm[slot_pos : slot_pos + 4] = n.to_bytes(4, "big")  # garbage a crash left
            if batch:
                put_items(
                    f,
                    np.array([h], dtype=np.int64),
                    np.array([200], dtype=np.int64),
                    np.array([1_700_000_000_001], dtype=np.int64),
                )
            else:
                f.put(h, 200, 1_700_000_000_001)
            item = L.INDEX_ITEM.unpack_from(f.mm, f.items_at + n * L.INDEX_ITEM_BYTES)
            assert item[3] == 0, item  # prev: no chain, not itself
        finally:
            f.close()
