"""The commit-log record: encode, check, decode, properties, message ids, topic names."""

from __future__ import annotations

import ipaddress
import mmap
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqtier.errors import (
    CorruptRecordError,
    InvalidTopicError,
    MessageTooLargeError,
    PropertiesTooLongError,
)
from mqtier.format import layout as L
from mqtier.format.message import (
    END_OF_DATA,
    END_OF_FILE,
    Message,
    MessageRecord,
    body_crc,
    check_max_size,
    check_record,
    check_record_header,
    crc32_property_digits,
    decode_checked_record,
    decode_properties,
    decode_record,
    decode_sound_record,
    dispatch_fields,
    encode_properties,
    encode_record,
    format_host,
    header_plausible,
    make_msg_id,
    parse_host,
    parse_msg_id,
    record_size,
    validate_topic,
)

I32 = st.integers(-(2**31), 2**31 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
U63 = st.integers(0, 2**63 - 1)

# Property names and values: anything but the two separators (and NUL, to keep cuts honest).
PROP_CHARS = st.characters(codec="utf-8", exclude_characters="\x00\x01\x02")
prop_names = st.text(PROP_CHARS, min_size=1, max_size=12).filter(lambda s: s != L.PROP_CRC32)
prop_values = st.text(PROP_CHARS, max_size=24)
props_st = st.dictionaries(prop_names, prop_values, max_size=6)

# v1 topics (mostly short) and topics that cross the 127-byte limit into v2.
topic_st = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\x00/\\:"), min_size=1, max_size=30),
    st.text(alphabet="abcXYZ_-\u00e9", min_size=100, max_size=250),
).map(lambda t: t.encode("utf-8"))

ip_st = st.one_of(st.binary(min_size=4, max_size=4), st.binary(min_size=16, max_size=16))
host_st = st.tuples(ip_st, st.integers(0, 65535))
# Callers leave the v6 bits to encode_record, which derives them from the IP length.
sysflag_st = st.integers(0, 0x7FF).map(
    lambda f: f & ~(L.SYSFLAG_BORNHOST_V6 | L.SYSFLAG_STOREHOST_V6)
)

IP4 = b"\x7f\x00\x00\x01"
IP6 = ipaddress.IPv6Address("2001:db8::1").packed


BOOLS = st.booleans()
BODIES = st.binary(max_size=300)


@st.composite
def records(draw, prop_crc=BOOLS, body=BODIES):
    """Keyword arguments for encode_record, plus the property dict they encode."""
    props = draw(props_st)
    kwargs = {
        "topic": draw(topic_st),
        "queue_id": draw(st.integers(0, 2**31 - 1)),
        "flag": draw(I32),
        "queue_offset": draw(U63),
        "phy_offset": draw(U63),
        "sysflag": draw(sysflag_st),
        "born_ts": draw(I64),
        "born_host": draw(host_st),
        "store_ts": draw(I64),
        "store_host": draw(host_st),
        "body": draw(body),
        "properties": encode_properties(props).encode("utf-8"),
        "reconsume_times": draw(I32),
        "prepared_tx_offset": draw(I64),
        "append_prop_crc": draw(prop_crc),
    }
    return kwargs, props


def simple_record(**overrides) -> bytes:
    kwargs = {
        "topic": b"abc",
        "queue_id": 0,
        "flag": 0,
        "queue_offset": 0,
        "phy_offset": 0,
        "sysflag": 0,
        "born_ts": 1532257321553,
        "born_host": (IP4, 0),
        "store_ts": 1532257321553,
        "store_host": (b"\xc0\xa8\x47\x01", 8123),
        "body": b"Once, there was a chance for me!",
        "properties": b"0\x01imagoodperson0\x02KEYS\x011632821159368\x02TAGS\x01TAG1\x02",
    }
    kwargs.update(overrides)
    return encode_record(**kwargs)


def layout_of(kwargs) -> tuple[int, int, int]:
    """(header size, position of the topic length, position of the properties length)."""
    header = L.record_header_struct(
        len(kwargs["born_host"][0]) == 16, len(kwargs["store_host"][0]) == 16
    ).size
    topic_len_pos = header + len(kwargs["body"])
    v2 = len(kwargs["topic"]) > L.MAX_TOPIC_BYTES_V1
    props_len_pos = topic_len_pos + (2 if v2 else 1) + len(kwargs["topic"])
    return header, topic_len_pos, props_len_pos


