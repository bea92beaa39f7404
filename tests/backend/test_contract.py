"""The ``ColdStore`` contract, checked the same way on every backend (file, file URL, memory, S3).

A test marked ``xfail(strict=True)`` for a backend names a bug in ``mqtier/backend`` that it
reproduces. When the bug is fixed the test passes, strict xfail turns that into a failure, and the
mark should go.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtier.backend.base import ColdStore, ObjectInfo, check_key
from mqtier.backend.file_store import FileColdStore
from mqtier.backend.fsspec_store import FsspecColdStore
from mqtier.backend.open import open_cold_store
from mqtier.errors import ColdObjectNotFoundError, ConfigError, NotFoundError
from tests.backend.conftest import S3_PREFIX

FILE_KINDS = ("file", "file-url")
MIB = 1 << 20
BIG = random.Random(5).randbytes(5 * MIB)


# -- put / get -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"", b"x", b"\x00\xff" * 1000, BIG],
    ids=["empty", "one-byte", "binary", "5MiB"],
)
def test_put_get_round_trip(cold: ColdStore, data: bytes) -> None:
    cold.put("seg/00000000000000000000.mqt", data)
    assert cold.get("seg/00000000000000000000.mqt") == data
    assert cold.size("seg/00000000000000000000.mqt") == len(data)
    assert cold.exists("seg/00000000000000000000.mqt")


def test_put_overwrites(cold: ColdStore, cold_reopen: Callable[[], ColdStore]) -> None:
    cold.put("k", b"first")
    cold.put("k", b"second, and longer")
    assert cold.get("k") == b"second, and longer"
    cold.put("k", b"3")
    assert cold.get("k") == b"3"
    assert cold.size("k") == 1
    assert cold_reopen().get("k") == b"3"  # another handle sees the latest bytes
    assert cold.list("") == [ObjectInfo("k", 1)]


def test_another_handle_sees_writes(cold: ColdStore, cold_reopen: Callable[[], ColdStore]) -> None:
    other = cold_reopen()
    cold.put("a/b", b"hello")
    assert other.get("a/b") == b"hello"
    assert other.size("a/b") == 5
    assert other.list("a/") == [ObjectInfo("a/b", 5)]


# -- ranged get ----------------------------------------------------------------------------------

DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable


RANGES: list[tuple[int, int | None]] = [
    (0, None),  # whole object
    (100, None),  # start only
    (1023, None),  # the last byte
    (0, 1),  # the first byte
    (10, 20),  # start and end
    (0, 1024),  # exactly the object
    (1000, 5000),  # end past the size
    (0, 10**9),
]


def test_ranged_get(cold: ColdStore) -> None:
    cold.put("obj", DATA)
    for start, end in RANGES:
        assert cold.get("obj", start, end) == DATA[start:end], (start, end)


def test_ranged_get_matches_slicing(cold: ColdStore) -> None:
    cold.put("obj", DATA)

    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        start = data.draw(st.integers(0, len(DATA) - 1), label="start")
        end = data.draw(st.none() | st.integers(start + 1, len(DATA) + 64), label="end")
        assert cold.get("obj", start, end) == DATA[start:end]

    check()


@pytest.mark.parametrize(
    ("key", "start", "end"),
    [
        ("obj", 10, 10),  # zero-length range inside the object
        ("obj", 0, 0),  # zero-length range at the start
        ("obj", 20, 10),  # end before start
        ("obj", 1024, 1024),  # zero-length range at the end
        ("obj", 1024, None),  # start exactly at the end
        ("obj", 2000, None),  # start past the end
        ("obj", 2000, 3000),
        ("empty", 0, None),
        ("empty", 0, 0),
        ("empty", 0, 10),  # end past the size of an empty object
    ],
)
def test_empty_ranges_read_no_bytes(cold: ColdStore, key: str, start: int, end: int | None) -> None:
    # On S3 a zero-length range used to come back as the whole object, and a range starting at
    # or past the end as OSError (HTTP 416).
    cold.put("obj", DATA)
    cold.put("empty", b"")
    assert cold.get(key, start, end) == b""


def test_ranged_get_of_missing_object_is_not_found(cold: ColdStore) -> None:
    for start, end in ((0, None), (0, 10), (5, 5), (10, 0)):
        with pytest.raises(ColdObjectNotFoundError):
            cold.get("missing", start, end)


# -- create --------------------------------------------------------------------------------------


def test_create_if_absent(cold: ColdStore) -> None:
    assert cold.create("catalog/LATEST", b"first") is True
    assert cold.create("catalog/LATEST", b"second") is False
    assert cold.get("catalog/LATEST") == b"first"
    assert cold.list("catalog/") == [ObjectInfo("catalog/LATEST", 5)]


def test_create_over_put_object_and_after_delete(cold: ColdStore) -> None:
    cold.put("k", b"put")
    assert cold.create("k", b"created") is False
    assert cold.get("k") == b"put"
    cold.delete(["k"])
    assert cold.create("k", b"created") is True
    assert cold.get("k") == b"created"


def test_create_empty_object(cold: ColdStore) -> None:
    assert cold.create("e", b"") is True
    assert cold.create("e", b"not empty") is False
    assert cold.get("e") == b""
    assert cold.size("e") == 0


def test_create_race_between_threads(cold: ColdStore, cold_reopen: Callable[[], ColdStore]) -> None:
    writers = 8
    # Each thread has its own handle, as two processes or machines would.
    handles = [cold_reopen() for _ in range(writers)]
    with ThreadPoolExecutor(writers) as pool:
        for round_ in range(3):
            key = f"catalog/commits/{round_:020d}.json"
            barrier = threading.Barrier(writers)

            def run(i: int, key: str = key, barrier: threading.Barrier = barrier) -> bool:
                barrier.wait(timeout=30)
                return handles[i].create(key, f"writer {i}".encode())

            results = list(pool.map(run, range(writers)))
            assert sum(results) == 1, results
            winner = results.index(True)
            assert cold.get(key) == f"writer {winner}".encode()


def _create_in_child(
    root: str, key: str, index: int, barrier: Any, out: Any
) -> None:  # pragma: no cover - runs in a child process
    barrier.wait()
    out.put((index, FileColdStore(root).create(key, f"process {index}".encode())))


@pytest.mark.parametrize("cold_kind", ["file"], indirect=True)
def test_create_race_between_processes(cold: ColdStore) -> None:
    assert isinstance(cold, FileColdStore)
    ctx = multiprocessing.get_context("fork")
    procs = 4
    for round_ in range(2):
        key = f"race/{round_}"
        barrier = ctx.Barrier(procs)
        out = ctx.SimpleQueue()
        children = [
            ctx.Process(target=_create_in_child, args=(str(cold.root), key, i, barrier, out))
            for i in range(procs)
        ]
        for p in children:
            p.start()
        for p in children:
            p.join(timeout=30)
            assert p.exitcode == 0
        results = dict(out.get() for _ in range(procs))
        assert sorted(results) == list(range(procs))
        winners = [i for i, created in results.items() if created]
        assert len(winners) == 1, results
        assert cold.get(key) == f"process {winners[0]}".encode()
    assert [o.key for o in cold.list("")] == ["race/0", "race/1"]


@pytest.mark.parametrize("cold_kind", ["file"], indirect=True)
@pytest.mark.parametrize("op", ["put", "create"])
def test_new_directories_are_synced_into_their_parents(
    cold: ColdStore, op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power loss must not forget the directory of an object a commit record names."""
    assert isinstance(cold, FileColdStore)
    synced: list[Path] = []
    real_sync = FileColdStore._sync_dir
    monkeypatch.setattr(
        FileColdStore, "_sync_dir", staticmethod(lambda d: (synced.append(d), real_sync(d)))
    )
    getattr(cold, op)("data/7/seg/obj", b"x")
    root = cold.root
    for d in (root, root / "data", root / "data/7", root / "data/7/seg"):
        assert d in synced, (d, synced)


