"""Every on-disk constant and fixed structure of the RocketMQ store, in one place.

Byte-level reference: ``docs/FORMAT.md`` (keep both in step). All integers are big-endian, as
Java's ``ByteBuffer`` writes them; never use native order here.
"""

from __future__ import annotations

import struct
from typing import Final

# --- commit log -------------------------------------------------------------------------------

MAGIC_V1: Final = 0xDAA320A7  # MESSAGE_MAGIC_CODE: 1-byte topic length
MAGIC_V2: Final = 0xDAA320AB  # MESSAGE_MAGIC_CODE_V2: 2-byte topic length (topics > 127 bytes)
BLANK_MAGIC: Final = 0xCBD43194  # BLANK_MAGIC_CODE: end-of-file filler; TOTALSIZE = bytes left
BLANK_MIN_BYTES: Final = 8  # END_FILE_MIN_BLANK_LENGTH: size + magic of the filler

# Record prefix up to the magic: TOTALSIZE i32 | MAGIC u32.
RECORD_SIZE_MAGIC: Final = struct.Struct(">iI")

# Record header for IPv4 born and store hosts (88 bytes, up to and including BODYLEN).
#   TOTALSIZE i32 | MAGIC u32 | BODYCRC i32 | QUEUEID i32 | FLAG i32 | QUEUEOFFSET i64 |
#   PHYSICALOFFSET i64 | SYSFLAG i32 | BORNTIMESTAMP i64 | BORNHOST ip4 + port i32 |
#   STORETIMESTAMP i64 | STOREHOST ip4 + port i32 | RECONSUMETIMES i32 | PREPAREDTXOFFSET i64 |
#   BODYLEN i32
RECORD_HEADER_V4V4: Final = struct.Struct(">iIiiiqqiq4siq4siiqi")


def record_header_struct(born_v6: bool, store_v6: bool) -> struct.Struct:
    """The header struct for the given host widths (IPv6 hosts are 16 bytes, not 4)."""
    return _HEADERS[(born_v6, store_v6)]


_HEADERS: Final = {
    (b, s): struct.Struct(f">iIiiiqqiq{16 if b else 4}siq{16 if s else 4}siiqi")
    for b in (False, True)
    for s in (False, True)
}

# Field positions that do not depend on host width.
POS_QUEUE_OFFSET: Final = 20
POS_PHYSICAL_OFFSET: Final = 28
POS_SYSFLAG: Final = 36
TOPIC_LEN_V1: Final = struct.Struct(">b")  # signed: a v1 topic is at most 127 bytes
TOPIC_LEN_V2: Final = struct.Struct(">h")
PROPS_LEN: Final = struct.Struct(">h")
INT64: Final = struct.Struct(">q")
INT32: Final = struct.Struct(">i")
UINT32: Final = struct.Struct(">I")

MAX_TOPIC_BYTES_V1: Final = 127
MAX_TOPIC_BYTES_V2: Final = 32767
# A topic names its consume-queue directory: at most NAME_MAX (255) bytes on Linux.
MAX_TOPIC_DIR_BYTES: Final = 255
MAX_PROPERTIES_BYTES: Final = 32767  # Short.MAX_VALUE
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024  # maxMessageSize

# SYSFLAG bits (MessageSysFlag).
SYSFLAG_COMPRESSED: Final = 0x1
SYSFLAG_MULTI_TAGS: Final = 0x2
SYSFLAG_TRANSACTION_MASK: Final = 0xC
SYSFLAG_TRANSACTION_PREPARED: Final = 0x4
SYSFLAG_TRANSACTION_COMMIT: Final = 0x8
SYSFLAG_TRANSACTION_ROLLBACK: Final = 0xC
SYSFLAG_BORNHOST_V6: Final = 0x10
SYSFLAG_STOREHOST_V6: Final = 0x20
# Every bit RocketMQ 5 defines: the above, NEED_UNWRAP 0x40, INNER_BATCH 0x80 and a 3-bit
# compression type at 0x700 whose values 1..3 (LZ4, ZSTD, ZLIB) exist. A record with another
# bit set was not written by a broker.
SYSFLAG_KNOWN_BITS: Final = 0x7FF
SYSFLAG_COMPRESSION_SHIFT: Final = 8
SYSFLAG_COMPRESSION_MAX: Final = 3