def check_outcome(buf, pos=0, limit=None, *, verify_crc=True):
    """check_record's result, or the string "corrupt" for CorruptRecordError."""
    try:
        return check_record(
            buf, pos, len(buf) if limit is None else limit, verify_crc=verify_crc, path="cl"
        )
    except CorruptRecordError:
        return "corrupt"


# --- round trips ------------------------------------------------------------------------------


@given(records())
def test_encode_check_decode_round_trip(args):
    kwargs, props = args
    rec = encode_record(**kwargs)
    born_v6 = len(kwargs["born_host"][0]) == 16
    store_v6 = len(kwargs["store_host"][0]) == 16
    v2 = len(kwargs["topic"]) > 127

    assert check_record(rec, 0, len(rec), verify_crc=True) == len(rec)
    assert check_record(rec, 0, len(rec), verify_crc=False) == len(rec)
    size, magic = struct.unpack_from(">iI", rec)
    assert size == len(rec)
    assert magic == (L.MAGIC_V2 if v2 else L.MAGIC_V1)

    r = decode_record(rec)
    assert r.size == len(rec)
    assert r.magic == magic
    assert r.version == (2 if v2 else 1)
    assert r.body_crc == zlib.crc32(kwargs["body"]) & 0x7FFFFFFF == body_crc(kwargs["body"])
    assert r.queue_id == kwargs["queue_id"]
    assert r.flag == kwargs["flag"]
    assert r.queue_offset == kwargs["queue_offset"]
    assert r.phy_offset == kwargs["phy_offset"]
    expected_sysflag = kwargs["sysflag"]
    if born_v6:
        expected_sysflag |= L.SYSFLAG_BORNHOST_V6
    if store_v6:
        expected_sysflag |= L.SYSFLAG_STOREHOST_V6
    assert r.sysflag == expected_sysflag
    assert r.born_ts == kwargs["born_ts"]
    assert r.born_host == kwargs["born_host"]
    assert r.store_ts == kwargs["store_ts"]
    assert r.store_host == kwargs["store_host"]
    assert r.reconsume_times == kwargs["reconsume_times"]
    assert r.prepared_tx_offset == kwargs["prepared_tx_offset"]
    assert r.body == kwargs["body"]
    assert r.topic == kwargs["topic"].decode("utf-8")

    expected_props = {k: v for k, v in props.items() if v}
    if kwargs["append_prop_crc"]:
        digits = r.properties.pop(L.PROP_CRC32)
        assert len(digits) == 10
        assert digits.isdigit()
        # least significant digit first
        assert int(digits[::-1]) == zlib.crc32(rec[: len(rec) - 20]) & 0x7FFFFFFF
        assert rec[-20:-11] == b"__CRC32#\x01"
        assert rec[-1:] == b"\x02"
    assert r.properties == expected_props

    # record_size is calMsgLength
    props_len = len(kwargs["properties"]) + (
        L.CRC32_RESERVED_LEN if kwargs["append_prop_crc"] else 0
    )
    assert record_size(
        len(kwargs["topic"]),
        len(kwargs["body"]),
        props_len,
        born_v6=born_v6,
        store_v6=store_v6,
    ) == len(rec)

    # dispatch_fields agrees with decode_record
    assert dispatch_fields(rec, 0) == (
        r.topic,
        r.queue_id,
        r.queue_offset,
        r.sysflag,
        r.store_ts,
        r.size,
        r.properties | ({L.PROP_CRC32: digits} if kwargs["append_prop_crc"] else {}),
    )
    assert r.msg_id == make_msg_id(*kwargs["store_host"], kwargs["phy_offset"])


@given(records(), st.integers(0, 64), st.integers(0, 64))
def test_record_inside_a_larger_buffer(args, lead, trail):
    kwargs, _ = args
    rec = encode_record(**kwargs)
    buf = b"\xee" * lead + rec + bytes(trail)
    assert check_record(buf, lead, len(buf), verify_crc=True) == len(rec)
    assert check_record(buf, lead, lead + len(rec), verify_crc=True) == len(rec)
    assert decode_record(buf, lead) == decode_record(rec)
    # Two records back to back.
    two = rec + rec
    assert check_record(two, len(rec), len(two), verify_crc=True) == len(rec)


def test_buffer_types():
    rec = simple_record()
    for buf in (rec, bytearray(rec), memoryview(rec)):
        assert check_record(buf, 0, len(rec), verify_crc=True) == len(rec)
        assert decode_record(buf).body == b"Once, there was a chance for me!"
    mm = mmap.mmap(-1, 4096)
    try:
        mm[100 : 100 + len(rec)] = rec
        assert check_record(mm, 100, len(mm), verify_crc=True) == len(rec)
        assert decode_record(mm, 100).topic == "abc"
    finally:
        mm.close()


