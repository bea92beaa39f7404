"""Dump any store file (like kafka-dump-log): what kind it is, a summary, and its entries."""

from __future__ import annotations

import mmap
from datetime import datetime
from pathlib import Path
from typing import Any

from mqtier.errors import ConfigError, CorruptRecordError
from mqtier.format import fastjson
from mqtier.format import layout as L
from mqtier.format.checkpoint import Checkpoint, unpack_dispatch_offset
from mqtier.format.message import (
    END_OF_DATA,
    END_OF_FILE,
    check_record,
    check_record_header,
    decode_record,
)


def _iso(ms: int) -> str | None:
    if ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return None


def detect_kind(path: Path) -> str:
    parts = path.resolve().parts
    # A replacement a crash interrupted (``checkpoint.tmp``) is evidence of the crash: it
    # reads as the file it was to replace.
    name = path.name.removesuffix(".tmp")
    if name == L.FILE_CHECKPOINT:
        return "checkpoint"
    if name == L.FILE_DISPATCH_CHECKPOINT:
        return "dispatch_checkpoint"
    if name.endswith((".json", ".json.bak")) or name == L.FILE_DERIVED_MANIFEST:
        return "config_json"
    if name in (L.FILE_ABORT, L.FILE_LOCK):
        return name
    if len(parts) >= 2 and parts[-2] == L.DIR_COMMITLOG:
        return "commitlog"
    if len(parts) >= 4 and parts[-4] == L.DIR_CONSUMEQUEUE:
        return "consumequeue"
    if len(parts) >= 4 and parts[-4] == L.DIR_CONSUMEQUEUE_EXT:
        return "consumequeue_ext"
    if len(parts) >= 2 and parts[-2] == L.DIR_INDEX:
        return "index"
    raise ConfigError(
        f"{path}: cannot tell what kind of store file this is (expected it under commitlog/, "
        "consumequeue/<topic>/<queue>/, index/, or a checkpoint/config file)"
    )