# Header fields no CRC covers are checked for plausibility (message.check_record_header).
# A store timestamp is the broker's clock: 2000-01-01 <= it < 2100-01-01 (UTC, ms). Fixed
# bounds, not "now": a store read on a machine whose clock is behind the broker's stays readable.
STORE_TS_MIN_MS: Final = 946_684_800_000
STORE_TS_MAX_MS: Final = 4_102_444_800_000
# A born timestamp is the producer's clock, which may be unset (0) or wrong, but not negative
# or past the same upper bound.

# Properties: name 0x01 value 0x02, repeated.
NAME_VALUE_SEP: Final = "\x01"
PROPERTY_SEP: Final = "\x02"
PROP_KEYS: Final = "KEYS"
PROP_TAGS: Final = "TAGS"
PROP_UNIQ_KEY: Final = "UNIQ_KEY"
KEY_SEPARATOR: Final = " "
# Optional whole-record CRC entry: "__CRC32#" 0x01 <10 digits, least significant first> 0x02.
PROP_CRC32: Final = "__CRC32#"
CRC32_RESERVED_LEN: Final = 20

DEFAULT_COMMITLOG_FILE_BYTES: Final = 1024 * 1024 * 1024

# --- consume queue ----------------------------------------------------------------------------

# commitLogOffset i64 | size i32 | tagsCode i64 = 20 bytes
CQ_UNIT: Final = struct.Struct(">qiq")
CQ_UNIT_BYTES: Final = 20
DEFAULT_CQ_UNITS_PER_FILE: Final = 300_000
PRE_BLANK_UNIT: Final = (0, 0x7FFFFFFF, 0)  # fills a queue's first file below its first offset
# A tags code at or below this is a ConsumeQueueExt address (Long.MIN_VALUE + extOffset).
EXT_ADDR_MAX: Final = -(2**31) - 1
LONG_MIN: Final = -(2**63)
# ConsumeQueueExt unit: size i16 | tagsCode i64 | msgStoreTime i64 | bitMapSize i16 | bitmap
CQ_EXT_UNIT_HEAD: Final = struct.Struct(">hqqh")

# --- index file -------------------------------------------------------------------------------

# beginTimestamp i64 | endTimestamp i64 | beginPhyOffset i64 | endPhyOffset i64 |
# hashSlotCount i32 | indexCount i32 = 40 bytes
INDEX_HEADER: Final = struct.Struct(">qqqqii")
INDEX_SLOT: Final = struct.Struct(">i")  # newest item number in the slot; 0 = empty
# keyHash i32 | phyOffset i64 | timeDiff i32 (s since beginTimestamp) | prevIndex i32 = 20 bytes
INDEX_ITEM: Final = struct.Struct(">iqii")
INDEX_SLOT_BYTES: Final = 4
INDEX_ITEM_BYTES: Final = 20
DEFAULT_INDEX_SLOTS: Final = 5_000_000
DEFAULT_INDEX_ITEMS: Final = 20_000_000
INDEX_MAX_RESULTS: Final = 64  # maxMsgsNumBatch caps one query

# --- checkpoint -------------------------------------------------------------------------------

# physicMsgTimestamp | logicsMsgTimestamp | indexMsgTimestamp | masterFlushedOffset |
# confirmPhyOffset, all i64 = 40 bytes, in a 4 KiB file
CHECKPOINT: Final = struct.Struct(">qqqqq")
CHECKPOINT_FILE_BYTES: Final = 4096