# -- missing objects -----------------------------------------------------------------------------


MISSING_CALLS: dict[str, Callable[[ColdStore], object]] = {
    "get": lambda s: s.get("missing"),
    "ranged-get": lambda s: s.get("missing", 0, 10),
    "get-nested": lambda s: s.get("deeper/missing/key", 5),
    "size": lambda s: s.size("missing"),
    "size-nested": lambda s: s.size("deeper/missing/key"),
}


def test_missing_object_raises_not_found(cold: ColdStore) -> None:
    cold.put("present", b"x")
    for name, call in MISSING_CALLS.items():
        with pytest.raises(ColdObjectNotFoundError) as info:
            call(cold)
        assert isinstance(info.value, NotFoundError), name
        assert info.value.exit_code == 3, name
    assert not cold.exists("missing")
    assert cold.exists("present")


def test_key_below_an_object_is_missing(cold: ColdStore) -> None:
    # A file tier used to raise NotADirectoryError here.
    cold.put("obj", b"x")
    assert not cold.exists("obj/x")
    with pytest.raises(ColdObjectNotFoundError):
        cold.get("obj/x")
    with pytest.raises(ColdObjectNotFoundError):
        cold.size("obj/x")
    cold.delete(["obj/x"])
    assert cold.get("obj") == b"x"


