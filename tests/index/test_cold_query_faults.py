"""Cold key queries under bad input and faults (issue #12, "Bad input and faults").

Real parts only: a store written by ``mqtier ingest``, tiered by ``mqtier dispatch`` to a
``file://`` tier and cleaned by ``mqtier clean`` (so the answers exist in the cold tier alone),
then damaged on disk the way a disk, an operator or another machine would. Each fault is
either reported (exit 4 naming the object and the byte position, nothing on stdout) or, when
the right answer can still be had (a damaged local cache), answered right: never a wrong or
a missing answer presented as success.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from mqtier.backend.file_store import FileColdStore
from mqtier.cli import _cold, app
from mqtier.format.coldindex import FOOTER, IndexEntry, key_hash, parse_tail
from mqtier.format.layout import UINT32
from mqtier.index.cache import ImmutableCache
from mqtier.index.query import open_cold_index, query_key
from mqtier.tier.catalog import CatalogState, load_catalog
from tests.cli.test_cli import SMALL, write_jsonl
from tests.cli.test_looking_writes_nothing import changes, snapshot
from tests.conftest import ROOT

runner = CliRunner()
BROKER = "broker-cli"  # what SMALL names the store's broker
KEY = "ORDER-42"


@dataclass(frozen=True)
class Ran:
    """A finished ``mqtier`` command: in this process (CliRunner) or a child of its own."""

    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def mq(*args: str, child: bool = False) -> Ran:
    """Run ``mqtier ARGS``. ``child=True`` runs it as its own process: library warnings go
    through logging's last-resort handler to stderr only where no handler is installed, and
    pytest installs one in this process."""
    if child:
        done = subprocess.run(
            [sys.executable, "-m", "mqtier", *args],
            capture_output=True, text=True, check=False, timeout=120,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )  # fmt: skip
        return Ran(done.returncode, done.stdout, done.stderr)
    res: Result = runner.invoke(app, list(args))
    return Ran(res.exit_code, res.stdout, res.stderr)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config file, no $MQTIER_COLD, and a cache folder of this test's own."""
    monkeypatch.delenv("MQTIER_CONFIG", raising=False)
    monkeypatch.delenv("MQTIER_COLD", raising=False)
    monkeypatch.setenv("MQTIER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_cold, "config_path", None)


@dataclass
class Tier:
    store: Path
    cold: Path
    entry: IndexEntry  # the one index object's catalog entry

    @property
    def url(self) -> str:
        return f"file://{self.cold}"

    @property
    def index_path(self) -> Path:
        return self.cold / self.entry.object

    def query(self, *args: str, child: bool = False) -> Ran:
        """``mqtier query ARGS --cold URL --broker B`` (the cold tier alone)."""
        return mq("query", *args, "--cold", self.url, "--broker", BROKER, child=child)

    def key(self, key: str = KEY, *extra: str, child: bool = False) -> Ran:
        return self.query("key", key, "--topic", "orders", *extra, child=child)

    def slot_span(self, key: str = KEY) -> tuple[int, int]:
        """The bytes of ``key``'s slot pages in the index object (what a lookup GETs)."""
        data = self.index_path.read_bytes()
        e = self.entry
        tail = parse_tail(data[e.tail_pos :], e.object, e.size, e.tail_pos, e.tail_crc)
        return tail.byte_span(*tail.slot_items(key_hash(key)))


def _build(root: Path, runs: int) -> tuple[Path, Path]:
    """A store of 3000 messages (keys ORDER-0..2999, four queues) tiered in ``runs`` runs, its
    freed commit-log files cleaned: what is left to find is in the cold tier alone."""
    store, cold = root / "store", root / "cold"
    per_run = 3000 // runs
    lines = write_jsonl(root / "all.jsonl", 3000).read_text().splitlines()
    for r in range(runs):
        src = root / f"in-{r}.jsonl"
        src.write_text("\n".join(lines[r * per_run : (r + 1) * per_run]) + "\n")
        res = mq("ingest", "--store", str(store), "--topic", "orders", "--queues", "4",
                 *SMALL, str(src))  # fmt: skip
        assert res.exit_code == 0, res.output
        res = mq("dispatch", "--store", str(store), "--to", f"file://{cold}", "--force")
        assert res.exit_code == 0, res.output
    res = mq("clean", "--store", str(store), "--cold", f"file://{cold}", "--keep", "0s")
    assert res.exit_code == 0, res.output
    assert (
        "deleted 1 commit-log file" in res.output
    )  # ORDER-42 is in a freed file: hot no longer has it
    return store, cold


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    os.environ.pop("MQTIER_CONFIG", None)
    return _build(tmp_path_factory.mktemp("tiered"), 1)


@pytest.fixture
def tier(built: tuple[Path, Path], tmp_path: Path) -> Tier:
    """A private copy of the tiered store and its cold tier (tests damage them)."""
    store, cold = tmp_path / "store", tmp_path / "cold"
    shutil.copytree(built[0], store)
    shutil.copytree(built[1], cold)
    state = load_catalog(FileColdStore(cold), BROKER)
    (entry,) = state.indexes.values()
    return Tier(store, cold, entry)


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def answered(res: Ran, key: str = KEY) -> list[dict[str, Any]]:
    """The messages of a --json answer, checked to be exactly the one message with ``key``."""
    assert res.exit_code == 0, res.output
    docs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [d["keys"] for d in docs] == [[key]], docs
    assert docs[0]["body"] == f"order {key.split('-')[1]}"
    return docs


def refused(res: Ran, obj: str, *, near: tuple[int, int] | None = None) -> int:
    """Exit 4, nothing on stdout, one error naming ``obj`` and a byte position (in ``near``)."""
    assert res.exit_code == 4, res.output
    assert res.stdout == ""
    last = res.stderr.splitlines()[-1]
    text = json.loads(last)["error"]["message"] if last.startswith("{") else last
    found = re.match(rf"(?:error: )?(?:file://\S+/)?{re.escape(obj)} @ (\d+): ", text)
    assert found, res.stderr
    pos = int(found.group(1))
    if near is not None:
        assert near[0] <= pos < near[1], (pos, near, res.stderr)
    return pos


def warm(tier: Tier) -> None:
    """One query that fills the local cache (commit record, index tail)."""
    answered(tier.key(KEY, "--json"))


# -- damaged index objects ----------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["cold cache", "warm cache", "--no-cache"])
def test_a_flipped_byte_in_the_slot_items_is_exit_4(tier: Tier, cache: str) -> None:
    if cache == "warm cache":
        warm(tier)  # a cached tail does not vouch for the items: their pages are checked
    start, stop = tier.slot_span()
    flip(tier.index_path, (start + stop) // 2)
    extra = ["--no-cache"] if cache == "--no-cache" else []
    for out in ([], ["--json"]):
        pos = refused(tier.key(KEY, *extra, *out), tier.entry.object, near=(start, stop))
        assert "CRC32" in tier.key(KEY, *extra).stderr
        assert pos == start or (pos - start) % 4096 == 0  # the page holding the byte


@pytest.mark.parametrize("region", ["directory", "tables", "footer"])
def test_a_flipped_byte_in_the_tail_is_exit_4(tier: Tier, region: str) -> None:
    e = tier.entry
    tables_at = e.tail_pos + ((1 << _slot_bits(tier)) + 1) * 4
    at = {
        "directory": e.tail_pos + 7,
        "tables": (tables_at + e.size - FOOTER.size) // 2,
        "footer": e.size - 20,
    }[region]
    flip(tier.index_path, at)
    refused(tier.key(KEY, "--no-cache"), e.object, near=(e.tail_pos, e.size))
    refused(tier.key(KEY), e.object, near=(e.tail_pos, e.size))  # an empty cache fetches it
    refused(tier.query("uniq", "7F000001", "--json"), e.object, near=(e.tail_pos, e.size))


def _slot_bits(tier: Tier) -> int:
    data = tier.index_path.read_bytes()
    e = tier.entry
    return parse_tail(data[e.tail_pos :], e.object, e.size, e.tail_pos, e.tail_crc).slot_bits


def test_a_damaged_tail_in_the_tier_is_not_needed_with_a_good_cached_copy(tier: Tier) -> None:
    """The cached tail is checked against the catalog's tail_crc on every use, so a good copy
    answers right even when the tier's copy has since rotted; the items are still checked."""
    warm(tier)
    flip(tier.index_path, tier.entry.tail_pos + 7)
    answered(tier.key(KEY, "--json"))
    refused(tier.key(KEY, "--no-cache"), tier.entry.object)


def test_an_index_object_replaced_under_its_key_is_exit_4(tier: Tier) -> None:
    """Another object under the committed key, sound on its own (both CRCs right) and of the
    same size: only the catalog's tail_crc tells, and it is checked on every tail read."""
    e = tier.entry
    data = tier.index_path.read_bytes()
    tier.index_path.write_bytes(data[: e.tail_pos] + _resealed(data[e.tail_pos :]))
    for extra in (["--no-cache"], []):
        res = tier.key(KEY, *extra)
        refused(res, e.object, near=(e.size - FOOTER.size, e.size))
        assert "replaced" in res.stderr


@pytest.mark.parametrize("cut", ["footer", "into the tail", "before the tail", "all"])
def test_a_truncated_index_object_is_exit_4(tier: Tier, cut: str) -> None:
    e = tier.entry
    keep = {
        "footer": e.size - 10,
        "into the tail": e.tail_pos + 5,
        "before the tail": e.tail_pos - 5000,
        "all": 0,
    }[cut]
    data = tier.index_path.read_bytes()
    tier.index_path.write_bytes(data[:keep])
    res = tier.key(KEY, "--no-cache")
    pos = refused(res, e.object)
    assert "truncated" in res.stderr
    assert pos == max(keep, e.tail_pos)  # where the bytes end, within the tail read


def test_a_truncated_index_object_under_a_warm_cache_is_exit_4(tier: Tier) -> None:
    warm(tier)
    start, _stop = tier.slot_span()
    data = tier.index_path.read_bytes()
    tier.index_path.write_bytes(data[: start + 100])  # the slot's pages are cut
    res = tier.key(KEY)
    assert refused(res, tier.entry.object) == start + 100
    assert "truncated" in res.stderr


def test_an_index_object_missing_while_the_catalog_names_it_is_exit_4(tier: Tier) -> None:
    tier.index_path.unlink()
    for extra in ([], ["--no-cache"]):
        res = tier.key(KEY, *extra)
        assert res.exit_code == 4 and res.stdout == "", res.output
        assert tier.entry.object in res.stderr and "lost an index object" in res.stderr
    res = tier.key(KEY, "--json")
    assert res.exit_code == 4 and res.stdout == ""
    err = json.loads(res.stderr.splitlines()[-1])["error"]
    assert err["type"] == "MissingCommittedObjectError" and err["exit_code"] == 4


def test_a_data_object_missing_while_the_catalog_names_it_is_exit_4(tier: Tier) -> None:
    (data,) = (tier.cold / BROKER / "data").rglob("*.mqd")
    data.unlink()
    res = tier.key(KEY)
    assert res.exit_code == 4 and res.stdout == "", res.output
    assert data.name in res.stderr and "lost" in res.stderr


def test_a_flipped_byte_in_a_block_found_through_the_index_is_exit_4(tier: Tier) -> None:
    res = tier.key(KEY, "--json", "--explain")
    (doc,) = answered(res)
    start, stop = doc["bytes"]
    (data,) = (tier.cold / BROKER / "data").rglob("*.mqd")
    flip(data, (start + stop) // 2)
    res = tier.key(KEY)
    assert res.exit_code == 4 and res.stdout == "", res.output
    assert f"@ {start}: block of {stop - start} bytes fails its CRC32" in res.stderr


# -- bad input ------------------------------------------------------------------------------------


def test_an_unknown_broker_is_exit_3_naming_it(tier: Tier) -> None:
    res = mq("query", "key", KEY, "--topic", "orders", "--cold", tier.url, "--broker", "nobody")
    assert res.exit_code == 3 and res.stdout == "", res.output
    assert "'nobody'" in res.stderr and tier.url in res.stderr


def test_an_unknown_topic_is_exit_3_naming_it(tier: Tier) -> None:
    res = tier.query("key", KEY, "--topic", "no-such-topic")
    assert res.exit_code == 3 and res.stdout == "", res.output
    assert "'no-such-topic'" in res.stderr
    res = tier.query("uniq", "7F00000100002A9F0000000000000001", "--topic", "no-such-topic")
    assert res.exit_code == 3 and "'no-such-topic'" in res.stderr


@pytest.mark.parametrize(
    "msg_id",
    ["ZZZ", "", "7F00000100002A9F0000000000001BA", "7F00000100002A9F0000000000001BA6A",
     "7F00000100002A9F00000000000G1BA6", "7F00000100002A9F0000000000001BA6" * 2],
)  # fmt: skip
def test_a_malformed_offset_msg_id_is_exit_2(tier: Tier, msg_id: str) -> None:
    res = tier.query("id", msg_id)
    assert res.exit_code == 2 and res.stdout == "", res.output
    assert res.stderr.startswith("error: ") and "offsetMsgId" in res.stderr
    assert "requests:" not in res.stderr  # refused before any request


@pytest.mark.parametrize("key", ["", "a\x01b", "x\x02", "k" * 40_000])
def test_a_key_no_message_can_carry_is_exit_2(tier: Tier, key: str) -> None:
    """The store refuses to write an empty key or one holding a property separator, so such
    a query is a quoting mistake: exit 2 before any request, not a costly "not found"."""
    for args in (["key", key, "--topic", "orders"], ["uniq", key]):
        res = tier.query(*args)
        assert res.exit_code == 2 and res.stdout == "", res.output
        assert "no message can carry it" in res.stderr and "requests:" not in res.stderr
    res = mq("query", "key", key, "--topic", "orders", "--store", str(tier.store))
    assert res.exit_code == 2, res.output
    assert len(res.stderr) < 600  # a huge key is cut short in the error line


def test_a_uniq_key_given_to_query_id_gets_a_try_line_for_the_same_tier(tier: Tier) -> None:
    uniq = "7F0000012CAFEAE85E8005B38A284B17"  # its "port" (0x2CAFEAE8) is no TCP port
    res = tier.query("id", uniq)
    assert res.exit_code == 3 and res.stdout == "", res.output
    assert f"try: mqtier query uniq {uniq} --cold {tier.url} --broker" in res.stderr


# -- the local cache ------------------------------------------------------------------------------


def _unwritable_cache_dir(tmp_path: Path) -> Path:
    """A cache folder mqtier cannot create: inside a read-only directory, or (as root, whom
    permissions do not stop) under a regular file, where mkdir fails for anyone."""
    if os.geteuid() == 0:
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        return blocker / "cache"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return ro / "cache"


def test_an_unwritable_cache_folder_still_answers_with_one_warning(
    tier: Tier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = _unwritable_cache_dir(tmp_path)
    monkeypatch.setenv("MQTIER_CACHE_DIR", str(cache))
    try:
        for _ in range(2):  # nothing was cached: the second run warns again, once
            res = tier.key(KEY, "--json", child=True)
            answered(res)
            lines = res.stderr.splitlines()
            warnings = [ln for ln in lines if "not writable" in ln]
            assert len(warnings) == 1, res.stderr
            assert str(cache.parent) in warnings[0] and "MQTIER_CACHE_DIR" in warnings[0]
            assert len(lines) == 2, res.stderr  # the warning and the request bill
            assert not cache.exists()
    finally:
        cache.parent.chmod(0o700) if cache.parent.is_dir() else None


def _cached_tail(tier: Tier, tmp_path: Path) -> Path:
    folder = ImmutableCache(tier.url, tmp_path / "cache").folder
    path = folder / f"{tier.entry.object}.tail"
    assert path.is_file(), sorted(p for p in folder.rglob("*"))
    return path


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "empty", "other object's"])
def test_a_damaged_cached_tail_is_refetched(tier: Tier, tmp_path: Path, damage: str) -> None:
    warm(tier)
    cached = _cached_tail(tier, tmp_path)
    good = cached.read_bytes()
    if damage == "flipped byte":
        flip(cached, len(good) // 3)
    elif damage == "truncated":
        cached.write_bytes(good[:-1])
    elif damage == "empty":
        cached.write_bytes(b"")
    else:  # a sound tail, but another object's (same size): only the catalog's CRC tells
        cached.write_bytes(_resealed(good))
    res = tier.key(KEY, "--json", "--explain", child=True)
    answered(res)
    assert "cached index tail" in res.stderr and "fetching it again" in res.stderr
    explain = json.loads(res.stderr.splitlines()[-2])["explain"]
    index_step = next(s for s in explain["steps"] if s["step"] == "index")
    assert index_step["requests"] == 2  # the tail fetched again, then the slot
    assert cached.read_bytes() == good  # and the good copy cached again
    res = tier.key(KEY, "--json", "--explain", child=True)
    assert "cached index tail" not in res.stderr


def _resealed(tail: bytes) -> bytes:
    """``tail`` with its tables' bytes changed and both its CRCs made right again: a tail that
    checks out on its own and differs from the one the catalog committed."""
    body = bytearray(tail[: -FOOTER.size])
    body[-3] ^= 0xFF
    footer = bytearray(tail[-FOOTER.size :])
    footer[40:44] = UINT32.pack(zlib.crc32(bytes(body)))
    footer[44:48] = UINT32.pack(zlib.crc32(bytes(footer[:44])))
    return bytes(body) + bytes(footer)


@pytest.fixture(scope="module")
def built_in_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cold tier of the same messages tiered in three runs (small segments to compact)."""
    return _build(tmp_path_factory.mktemp("runs"), 3)[1]


def _compact_elsewhere(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``mqtier compact`` as another machine runs it: a cache folder of its own."""
    monkeypatch.setenv("MQTIER_CACHE_DIR", str(tmp_path / "other-machine"))
    res = mq("compact", "--cold", url, "--broker", BROKER, "--json")
    assert res.exit_code == 0, res.output
    monkeypatch.setenv("MQTIER_CACHE_DIR", str(tmp_path / "cache"))


def test_a_stale_cache_after_another_machine_compacted_is_not_trusted(
    built_in_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This machine caches commit records and tails; another compacts the tier (new commit,
    objects replaced, the old ones deleted). The next query here reads the changed part of
    the catalog (LATEST, the first missing record) from the tier and answers from the new
    objects; nothing cached about the old ones is used as if it still held."""
    cold = tmp_path / "cold"
    shutil.copytree(built_in_runs, cold)
    url = f"file://{cold}"
    ask = ["query", "key", KEY, "--topic", "orders", "--cold", url, "--broker", BROKER, "--json"]
    answered(mq(*ask, "--explain"))
    before = load_catalog(FileColdStore(cold), BROKER)
    _compact_elsewhere(url, tmp_path, monkeypatch)
    after = load_catalog(FileColdStore(cold), BROKER)
    assert after.seq > before.seq, "compact did nothing: the test would prove nothing"
    gone = _data_objects(before) - _data_objects(after)
    assert gone and not any((cold / o).exists() for o in gone)
    (doc,) = answered(mq(*ask, "--explain"))
    assert doc["object"] not in gone  # read where the message is now
    uniq = mq("query", "uniq", doc["uniq_key"], "--cold", url, "--broker", BROKER, "--json")
    assert uniq.exit_code == 0 and json.loads(uniq.stdout)["keys"] == [KEY], uniq.output
    # the same through the library, with the stale cache
    index = open_cold_index(
        FileColdStore(cold), BROKER, cache=ImmutableCache(url, tmp_path / "cache")
    )
    assert index.state.seq == after.seq
    hits = query_key(topic="orders", key=KEY, index=index).hits
    assert [h.message.keys for h in hits] == [(KEY,)]
    index.close()


def _data_objects(state: CatalogState) -> set[str]:
    return {s.object for segs in state.queues.values() for s in segs}


def test_a_query_that_loaded_the_catalog_before_a_compaction_still_answers(
    built_in_runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race: this query loaded the catalog, then another machine compacted and deleted the
    objects the index items point at, before the block GET. The GET finds the object gone;
    the query reads the message through the catalog, loaded again, instead of reporting
    committed data lost (exit 4) for a tier that lost nothing. (Found in review: it did.)"""
    cold = tmp_path / "cold"
    shutil.copytree(built_in_runs, cold)
    url = f"file://{cold}"
    index = open_cold_index(FileColdStore(cold), BROKER)  # the catalog, before compaction
    _compact_elsewhere(url, tmp_path, monkeypatch)
    gone = _data_objects(index.state) - _data_objects(load_catalog(FileColdStore(cold), BROKER))
    assert gone and not any((cold / o).exists() for o in gone)
    try:
        hits = query_key(topic="orders", key=KEY, index=index).hits
        assert [(h.message.keys, h.message.body) for h in hits] == [((KEY,), b"order 42")]
        assert hits[0].object not in gone  # where the reader found it, after its reload
    finally:
        index.close()


# -- looking writes nothing -----------------------------------------------------------------------


def test_cold_queries_write_nothing_to_the_store_or_the_tier(tier: Tier) -> None:
    """Invariant 8 for the cold queries: the store's files and directories and the cold
    tier's objects are byte-identical after every query (hits, misses, --json, --explain)."""
    store_before, cold_before = snapshot(tier.store), snapshot(tier.cold)
    res = tier.key(KEY, "--json", "--explain")
    (doc,) = answered(res)
    s = ["--store", str(tier.store), "--cold", tier.url]
    commands = [
        ["query", "key", KEY, "--topic", "orders", *s],
        ["query", "key", KEY, "--topic", "orders", *s, "--json", "--explain"],
        ["query", "key", "ORDER-2999", "--topic", "orders", *s, "--json"],  # still hot too
        ["query", "key", "NOPE", "--topic", "orders", *s],
        ["query", "uniq", doc["uniq_key"], *s, "--json"],
        ["query", "uniq", doc["uniq_key"], *s, "--no-cache"],
        ["query", "id", doc["msg_id"], *s, "--json", "--explain"],
        ["query", "id", "7F00000100002A9F00000000FFFFFFFF", *s],
        ["query", "key", KEY, "--topic", "orders", "--cold", tier.url, "--broker", BROKER],
    ]
    for args in commands:
        res = mq(*args)
        assert res.exit_code in (0, 3), f"{args}: {res.output}"
        assert not changes(store_before, snapshot(tier.store)), args
        assert not changes(cold_before, snapshot(tier.cold)), args