# --- store root names -------------------------------------------------------------------------

DIR_COMMITLOG: Final = "commitlog"
DIR_CONSUMEQUEUE: Final = "consumequeue"
DIR_CONSUMEQUEUE_EXT: Final = "consumequeue_ext"
DIR_INDEX: Final = "index"
DIR_CONFIG: Final = "config"
FILE_CHECKPOINT: Final = "checkpoint"
FILE_ABORT: Final = "abort"
FILE_LOCK: Final = "lock"
LOCK_CONTENT: Final = b"lock"
# mqtier's own files beside RocketMQ's; a broker ignores them.
FILE_STORE_CONFIG: Final = "mqtier.json"  # in config/: broker name, file sizes
FILE_TOPICS: Final = "topics.json"  # in config/; the previous version is kept as topics.json.bak
FILE_DISPATCH_CHECKPOINT: Final = "mqtier.dispatch"  # in the root: dispatched commit-log offset
# in the root: the consume queues and IndexFiles the store has derived, as of its last
# checkpoint, so an open can tell a lost one from one that never existed
FILE_DERIVED_MANIFEST: Final = "mqtier.derived"
# In the root while an ingest runs: the commit-log offset it started at (same encoding as
# mqtier.dispatch). Its records may still be rolled back, so tiering stops short of them.
FILE_INGEST_FENCE: Final = "mqtier.ingest"
# offset i64 | zlib.crc32 of the 8 offset bytes u32 (a torn write is detected, not trusted)
DISPATCH_CHECKPOINT: Final = struct.Struct(">qI")


def offset_file_name(offset: int) -> str:
    """``UtilAll.offset2FileName``: the start offset, zero-padded to 20 digits."""
    return f"{offset:020d}"


# ---- mqtier cold data objects (docs/FORMAT.md section 15) ----------------------------------------
COLD_DATA_MAGIC: Final = b"MQTDATA1"
COLD_FOOTER_MAGIC: Final = b"MQTFOOT1"
COLD_DATA_VERSION: Final = 1
# magic, version, flags, reserved, created ms, run id
COLD_HEADER: Final = struct.Struct(">8sHHIq16s")
# object offset, compressed length, uncompressed length, first queue offset, record count,
# CRC32 of the compressed frame, min store timestamp, max store timestamp
COLD_BLOCK_ENTRY: Final = struct.Struct(">QIIqIIqq")
# footer position, footer length, footer CRC32, magic
COLD_TRAILER: Final = struct.Struct(">QII8s")


# ---- mqtier cold index objects (docs/FORMAT.md section 15.5) -------------------------------------
COLD_INDEX_MAGIC: Final = b"MQTINDX1"
COLD_INDEX_END_MAGIC: Final = b"MQTIEND1"
COLD_INDEX_VERSION: Final = 1
# Hash function ids a reader knows: 1 = MurmurHash3 x64 128, seed 0, its first 64 bits unsigned
# (mmh3.hash64(data, seed=0, x64arch=True, signed=False)[0]).
COLD_INDEX_HASH_MMH3_64: Final = 1
COLD_INDEX_PAGE: Final = 4096  # items are stored in pages, each a CRC32 and 4092 bytes of items
# magic, version, hash id, item size, slot bits, page size, items, min/max store ms, created ms,
# run id, CRC32 of the bytes before it
COLD_INDEX_HEADER: Final = struct.Struct(">8sHHHBxIQqqq16sI")
# directory position, tables position, tables length, items, slot bits, hash id, item size,
# page size, CRC32 of the directory and tables, CRC32 of the footer before it, magic
COLD_INDEX_FOOTER: Final = struct.Struct(">QQIQBxHHxxIII8s")
# One item, as a numpy dtype would spell it: hash, store ms, queue offset, block position,
# block length, block CRC32, object number, queue number (big-endian, packed)
COLD_INDEX_ITEM: Final = struct.Struct(">QqqQIIII")