def test_a_prefix_of_other_keys_is_not_an_object(cold: ColdStore) -> None:
    # A file tier used to answer with the directory, an S3 tier with its pseudo-directory.
    cold.put("a/b", b"x")
    assert not cold.exists("a")
    for call in (
        lambda: cold.get("a"),
        lambda: cold.get("a", 0, 1),
        lambda: cold.get("a", 1, 1),
        lambda: cold.size("a"),
    ):
        with pytest.raises(ColdObjectNotFoundError):
            call()
    cold.delete(["a"])
    assert cold.list("") == [ObjectInfo("a/b", 1)]


# -- list ----------------------------------------------------------------------------------------

# No key is also a "directory" of another key (a file tier cannot hold both). The mix of '-', '.',
# '/' and '0' right after a shared stem checks the order is by string, not by directory walk.
OBJECTS = {
    "alpha": b"1",
    "alpha-beta": b"22",
    "alphabet/x": b"333",
    "d-e": b"4444",
    "d.e": b"",
    "d/x": b"55555",
    "d0": b"6",
    "data/2024/01/seg-000": b"77",
    "data/2024/01/seg-001": b"888",
    "data/2024/02/seg-000": b"9999",
    "data/2024-x": b"a",
    "data0": b"bb",
    "meta/LATEST": b"ccc",
    "meta/commit/0001.json": b"dddd",
    "meta/commit/0002.json": b"eeeee",
}
UNKNOWN_PREFIXES = [
    "nope",
    "nope/",
    "data/2025/",
    "data/2024/03",
    "meta/commit/0003",
    "data/2024/01/seg-000x",
    "alpha/",
    "d/x/",
    "zz",
]


def _model_list(prefix: str) -> list[ObjectInfo]:
    return [ObjectInfo(k, len(v)) for k, v in sorted(OBJECTS.items()) if k.startswith(prefix)]


def _interesting_prefixes() -> list[str]:
    """Prefixes of the keys ending mid-name, at '/' and at whole keys: of those that name the
    same directory and select the same objects, only the shortest and the longest."""
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for prefix in sorted({k[:n] for k in OBJECTS for n in range(1, len(k) + 1)}):
        selected = tuple(o.key for o in _model_list(prefix))
        groups.setdefault((prefix.rpartition("/")[0], selected), []).append(prefix)
    return sorted({p for group in groups.values() for p in (group[0], group[-1])})


def test_list_prefixes(cold: ColdStore) -> None:
    for key, data in OBJECTS.items():
        cold.put(key, data)
    everything = cold.list("")
    assert everything == _model_list("")
    assert [o.key for o in everything] == sorted(OBJECTS)
    assert all(type(o) is ObjectInfo for o in everything)
    for prefix in _interesting_prefixes():
        assert cold.list(prefix) == _model_list(prefix), prefix
    for prefix in UNKNOWN_PREFIXES:
        assert cold.list(prefix) == [], prefix


def test_list_spot_checks(cold: ColdStore) -> None:
    for key, data in OBJECTS.items():
        cold.put(key, data)
    assert [o.key for o in cold.list("d")] == [
        "d-e",
        "d.e",
        "d/x",
        "d0",
        "data/2024-x",
        "data/2024/01/seg-000",
        "data/2024/01/seg-001",
        "data/2024/02/seg-000",
        "data0",
    ]
    assert cold.list("data/2024/") == [
        ObjectInfo("data/2024/01/seg-000", 2),
        ObjectInfo("data/2024/01/seg-001", 3),
        ObjectInfo("data/2024/02/seg-000", 4),
    ]
    assert [o.key for o in cold.list("data/2024/01/seg-0")] == [
        "data/2024/01/seg-000",
        "data/2024/01/seg-001",
    ]
    assert cold.list("meta/LATEST") == [ObjectInfo("meta/LATEST", 3)]
    assert cold.list("d.e") == [ObjectInfo("d.e", 0)]