def inspect_file(path: Path, *, limit: int = 100, verify_crc: bool = True) -> dict[str, Any]:
    """A JSON-ready description of ``path``; ``limit`` bounds the entries listed (0 = all)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    kind = detect_kind(path)
    doc: dict[str, Any] = {"file": str(path), "kind": kind, "size": path.stat().st_size}
    handler = {
        "commitlog": _commitlog,
        "consumequeue": _consumequeue,
        "consumequeue_ext": _consumequeue_ext,
        "index": _index,
        "checkpoint": _checkpoint,
        "dispatch_checkpoint": _dispatch_checkpoint,
        "config_json": _config_json,
    }.get(kind)
    if handler is None:
        doc["content"] = path.read_bytes()[:64].decode("utf-8", "replace")
    else:
        handler(path, doc, limit, verify_crc)
    return doc


def _map(path: Path) -> mmap.mmap | bytes:
    size = path.stat().st_size
    if size == 0:
        return b""
    with path.open("rb") as fh:
        return mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)


def _queue_units_into(root: Path, low: int, high: int) -> dict[int, tuple[str, int, int, int]]:
    """{commit-log offset: (topic, queue, queue offset, size)} of every consume-queue unit of
    the store at ``root`` that points into ``[low, high)``.

    Read straight from the files (no Store is opened, nothing is written). A queue's units
    ascend in commit-log offset, so only the files whose range meets ``[low, high)`` are read.
    """
    out: dict[int, tuple[str, int, int, int]] = {}
    for qdir in sorted((root / L.DIR_CONSUMEQUEUE).glob("*/*")):
        if not qdir.name.isdigit() or not qdir.is_dir():
            continue
        files = sorted((int(p.name), p) for p in qdir.iterdir() if p.name.isdigit())
        firsts = [_first_phy(p) for _, p in files]
        for i, (name, p) in enumerate(files):
            first = firsts[i]
            nxt = next((f for f in firsts[i + 1 :] if f is not None), None)
            if first is None or first >= high or (nxt is not None and nxt <= low):
                continue
            data = p.read_bytes()
            units = L.CQ_UNIT.iter_unpack(data[: len(data) // L.CQ_UNIT_BYTES * L.CQ_UNIT_BYTES])
            for j, (phy, size, tag) in enumerate(units):
                if phy < 0 or size <= 0:
                    break
                if low <= phy < high and (phy, size, tag) != L.PRE_BLANK_UNIT:
                    qoff = name // L.CQ_UNIT_BYTES + j
                    out.setdefault(phy, (qdir.parent.name, int(qdir.name), qoff, size))
    return out


def _first_phy(path: Path) -> int | None:
    """Commit-log offset of the first real unit of a consume-queue file (None: none there)."""
    with path.open("rb") as fh:
        while len(unit := fh.read(L.CQ_UNIT_BYTES)) == L.CQ_UNIT_BYTES:
            phy, size, tag = L.CQ_UNIT.unpack(unit)
            if phy < 0 or size <= 0:
                return None
            if (phy, size, tag) != L.PRE_BLANK_UNIT:
                return int(phy)
    return None


def _store_root_of(path: Path) -> Path | None:
    """The store a commit-log file belongs to, when its consume queues are beside it."""
    root = path.resolve().parent.parent
    return root if (root / L.DIR_CONSUMEQUEUE).is_dir() else None


def _commitlog(path: Path, doc: dict[str, Any], limit: int, verify_crc: bool) -> None:
    base = int(path.name) if path.name.isdigit() else 0
    buf = _map(path)
    # Header fields no CRC covers are checked against the file's name (PHYSICALOFFSET) and,
    # inside a store, against the consume-queue units that point to each record.
    expect_phy = path.name.isdigit()
    root = _store_root_of(path) if expect_phy else None
    units = _queue_units_into(root, base, base + len(buf)) if root is not None else {}
    entries: list[dict[str, Any]] = []
    pos = records = body_bytes = 0
    end_reason = "end of data"
    topics: dict[str, int] = {}
    first_ts = last_ts = 0
    error = None
    while True:
        try:
            size = check_record(buf, pos, len(buf), verify_crc=verify_crc, path=str(path))
        except CorruptRecordError as exc:
            error = {"offset": base + exc.offset, "position": exc.offset, "detail": exc.detail}
            end_reason = "corrupt record"
            break
        if size == END_OF_FILE:
            end_reason = "BLANK end-of-file record"
            doc["blank_at"] = pos
            break
        if size == END_OF_DATA:
            break
        unit = units.get(base + pos)
        try:
            check_record_header(
                buf, pos, expect_phy=base + pos if expect_phy else None,
                expect_topic=unit[0] if unit else None, expect_queue=unit[1] if unit else None,
                expect_queue_offset=unit[2] if unit else None,
                expect_size=unit[3] if unit else None, path=str(path),
            )  # fmt: skip
        except CorruptRecordError as exc:
            error = {"offset": base + pos, "position": pos, "detail": exc.detail}
            end_reason = "corrupt record"
            break
        rec = decode_record(buf, pos, verify_crc=False)
        records += 1
        body_bytes += len(rec.body)
        topics[rec.topic] = topics.get(rec.topic, 0) + 1
        first_ts = first_ts or rec.store_ts
        last_ts = rec.store_ts
        if not limit or len(entries) < limit:
            entry = rec.to_json()
            entry.pop("body", None)
            entry.pop("body_b64", None)
            entry["position"] = pos
            entry["body_size"] = len(rec.body)
            entry["record_version"] = rec.version  # "version" is the document's
            entries.append(entry)
        pos += size
    doc["summary"] = {
        "base_offset": base,
        "records": records,
        "body_bytes": body_bytes,
        "valid_bytes": pos,
        "end": end_reason,
        "topics": [{"topic": t, "records": n} for t, n in sorted(topics.items())],
        "first_store_time": _iso(first_ts),
        "last_store_time": _iso(last_ts),
        "crc_checked": verify_crc,
        "consume_queues_checked": root is not None,
    }
    if error:
        doc["error"] = error
    doc["entries"] = entries
    doc["entries_truncated"] = bool(limit) and records > len(entries)


def _consumequeue(path: Path, doc: dict[str, Any], limit: int, verify_crc: bool) -> None:
    data = path.read_bytes()
    base_unit = (int(path.name) if path.name.isdigit() else 0) // L.CQ_UNIT_BYTES
    entries: list[dict[str, Any]] = []
    valid = pre_blank = ext = 0
    for i, (phy, size, tag) in enumerate(L.CQ_UNIT.iter_unpack(data[: len(data) // 20 * 20])):
        if phy < 0 or size <= 0:
            break
        if (phy, size, tag) == L.PRE_BLANK_UNIT:
            pre_blank += 1
        else:
            valid += 1
            ext += tag <= L.EXT_ADDR_MAX
        if not limit or len(entries) < limit:
            entries.append(
                {
                    "queue_offset": base_unit + i,
                    "commitlog_offset": phy,
                    "size": size,
                    "tags_code": tag,
                }
            )
    doc["summary"] = {
        "first_queue_offset": base_unit,
        "units": valid,
        "pre_blank_units": pre_blank,
        "ext_address_units": ext,
        "capacity_units": len(data) // L.CQ_UNIT_BYTES,
    }
    doc["entries"] = entries
    doc["entries_truncated"] = bool(limit) and valid + pre_blank > len(entries)


def _consumequeue_ext(path: Path, doc: dict[str, Any], limit: int, verify_crc: bool) -> None:
    data = path.read_bytes()
    pos = 0
    entries: list[dict[str, Any]] = []
    while pos + L.CQ_EXT_UNIT_HEAD.size <= len(data):
        size, code, store_ts, _bitmap = L.CQ_EXT_UNIT_HEAD.unpack_from(data, pos)
        if size < L.CQ_EXT_UNIT_HEAD.size:
            break
        if not limit or len(entries) < limit:
            entries.append(
                {"position": pos, "size": size, "tags_code": code, "store_time": store_ts}
            )
        pos += size
    doc["summary"] = {"units_bytes": pos}
    doc["entries"] = entries


def _index(path: Path, doc: dict[str, Any], limit: int, verify_crc: bool) -> None:
    data = _map(path)
    begin_ts, end_ts, begin_phy, end_phy, slots_used, count = L.INDEX_HEADER.unpack_from(data, 0)
    doc["summary"] = {
        "begin_time": _iso(begin_ts),
        "end_time": _iso(end_ts),
        "begin_timestamp": begin_ts,
        "end_timestamp": end_ts,
        "begin_commitlog_offset": begin_phy,
        "end_commitlog_offset": end_phy,
        "slots_in_use": slots_used,
        "items": max(0, count - 1),
    }
    # The slot count is not in the header; derive it assuming RocketMQ's 1:4 slots:items ratio
    # only for listing items, which is best effort for foreign geometry.
    total = len(data) - L.INDEX_HEADER.size
    slots = total // (L.INDEX_SLOT_BYTES + 4 * L.INDEX_ITEM_BYTES)
    items_at = L.INDEX_HEADER.size + slots * L.INDEX_SLOT_BYTES
    entries = []
    for i in range(1, count if limit == 0 else min(count, limit + 1)):
        at = items_at + i * L.INDEX_ITEM_BYTES
        if at + L.INDEX_ITEM_BYTES > len(data):
            break
        h, phy, diff, prev = L.INDEX_ITEM.unpack_from(data, at)
        entries.append(
            {
                "item": i,
                "key_hash": h,
                "commitlog_offset": phy,
                "time_diff_seconds": diff,
                "prev": prev,
            }
        )
    doc["entries"] = entries


def _checkpoint(path: Path, doc: dict[str, Any], limit: int, verify_crc: bool) -> None:
    ck = Checkpoint.from_bytes(path.read_bytes())
    doc["summary"] = {
        "physic_msg_timestamp": ck.physic_msg_timestamp,
        "logics_msg_timestamp": ck.logics_msg_timestamp,
        "index_msg_timestamp": ck.index_msg_timestamp,
        "master_flushed_offset": ck.master_flushed_offset,
        "confirm_phy_offset": ck.confirm_phy_offset,
        "physic_msg_time": _iso(ck.physic_msg_timestamp),
        "min_timestamp": ck.min_timestamp,
    }


def _dispatch_checkpoint(path: Path, doc: dict[str, Any], limit: int, verify_crc: bool) -> None:
    doc["summary"] = {"dispatched_offset": unpack_dispatch_offset(path.read_bytes())}


def _config_json(path: Path, doc: dict[str, Any], limit: int, verify_crc: bool) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        doc["content"] = _stringify_keys(fastjson.loads(text)) if text.strip() else None
    except ValueError as exc:
        raise ConfigError(f"{path}: not readable as fastjson/JSON: {exc}") from None


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _stringify_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify_keys(v) for v in value]
    return value


__all__ = ["detect_kind", "inspect_file"]