def test_worked_example_from_the_doc():
    rec = simple_record()
    assert len(rec) == 172
    assert rec[:4] == bytes.fromhex("000000AC")
    assert rec[4:8] == bytes.fromhex("DAA320A7")
    assert rec[8:12] == bytes.fromhex("09021560")
    assert rec[48:56] == bytes.fromhex("7F00000100000000")
    assert rec[64:72] == bytes.fromhex("C0A8470100001FBB")
    assert rec[84:88] == (32).to_bytes(4, "big")
    assert rec[120:124] == b"\x03abc"
    assert rec[124:126] == (46).to_bytes(2, "big")
    r = decode_record(rec)
    assert r.keys == ("1632821159368",)
    assert r.tags == "TAG1"
    assert r.uniq_key is None
    assert r.msg_id == "C0A8470100001FBB0000000000000000"


@pytest.mark.parametrize(
    ("topic_len", "magic", "len_size"),
    [(1, L.MAGIC_V1, 1), (127, L.MAGIC_V1, 1), (128, L.MAGIC_V2, 2), (300, L.MAGIC_V2, 2)],
)
def test_version_follows_topic_length(topic_len, magic, len_size):
    topic = b"t" * topic_len
    rec = simple_record(topic=topic, body=b"", properties=b"")
    assert struct.unpack_from(">I", rec, 4)[0] == magic
    assert rec[88 : 88 + len_size] == topic_len.to_bytes(len_size, "big")
    assert len(rec) == 88 + len_size + topic_len + 2 == record_size(topic_len, 0, 0)
    assert decode_record(rec).topic == "t" * topic_len


@pytest.mark.parametrize(
    ("born", "store", "flags"),
    [
        (IP4, IP4, 0),
        (IP6, IP4, L.SYSFLAG_BORNHOST_V6),
        (IP4, IP6, L.SYSFLAG_STOREHOST_V6),
        (IP6, IP6, L.SYSFLAG_BORNHOST_V6 | L.SYSFLAG_STOREHOST_V6),
    ],
)
def test_ipv6_hosts_set_sysflag_and_widen_the_header(born, store, flags):
    rec = simple_record(born_host=(born, 1), store_host=(store, 2), sysflag=L.SYSFLAG_MULTI_TAGS)
    sysflag = struct.unpack_from(">i", rec, L.POS_SYSFLAG)[0]
    assert sysflag == flags | L.SYSFLAG_MULTI_TAGS
    extra = 12 * ((born is IP6) + (store is IP6))
    assert len(rec) == 172 + extra
    assert rec[48 : 48 + len(born)] == born
    r = decode_record(rec)
    assert r.born_host == (born, 1)
    assert r.store_host == (store, 2)
    assert r.body == b"Once, there was a chance for me!"


def test_prop_crc_adds_a_separator_when_properties_do_not_end_with_one():
    rec = simple_record(properties=b"a\x01b", append_prop_crc=True)
    assert len(rec) == record_size(3, 32, 3 + 1 + 20)
    assert rec[-21:-11] == b"\x02__CRC32#\x01"
    props = decode_record(rec).properties
    assert props.pop("a") == "b"
    assert set(props) == {"__CRC32#"}


def test_prop_crc_on_empty_properties():
    rec = simple_record(properties=b"", append_prop_crc=True)
    assert len(rec) == record_size(3, 32, 20)
    assert rec[-22:-20] == (20).to_bytes(2, "big")
    assert check_record(rec, 0, len(rec), verify_crc=True) == len(rec)