def test_list_of_empty_store(cold: ColdStore) -> None:
    assert cold.list("") == []
    assert cold.list("anything/") == []


def test_list_sees_deletes_and_other_writers(
    cold: ColdStore, cold_reopen: Callable[[], ColdStore]
) -> None:
    other = cold_reopen()
    cold.put("p/a", b"1")
    assert cold.list("p/") == [ObjectInfo("p/a", 1)]
    other.put("p/b", b"22")
    assert cold.list("p/") == [ObjectInfo("p/a", 1), ObjectInfo("p/b", 2)]
    other.delete(["p/a"])
    assert cold.list("p/") == [ObjectInfo("p/b", 2)]


def test_size_and_exists_see_other_writers_after_a_list(
    cold: ColdStore, cold_reopen: Callable[[], ColdStore]
) -> None:
    # S3 used to answer size()/exists() from the listing cache that list() filled.
    other = cold_reopen()
    cold.put("d/x", b"1")
    assert cold.list("d/") == [ObjectInfo("d/x", 1)]
    other.put("d/y", b"22")
    other.delete(["d/x"])
    assert cold.exists("d/y")
    assert cold.size("d/y") == 2
    assert cold.get("d/y", 1, 1) == b""
    assert not cold.exists("d/x")


def test_list_stays_inside_the_root(cold: ColdStore, tmp_path: Path) -> None:
    # A file tier used to walk the root's parent for list("../").
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not a cold object")
    cold.put("inside", b"x")
    for prefix in ("../", "../o", "a/../../"):
        try:
            found = cold.list(prefix)
        except ConfigError:
            continue
        assert found == [], prefix


# -- delete --------------------------------------------------------------------------------------


def test_delete_present_and_missing(cold: ColdStore) -> None:
    for key in ("a", "b/c", "b/d", "e"):
        cold.put(key, b"x")
    cold.delete(["missing", "a", "b/c", "b/missing", "never/there"])
    assert [o.key for o in cold.list("")] == ["b/d", "e"]
    cold.delete(["missing-only", "b/nope"])
    cold.delete([])
    cold.delete(iter(["e"]))  # any iterable
    assert [o.key for o in cold.list("")] == ["b/d"]
    with pytest.raises(ColdObjectNotFoundError):
        cold.get("a")
    cold.delete(["b/d"])
    assert cold.list("") == []


# -- keys ----------------------------------------------------------------------------------------

BAD_KEYS = ["../x", "/abs", "a//b", "", "a/", "a/./b", "a/../../x", "..", ".", "nul\x00byte"]


def _stored_anywhere(cold: ColdStore, cold_kind: str, request: pytest.FixtureRequest) -> set[str]:
    """Every object the backend's storage holds, also outside the store's root."""
    found = {o.key for o in cold.list("")}
    if cold_kind in FILE_KINDS:
        tmp: Path = request.getfixturevalue("tmp_path")
        found |= {str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()}
    elif cold_kind == "s3":
        client = request.getfixturevalue("s3_client")
        bucket = request.getfixturevalue("s3_bucket")
        found |= {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    return found


def test_invalid_keys_are_refused(
    cold: ColdStore, cold_kind: str, request: pytest.FixtureRequest
) -> None:
    for key in BAD_KEYS:
        with pytest.raises(ConfigError):
            check_key(key)
        with pytest.raises(ConfigError, match="invalid cold object key"):
            cold.put(key, b"data")
        with pytest.raises(ConfigError, match="invalid cold object key"):
            cold.create(key, b"data")
    assert _stored_anywhere(cold, cold_kind, request) == set()


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", ""])
def test_invalid_keys_are_refused_by_reads_and_deletes(cold: ColdStore, key: str) -> None:
    for call in (lambda: cold.get(key), lambda: cold.size(key), lambda: cold.delete([key])):
        with pytest.raises(ConfigError):
            call()


GOOD_KEYS = ["a", "a.b", ".hidden", "x/y/z", "a-b_c~d", "é/中", "sp ace", "..a", "a.."]


def test_valid_keys_are_accepted(cold: ColdStore) -> None:
    for key in GOOD_KEYS:
        assert check_key(key) == key
        cold.put(key, key.encode())
        assert cold.get(key) == key.encode()
    assert cold.list("") == [ObjectInfo(k, len(k.encode())) for k in sorted(GOOD_KEYS)]


# -- atomic create and backend specifics ---------------------------------------------------------


def test_atomic_create(cold: ColdStore) -> None:
    assert cold.atomic_create is True


def test_fsspec_store_without_server_side_create_is_not_atomic() -> None:
    name = f"mqtier-test-{uuid.uuid4().hex}"
    store = FsspecColdStore(f"memory://{name}")  # writes nothing
    assert store.protocol == "memory"
    assert store.atomic_create is False


def _tmp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(".mqtier-tmp")]


