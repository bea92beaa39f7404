"""fastjson-style config JSON: tabs, alphabetical bean keys, bare numeric map keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtier.format import fastjson

CONFIG_FILES = [
    "topics.json",
    "topics.json.bak",
    "consumerOffset.json",
    "delayOffset.json",
    "subscriptionGroup.json",
    "consumerFilter.json",
]


@pytest.mark.fixtures
@pytest.mark.parametrize("name", CONFIG_FILES)
def test_real_config_files_round_trip_byte_for_byte(fixture_store_c_src, name):
    raw = (fixture_store_c_src / "config" / name).read_bytes()
    text = raw.decode("utf-8")
    assert fastjson.dumps(fastjson.loads(text)).encode("utf-8") == raw


@pytest.mark.fixtures
def test_consumer_offset_numeric_keys_load_as_ints(fixture_store_c_src):
    data = fastjson.loads((fixture_store_c_src / "config" / "consumerOffset.json").read_text())
    table = data["offsetTable"]
    assert table["TopicTest@please_rename_unique_group_name_4"] == {0: 250, 1: 250, 2: 250, 3: 250}
    assert table["%RETRY%please_rename_unique_group_name_4@please_rename_unique_group_name_4"] == {
        0: 0
    }
    for queues in table.values():
        assert all(type(k) is int for k in queues)


@pytest.mark.fixtures
def test_topics_json_content(fixture_store_c_src):
    data = fastjson.loads((fixture_store_c_src / "config" / "topics.json").read_text())
    assert data["dataVersion"] == {"counter": 3, "timestamp": 1551626364371}
    topic = data["topicConfigTable"]["TopicTest"]
    assert topic["perm"] == 6
    assert topic["readQueueNums"] == topic["writeQueueNums"] == 4
    assert topic["order"] is False
    assert list(topic) == sorted(topic)  # fastjson writes bean properties alphabetically
    assert fastjson.loads((fixture_store_c_src / "config" / "delayOffset.json").read_text()) == {
        "offsetTable": {}
    }


def test_dumps_exact_format():
    value = {"b": {"x": 1, "y": [1, "two", None, True]}, "a": {0: 250, 1: 251}, "e": {}, "l": []}
    assert fastjson.dumps(value) == (
        "{\n"
        '\t"b":{\n'
        '\t\t"x":1,\n'
        '\t\t"y":[\n'
        "\t\t\t1,\n"
        '\t\t\t"two",\n'
        "\t\t\tnull,\n"
        "\t\t\ttrue\n"
        "\t\t]\n"
        "\t},\n"
        '\t"a":{0:250,1:251\n'
        "\t},\n"
        '\t"e":{},\n'
        '\t"l":[]\n'
        "}"
    )


def test_dumps_keeps_non_ascii():
    assert fastjson.dumps({"t": "\u00e9\u4e2d"}) == '{\n\t"t":"\u00e9\u4e2d"\n}'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{0:250,1:250}", {0: 250, 1: 250}),
        ("{ -1 : 5 , 2:3}", {-1: 5, 2: 3}),
        ('{"a":{0:1},"b":"{1:2}"}', {"a": {0: 1}, "b": "{1:2}"}),  # not inside strings
        ('{"a,1":1}', {"a,1": 1}),
        ('{"a\\",1:":1}', {'a",1:': 1}),  # escaped quote inside a key
        ("[1,2,{3:4}]", [1, 2, {3: 4}]),
        ('{"x":[0,1]}', {"x": [0, 1]}),
        ("{}", {}),
        ('{"k":-1.5e3}', {"k": -1500.0}),
    ],
)
def test_loads_lenient_keys(text, expected):
    assert fastjson.loads(text) == expected


def test_loads_plain_json():
    assert fastjson.loads('{"a": [1, 2], "b": null}') == {"a": [1, 2], "b": None}


# Any string key: quoted digit strings must stay strings (tested below as well).
str_keys = st.text(max_size=12)
int_keys = st.integers(-(2**40), 2**40)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(str_keys, int_keys), children, max_size=4),
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.one_of(str_keys, int_keys), json_values, max_size=6))
def test_dumps_loads_round_trip(value):
    text = fastjson.dumps(value)
    assert fastjson.loads(text) == value
    assert fastjson.dumps(fastjson.loads(text)) == text


def test_numeric_string_key_round_trip():
    value = {"topicConfigTable": {"123": {"perm": 6, "topicName": "123"}}}
    text = fastjson.dumps(value)
    assert fastjson.loads(text) == value
    assert fastjson.dumps(fastjson.loads(text)) == text


@pytest.mark.parametrize("key", ["\u00b2", "--1", "\u0663"])
def test_unusual_digit_keys_stay_strings(key):
    assert fastjson.loads(fastjson.dumps({key: 1})) == {key: 1}