@pytest.mark.parametrize(
    ("crc", "digits"),
    [
        (0, b"0000000000"),
        (5, b"5000000000"),
        (1234567890, b"0987654321"),
        (2**31 - 1, b"7463847412"),
    ],
)
def test_crc32_property_digits_least_significant_first(crc, digits):
    assert crc32_property_digits(crc) == digits
    assert "".join(str(crc // 10**i % 10) for i in range(10)).encode() == digits


def test_explicit_crc_argument_is_stored():
    rec = simple_record(crc=12345)
    assert struct.unpack_from(">i", rec, 8)[0] == 12345
    with pytest.raises(CorruptRecordError, match="CRC"):
        check_record(rec, 0, len(rec), verify_crc=True)
    assert check_record(rec, 0, len(rec), verify_crc=False) == len(rec)


def test_properties_too_long():
    limit = L.MAX_PROPERTIES_BYTES
    big = b"k\x01" + b"v" * (limit - 3) + b"\x02"
    assert len(big) == limit
    assert decode_record(simple_record(properties=big)).properties == {"k": "v" * (limit - 3)}
    with pytest.raises(PropertiesTooLongError):
        simple_record(properties=big + b"x")
    with pytest.raises(PropertiesTooLongError):  # the __CRC32# entry counts too
        simple_record(properties=big[:-20], append_prop_crc=True)
    simple_record(properties=big[:-20], append_prop_crc=False)


# --- check_record failures ----------------------------------------------------------------------


@given(records(body=st.binary(min_size=1, max_size=200)), st.data())
def test_flipped_body_byte_fails_the_crc(args, data):
    kwargs, _ = args
    rec = bytearray(encode_record(**kwargs))
    header, topic_len_pos, _ = layout_of(kwargs)
    i = data.draw(st.integers(header, topic_len_pos - 1))
    rec[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptRecordError, match="CRC"):
        check_record(rec, 0, len(rec), verify_crc=True)
    with pytest.raises(CorruptRecordError):
        decode_record(rec)
    # Without CRC checking the layout is still fine.
    assert check_record(rec, 0, len(rec), verify_crc=False) == len(rec)


@given(records(prop_crc=st.just(True)), st.data())
def test_prop_crc_detects_a_flipped_byte_anywhere_before_it(args, data):
    kwargs, _ = args
    rec = bytearray(encode_record(**kwargs))
    i = data.draw(st.integers(8, len(rec) - L.CRC32_RESERVED_LEN - 1))
    rec[i] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptRecordError):
        check_record(rec, 0, len(rec), verify_crc=True)


@given(records(prop_crc=st.just(True)), st.data())
def test_prop_crc_detects_a_changed_digit(args, data):
    kwargs, _ = args
    rec = bytearray(encode_record(**kwargs))
    i = len(rec) - 11 + data.draw(st.integers(0, 9))
    old = rec[i]
    rec[i] = data.draw(st.sampled_from([d for d in b"0123456789" if d != old]))
    with pytest.raises(CorruptRecordError, match="__CRC32#"):
        check_record(rec, 0, len(rec), verify_crc=True)


@pytest.mark.parametrize("pos", [L.POS_QUEUE_OFFSET + 7, L.POS_PHYSICAL_OFFSET, 40, 56, 72])
def test_header_flip_needs_the_prop_crc(pos):
    # The body CRC does not cover the header; the __CRC32# entry does.
    plain = bytearray(simple_record())
    plain[pos] ^= 0x01
    assert check_record(plain, 0, len(plain), verify_crc=True) == len(plain)
    with_crc = bytearray(simple_record(append_prop_crc=True))
    with_crc[pos] ^= 0x01
    with pytest.raises(CorruptRecordError, match="__CRC32#"):
        check_record(with_crc, 0, len(with_crc), verify_crc=True)


@pytest.mark.parametrize("delta", [-1, 1, 2, 50])
def test_totalsize_not_matching_the_formula(delta):
    rec = bytearray(simple_record())
    rec[0:4] = struct.pack(">i", len(rec) + delta)
    buf = bytes(rec) + bytes(100)
    with pytest.raises(CorruptRecordError):
        check_record(buf, 0, len(buf), verify_crc=True)
    with pytest.raises(CorruptRecordError):
        check_record(buf, 0, len(buf), verify_crc=False)


@pytest.mark.parametrize("size", [0, -1, -172, 2**31 - 1])
def test_bad_totalsize_with_a_good_magic(size):
    rec = bytearray(simple_record())
    rec[0:4] = struct.pack(">i", size)
    with pytest.raises(CorruptRecordError):
        check_record(rec, 0, len(rec), verify_crc=True)


def test_size_larger_than_remaining():
    rec = simple_record()
    with pytest.raises(CorruptRecordError, match="exceeds"):
        check_record(rec, 0, len(rec) - 1, verify_crc=True)
    with pytest.raises(CorruptRecordError, match="exceeds"):
        check_record(rec[:100], 0, 100, verify_crc=False)
    buf = bytes(10) + rec
    with pytest.raises(CorruptRecordError, match="exceeds"):
        check_record(buf, 10, len(buf) - 1, verify_crc=True)


@pytest.mark.parametrize(
    ("offset", "value"),
    [
        (84, struct.pack(">i", -1)),  # negative body length
        (84, struct.pack(">i", 10_000)),  # body length beyond the record
        (120, b"\x80"),  # v1 topic length read as a signed byte: -128
        (120, b"\x7f"),  # topic length beyond the record
        (124, struct.pack(">h", -1)),  # negative properties length
        (124, struct.pack(">h", 45)),  # one short of the formula
        (L.POS_SYSFLAG + 3, b"\x10"),  # claims an IPv6 born host
    ],
)
def test_inner_lengths_that_do_not_add_up(offset, value):
    rec = bytearray(simple_record())
    rec[offset : offset + len(value)] = value
    with pytest.raises(CorruptRecordError):
        check_record(rec, 0, len(rec), verify_crc=False)


def test_end_of_data_and_end_of_file():
    zeros = bytes(256)
    assert check_record(zeros, 0, len(zeros), verify_crc=True) == END_OF_DATA == 0
    assert END_OF_FILE == -1
    for magic in (0, 0xDAA320A6, 0xDAA320A8, 0x12345678, 0xFFFFFFFF):
        buf = struct.pack(">iI", 172, magic) + bytes(200)
        assert check_record(buf, 0, len(buf), verify_crc=True) == END_OF_DATA
    blank = struct.pack(">iI", 108, L.BLANK_MAGIC) + bytes(100)
    assert check_record(blank, 0, len(blank), verify_crc=True) == END_OF_FILE
    # Only the 8 bytes of the filler have to be there.
    assert check_record(blank[:8], 0, 8, verify_crc=True) == END_OF_FILE
    # Fewer than 8 bytes left: nothing can start here.
    rec = simple_record()
    assert check_record(rec, 0, 7, verify_crc=True) == END_OF_DATA
    assert check_record(rec, len(rec) - 4, len(rec), verify_crc=True) == END_OF_DATA
    assert check_record(rec, len(rec), len(rec), verify_crc=True) == END_OF_DATA


def test_decode_record_refuses_non_messages():
    with pytest.raises(CorruptRecordError, match="BLANK"):
        decode_record(struct.pack(">iI", 108, L.BLANK_MAGIC) + bytes(100))
    with pytest.raises(CorruptRecordError, match="no record"):
        decode_record(bytes(100))
    with pytest.raises(CorruptRecordError) as info:
        decode_record(bytes(20) + simple_record(crc=1), 20, path="/x/00000000000000000000")
    assert info.value.offset == 20
    assert info.value.path.name == "00000000000000000000"


@settings(max_examples=25)
@given(records())
def test_every_cut_through_header_body_and_lengths_is_rejected(args):
    """A record cut at byte k in a zero-filled buffer never verifies, up to the last length field.

    The limit is the topic length (empty properties) or the properties length; cuts after that
    are in test_cut_in_topic_or_properties_is_detected below (they are not detected).
    """
    kwargs, _ = args
    rec = encode_record(**kwargs)
    _, topic_len_pos, props_len_pos = layout_of(kwargs)
    has_props = len(rec) > props_len_pos + 2
    last = props_len_pos if has_props else topic_len_pos
    for k in range(last + 1):
        cut = rec[:k] + bytes(len(rec) - k)
        if cut == rec:  # the bytes after k were zero anyway
            continue
        outcome = check_outcome(cut)
        assert outcome in ("corrupt", END_OF_DATA), (k, outcome)
    assert check_outcome(rec) == len(rec)


@pytest.mark.parametrize(
    ("overrides", "keep_from_end"),
    [
        ({}, 10),  # properties half written
        ({}, 1),  # only the final 0x02 of the properties missing
        ({"append_prop_crc": True}, 20),  # the __CRC32# entry not written
        ({"append_prop_crc": True}, 40),  # user properties and the __CRC32# entry not written
        ({"properties": b""}, 4),  # topic half written, no properties
    ],
)
def test_cut_in_topic_or_properties_is_detected(overrides, keep_from_end):
    rec = simple_record(**overrides)
    k = len(rec) - keep_from_end
    cut = rec[:k] + bytes(keep_from_end)
    assert cut != rec
    assert check_outcome(cut) in ("corrupt", END_OF_DATA)


# --- properties ---------------------------------------------------------------------------------


@given(props_st)
def test_properties_round_trip(props):
    text = encode_properties(props)
    expected = {k: v for k, v in props.items() if v}
    assert decode_properties(text) == expected
    if expected:
        assert text.endswith("\x02")
    assert text.count("\x02") == len(expected)


def test_encode_properties_format():
    assert encode_properties({}) == ""
    assert (
        encode_properties({"KEYS": "k1 k2", "TAGS": "TAG1"}) == "KEYS\x01k1 k2\x02TAGS\x01TAG1\x02"
    )
    assert encode_properties({"a": "", "b": "1"}) == "b\x011\x02"  # empty values are skipped


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("a\x01b\x02", {"a": "b"}),
        ("a\x01b", {"a": "b"}),  # no trailing separator
        ("a\x01\x02", {}),  # empty value (segment shorter than 3)
        ("\x01bc\x02", {}),  # empty name
        ("abc\x02", {}),  # no name/value separator
        ("ab\x01\x02", {}),  # empty value, 3 chars
        ("a\x01b\x01c\x02", {"a": "b\x01c"}),  # split at the first 0x01
        ("\x02\x02a\x01b\x02\x02", {"a": "b"}),
        ("a\x011\x02a\x012\x02", {"a": "2"}),  # the last duplicate wins
    ],
)
def test_decode_properties_leniency(text, expected):
    assert decode_properties(text) == expected