@pytest.mark.parametrize("cold_kind", FILE_KINDS, indirect=True)
def test_file_store_leaves_no_temp_files(cold: ColdStore) -> None:
    assert isinstance(cold, FileColdStore)
    cold.put("a/b", b"1")
    cold.put("a/b", b"2")
    assert cold.create("a/b", b"3") is False
    assert cold.create("a/c", b"4") is True
    assert _tmp_files(cold.root) == []
    # A writer that died mid-put leaves its temporary file: it is never listed as an object.
    (cold.root / "a" / f".d.{uuid.uuid4().hex}.mqtier-tmp").write_bytes(b"half")
    assert cold.list("") == [ObjectInfo("a/b", 1), ObjectInfo("a/c", 1)]
    assert cold.list("a/.") == []


@pytest.mark.parametrize("cold_kind", ["file"], indirect=True)
def test_file_store_list_never_shows_temp_files_during_writes(cold: ColdStore) -> None:
    assert isinstance(cold, FileColdStore)
    stop = threading.Event()

    def write() -> int:
        i = 0
        while not stop.is_set():
            cold.put("seg/hot", os.urandom(64))
            cold.create(f"seg/c{i % 5}", b"c")
            i += 1
        return i

    with ThreadPoolExecutor(1) as pool:
        writer = pool.submit(write)
        try:
            for _ in range(200):
                keys = [o.key for o in cold.list("seg/")]
                assert not [k for k in keys if "mqtier-tmp" in k], keys
        finally:
            stop.set()
        assert writer.result() > 0  # re-raises what the writer hit
    assert _tmp_files(cold.root) == []


@pytest.mark.parametrize("cold_kind", ["s3"], indirect=True)
def test_s3_keys_live_under_the_url_prefix(
    cold: ColdStore, s3_client: Any, s3_bucket: str, s3_options: dict[str, Any]
) -> None:
    assert cold.url == f"s3://{s3_bucket}/{S3_PREFIX}"
    cold.put("a/b", b"x")
    assert cold.create("c", b"yy") is True
    keys = {o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {f"{S3_PREFIX}/a/b", f"{S3_PREFIX}/c"}
    # Neighbours of the prefix in the same bucket are not part of the tier.
    for other in ("x", f"{S3_PREFIX}x", f"{S3_PREFIX}2/a/b", f"{S3_PREFIX}-old/c"):
        s3_client.put_object(Bucket=s3_bucket, Key=other, Body=b"zzz")
    assert cold.list("") == [ObjectInfo("a/b", 1), ObjectInfo("c", 2)]
    assert cold.list("a") == [ObjectInfo("a/b", 1)]
    # The same bucket opened at its root sees the prefix as part of the keys.
    whole = open_cold_store(f"s3://{s3_bucket}", s3_options)
    try:
        assert [o.key for o in whole.list(f"{S3_PREFIX}/")] == [
            f"{S3_PREFIX}/a/b",
            f"{S3_PREFIX}/c",
        ]
        assert whole.atomic_create is True
    finally:
        whole.close()


def test_incomplete_writes_are_listed_apart_and_deletable(cold: ColdStore, cold_kind: str) -> None:
    cold.put("data/1/a", b"1")
    if cold_kind not in FILE_KINDS:
        assert cold.list_incomplete("") == []  # nothing half-written survives a put here
        return
    assert isinstance(cold, FileColdStore)
    half = cold.root / "data" / "1" / f".b.{uuid.uuid4().hex}.mqtier-tmp"
    half.write_bytes(b"half")
    key = half.relative_to(cold.root).as_posix()
    assert cold.list_incomplete("data/") == [key]
    assert cold.list_incomplete("data/1/b") == [key]  # matched by the key it was writing
    assert cold.list_incomplete("data/1/a") == []
    assert cold.list_incomplete("other/") == []
    assert cold.list("") == [ObjectInfo("data/1/a", 1)]
    cold.delete([key])
    assert not half.exists()
    assert cold.get("data/1/a") == b"1"