def test_message_record_keys_and_tags():
    rec = simple_record(
        properties=encode_properties({"KEYS": " k1  k2 ", "UNIQ_KEY": "U1"}).encode()
    )
    r = decode_record(rec)
    assert r.keys == ("k1", "k2")
    assert r.tags is None
    assert r.uniq_key == "U1"


def test_to_json_text_and_binary_bodies():
    r = decode_record(simple_record())
    out = r.to_json()
    assert out["body"] == "Once, there was a chance for me!"
    assert "body_b64" not in out
    assert out["topic"] == "abc"
    assert out["store_host"] == "192.168.71.1:8123"
    assert out["born_host"] == "127.0.0.1:0"
    assert out["keys"] == ["1632821159368"]
    assert out["tags"] == "TAG1"
    assert out["size"] == 172
    assert r.to_json(b64=True)["body_b64"] == "T25jZSwgdGhlcmUgd2FzIGEgY2hhbmNlIGZvciBtZSE="
    binary = decode_record(simple_record(body=b"\xff\xfe")).to_json()
    assert binary["body_b64"] == "//4="
    assert "body" not in binary


def test_message_defaults():
    m = Message(topic="t", body=b"")
    assert m.queue_id is None
    assert m.keys == ()
    assert m.tags is None
    assert dict(m.properties) == {}
    assert m.flag == 0


def test_check_max_size():
    check_max_size(10, 10, "x")
    with pytest.raises(MessageTooLargeError, match="x"):
        check_max_size(11, 10, "x")


# --- message ids and hosts ----------------------------------------------------------------------


def test_msg_id_example_from_the_doc():
    msg_id = make_msg_id(bytes([192, 168, 71, 1]), 8123, 172)
    assert msg_id == "C0A8470100001FBB00000000000000AC"
    assert parse_msg_id(msg_id) == (bytes([192, 168, 71, 1]), 8123, 172)
    assert parse_msg_id(msg_id.lower()) == (bytes([192, 168, 71, 1]), 8123, 172)


@given(ip_st, st.integers(0, 2**31 - 1), U63)
def test_msg_id_round_trip(ip, port, offset):
    msg_id = make_msg_id(ip, port, offset)
    assert len(msg_id) == (32 if len(ip) == 4 else 56)
    assert msg_id == msg_id.upper()
    assert parse_msg_id(msg_id) == (ip, port, offset)


@pytest.mark.parametrize(
    "msg_id", ["", "00", "0" * 30, "0" * 34, "0" * 54, "0" * 58, "0" * 64, "ABC", "G" * 32]
)
def test_parse_msg_id_bad_input(msg_id):
    with pytest.raises(ValueError):
        parse_msg_id(msg_id)


@pytest.mark.parametrize(
    ("ip", "port", "text"),
    [
        (bytes([192, 168, 71, 1]), 8123, "192.168.71.1:8123"),
        (IP4, 0, "127.0.0.1:0"),
        (ipaddress.IPv6Address("::1").packed, 8123, "[::1]:8123"),
        (IP6, 1, "[2001:db8::1]:1"),
    ],
)
def test_format_and_parse_host(ip, port, text):
    assert format_host(ip, port) == text
    assert parse_host(text) == (ip, port)


def test_parse_host_without_port():
    assert parse_host("10.0.0.1") == (bytes([10, 0, 0, 1]), 0)
    assert parse_host("::1") == (ipaddress.IPv6Address("::1").packed, 0)


@given(ip_st, st.integers(0, 65535))
def test_host_round_trip(ip, port):
    assert parse_host(format_host(ip, port)) == (ip, port)


# --- topic names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["", ".", "..", "a/b", "/abs", "a\\b", "a\x00b", "\x00", "x" * 128, "\u00e9" * 64],
)
def test_validate_topic_rejects(topic):
    with pytest.raises(InvalidTopicError):
        validate_topic(topic)


@pytest.mark.parametrize(
    "topic", ["abc", "x" * 127, "\u00e9" * 63 + "x", "%RETRY%group", "a.b", "...", "a b"]
)
def test_validate_topic_accepts(topic):
    assert validate_topic(topic) == topic.encode("utf-8")
    assert len(validate_topic(topic)) <= 127


def test_validate_topic_v2_limits():
    """A v2 record may carry a topic of up to 32,767 bytes, but a topic that names a queue
    directory holds at most 255 (NAME_MAX): a longer one is refused, not an OSError later."""
    assert validate_topic("x" * 128, allow_v2=True) == b"x" * 128
    assert validate_topic("x" * 255, allow_v2=True) == b"x" * 255
    assert validate_topic("é" * 127, allow_v2=True) == "é".encode() * 127  # 254 bytes
    for long in ("x" * 256, "é" * 128, "x" * 32767, "x" * 32768):
        with pytest.raises(InvalidTopicError, match=f"is {len(long.encode())} bytes"):
            validate_topic(long, allow_v2=True)
    with pytest.raises(InvalidTopicError):
        validate_topic("a/b", allow_v2=True)


def test_invalid_topic_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate_topic("")


def test_validate_topic_lone_surrogate():
    with pytest.raises(InvalidTopicError):
        validate_topic("abc\udcff")


def test_message_record_is_frozen():
    r = decode_record(simple_record())
    assert isinstance(r, MessageRecord)
    with pytest.raises(AttributeError):
        r.size = 1  # type: ignore[misc]


def test_a_corrupt_record_error_names_the_file_within_the_store() -> None:
    """Commit-log, consume-queue and index files share 20-digit names: the error says which."""
    from mqtier.errors import CorruptRecordError

    cl = CorruptRecordError("/s/commitlog/00000000000000000000", 1280, "bad")
    cq = CorruptRecordError("/s/consumequeue/t1/1/00000000000000000000", 40, "bad")
    assert str(cl) == "commitlog/00000000000000000000 @ 1280: bad"
    assert str(cq) == "consumequeue/t1/1/00000000000000000000 @ 40: bad"
    assert str(CorruptRecordError("/elsewhere/x.bin", 0, "bad")) == "x.bin @ 0: bad"


# --- the one-pass decode agrees with the two passes -------------------------------------------


# Where each field of an IPv4 record header starts (sign bytes first), and -1: the topic length.
HEADER_FIELD_STARTS = [0, 4, 8, 12, 16, 20, 28, 36, 40, 48, 52, 56, 64, 68, 72, 76, 84, -1]


def _two_pass(buf: bytes, verify_crc: bool) -> object:
    """check_record then decode_checked_record: what decode_record must equal."""
    try:
        size = check_record(buf, 0, len(buf), verify_crc=verify_crc)
    except CorruptRecordError:
        return "corrupt"
    return decode_checked_record(buf, 0, size) if size > 0 else size


RAW_PROPS = st.one_of(
    st.binary(max_size=40),  # anything, invalid UTF-8 and stray separators included
    st.lists(
        st.tuples(st.sampled_from(["", "a", "KEYS", "é"]), st.sampled_from(["", "\x01", "x"])),
        max_size=4,
    ).map(lambda es: "".join(f"{n}{s}\x02" for n, s in es).encode()),
)


@settings(max_examples=400)
@given(
    records(),
    RAW_PROPS,
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3),
    BOOLS,
    BOOLS,
)
def test_the_one_pass_decode_accepts_only_what_the_full_checks_accept(
    args, raw, flips, use_raw, verify
):
    kwargs, _ = args
    if use_raw:
        kwargs = {**kwargs, "properties": raw, "append_prop_crc": False}
    buf = bytearray(encode_record(**kwargs))
    for at, value in flips:
        buf[at % len(buf)] = value
    data = bytes(buf)
    fast = decode_sound_record(data, 0, len(data), verify)
    if fast is not None:
        assert _two_pass(data, verify) == fast
    # and decode_record, whichever path it takes, says what the two passes say
    try:
        got: object = decode_record(data, 0, verify_crc=verify)
    except CorruptRecordError:
        got = "corrupt"
    want = _two_pass(data, verify)
    assert got == (want if isinstance(want, MessageRecord) else "corrupt")


@settings(max_examples=400)
@given(
    records(),
    # flips aimed at the first byte of a header field or at the topic length (-1) half the time
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(HEADER_FIELD_STARTS), st.integers(0, 2000)),
            st.integers(0, 255),
        ),
        max_size=3,
    ),
    st.booleans(),
    st.booleans(),
    st.sampled_from([0, 0, 0, 1, -8]),
)
def test_the_read_decode_accepts_only_what_decode_and_header_checks_accept(
    args, flips, plausible, give_size, phy_shift
):
    kwargs, _ = args
    if plausible:  # a header the checks accept (no whole-record CRC): the flips decide
        kwargs = {
            **kwargs, "store_ts": 1_700_000_000_000, "born_ts": 1_699_999_999_000, "sysflag": 0,
            "append_prop_crc": False,
        }  # fmt: skip
    buf = bytearray(encode_record(**kwargs))
    size = len(buf)
    topic_len_at = L.RECORD_HEADER_V4V4.size + len(kwargs["body"])
    for at, value in flips:
        buf[(topic_len_at if at < 0 else at) % len(buf)] = value
    data = bytes(buf)
    phy = max(0, kwargs["phy_offset"] + phy_shift)  # a shift: the record read at another offset
    got = decode_sound_record(data, 0, len(data), True, phy, size if give_size else -1)
    try:
        want: MessageRecord | None = decode_record(data, 0, verify_crc=True)
    except CorruptRecordError:
        want = None
    if want is not None and not header_plausible(want, phy, None, size if give_size else None):
        want = None
    if got is not None:
        assert got == want
        check_record_header(data, 0, expect_phy=phy, expect_size=size if give_size else None)
    elif want is not None:
        # declined, yet both checks pass: only an odd record the one pass leaves to them
        assert decode_sound_record(data, 0, len(data), True) is None


@settings(max_examples=300)
@given(
    records(prop_crc=st.just(False)),
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), max_size=3),
    st.booleans(),
)
def test_a_plausible_header_is_one_the_full_header_check_passes(args, flips, with_unit):
    kwargs, _ = args
    # times the check accepts, so that the flips decide
    kwargs = {**kwargs, "store_ts": 1_700_000_000_000, "born_ts": 1_699_999_999_000}
    buf = bytearray(encode_record(**kwargs))
    for at, value in flips:
        buf[at % len(buf)] = value
    data = bytes(buf)
    try:
        msg = decode_record(data, 0, verify_crc=False)
    except CorruptRecordError:
        return
    phy = kwargs["phy_offset"]
    topic = kwargs["topic"].decode("utf-8", "replace")
    unit = (topic, kwargs["queue_id"], kwargs["queue_offset"]) if with_unit else None
    if header_plausible(msg, phy, unit):
        if unit is None:
            check_record_header(data, 0, expect_phy=phy)
        else:
            check_record_header(
                data, 0, expect_phy=phy, expect_topic=unit[0], expect_queue=unit[1],
                expect_queue_offset=unit[2],
            )  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "read_at", "size_delta"),
    [
        ({}, 8, 0),  # read at another offset than the header's
        ({}, 0, 1),  # a unit of another size
        ({"queue_id": -1}, 0, 0),
        ({"queue_offset": -1}, 0, 0),
        ({"sysflag": 1 << 30}, 0, 0),  # a bit RocketMQ does not define
        ({"sysflag": 7 << L.SYSFLAG_COMPRESSION_SHIFT}, 0, 0),
        ({"store_ts": 0}, 0, 0),
        ({"born_ts": -1}, 0, 0),
        ({"topic": b""}, 0, 0),
    ],
)
def test_the_read_decode_declines_each_implausible_header_field(overrides, read_at, size_delta):
    good = simple_record()
    assert decode_sound_record(good, 0, len(good), True, 0, len(good)) == decode_record(good)
    data = simple_record(**overrides)
    assert decode_sound_record(data, 0, len(data), True, read_at, len(data) + size_delta) is None
    with pytest.raises(CorruptRecordError):
        check_record_header(data, 0, expect_phy=read_at, expect_size=len(data) + size_delta)
