"""The ``fields`` column cut from payloads: the same fields as encoding the reading's again."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotstream.lake.delta import readings_table
from iotstream.lake.fields import cut_fields, encode_fields, readings_fields
from iotstream.models import RESERVED_FIELDS, DeviceId, Reading
from iotstream.parser import Parser

LEFT_OUT = {"x", "y", "z", *RESERVED_FIELDS}


def column_fields(payloads: list[bytes]) -> list[dict[str, Any] | None]:
    """What the lake's ``fields`` column holds for coordinates messages with these payloads."""
    batch = Parser().parse_batch(
        [("sensors/r1/coordinates", payload, 1_800_000_000.0) for payload in payloads]
    )
    assert not batch.rejected, batch.rejected
    texts = readings_table(batch.readings).column("fields").to_pylist()
    return [None if text is None else orjson.loads(text) for text in texts]


def test_the_other_fields_are_copied_as_sent() -> None:
    col, slow = cut_fields(
        [
            b'{"x":1.5,"y":2.0,"timestamp":1.0,"seq":3,"sent":1.25}',
            b"",
            b' { "x" : 1.0 ,\n "y":2.0 } ',
            b'{"a":{"x":[1,"}\\""]},"x":1.0,"y":2.0,"deviceId":"q","b":"\\u00e9","z":0.5}',
            b'{"\\u0078":1.0,"y":1.0}',
            b'{"x":1e2,"y":-0.0,"battery":97,"ok":true,"note":null,"pose":[1.5,{"k":"v"}]}',
        ]
    )
    assert col.to_pylist() == [
        '{"seq":3,"sent":1.25}',
        None,
        None,
        '{"a":{"x":[1,"}\\""]},"b":"\\u00e9"}',
        None,
        '{"battery":97,"ok":true,"note":null,"pose":[1.5,{"k":"v"}]}',
    ]
    # No payload, and a key with an escape (it may spell "x"): encoded from the fields.
    assert slow.tolist() == [1, 4]


def test_an_escaped_key_is_encoded_again_from_the_reading() -> None:
    assert column_fields([b'{"\\u0078":1.0,"y":1.0,"\\u0061":2}']) == [{"a": 2}]


def test_readings_without_a_payload_keep_their_fields_as_before() -> None:
    batch = Parser().parse_batch(
        [
            ("sensors/r1/battery", b"97", 1_800_000_000.0),
            ("sensors/r1/x", b"5", 1_800_000_000.0),
            ("sensors/r1/coordX", b"5", 1_800_000_000.0),
        ]
    )
    table = readings_table(batch.readings)
    assert table.column("fields").to_pylist() == ['{"battery":97}', '{"x":5}', None]
    assert table.column("x").to_pylist() == [None, 5.0, 5.0]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
keys = st.sampled_from(["x", "y", "z", "timestamp", "deviceId", "receivedAt", "a", "b", "é", ""])


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(keys | st.text(max_size=6), json_values, max_size=6),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.sampled_from([b"", b" ", b"\n\t"]),
)
def test_the_column_decodes_to_the_fields_the_reading_holds(
    document: dict[str, Any], x: float, y: float, space: bytes
) -> None:
    document = {**document, "x": x, "y": y}
    document.pop("timestamp", None)  # the parser's rules for it are tested elsewhere
    if type(document.get("z", 0.0)) not in (int, float):
        del document["z"]  # a coordinate must be a number, or the message is rejected
    members = [
        space + orjson.dumps(k) + space + b":" + space + orjson.dumps(v)
        for k, v in document.items()
    ]
    payload = b"{" + b",".join(members) + space + b"}"
    [reading] = Parser().parse_batch([("sensors/r1/coordinates", payload, 1.0)]).readings
    expected = {k: v for k, v in reading.fields.items() if k not in LEFT_OUT}
    [held] = column_fields([payload])
    assert held == (expected or None)
    text = encode_fields(expected)
    assert (None if text is None else orjson.loads(text)) == held
    # Read back from Kafka a reading has no payload: its row comes out the same, text and all.
    with_payload = readings_table([reading])
    assert readings_table([replace(reading, payload=None)]).equals(with_payload)


@pytest.mark.parametrize(
    "fields",
    [
        {"x": 1.5, "y": 2.0, "seq": 3, "pose": {"x": 1}},
        {"x": 1.5, "y": 2.0, "z": -0.0},
        {"battery": 97},
        {"x": 5, "y": 2.0, "a": 1},  # an int coordinate stays in the column's text too
        {"x": "5", "y": 2.0},
        {"x": 1.0, "y": 2.0, "timestamp": 7, "deviceId": "q", "receivedAt": "r"},
        {"x": 1.0, "y": 2.0, "big": 2**70},
        {"y": 2.0, 'q"é': [1, {"z": 2}]},  # an escape in a key: encoded again
        {},
    ],
)
def test_a_reading_without_a_payload_gets_the_row_of_encoding_its_fields(
    fields: dict[str, Any],
) -> None:
    row = readings_table([Reading(DeviceId("r1"), fields, 1.0, 2.0)]).to_pylist()[0]
    rest = {k: v for k, v in fields.items() if not (k in ("x", "y", "z") and type(v) is float)}
    assert row["fields"] == encode_fields(rest)
    for axis in ("x", "y", "z"):
        value = fields.get(axis)
        assert row[axis] == (float(value) if type(value) in (int, float) else None)


@pytest.mark.parametrize("payload", [b'{"x":1.0,"y":2.0}', b'{"y":2.0,"x":1.0,"z":3.0}'])
def test_nothing_left_is_null(payload: bytes) -> None:
    assert column_fields([payload]) == [None]


def test_only_fields_the_cut_leaves_as_encoding_would_are_cut_without_a_payload() -> None:
    whole = [{"x": 1.5, "y": 2.0, "a": [1, "},"]}, {"battery": 97}, {}]
    apart = [{"x": 5}, {"z": None}, {"y": 1.0, "timestamp": 1}]
    fields = [*whole, *apart]
    column, slow = readings_fields([Reading(DeviceId("r1"), f, 1.0, 1.0) for f in fields])
    assert column.to_pylist()[:3] == ['{"a":[1,"},"]}', '{"battery":97}', None]
    assert slow.tolist() == [3, 4, 5]
    # An int beyond 64 bits, which orjson refuses: every row without a payload is encoded
    # again, the others are cut.
    big = Reading(DeviceId("r1"), {"big": 2**70}, 1.0, 1.0)
    sent = Reading(DeviceId("r1"), {"x": 1.0, "y": 1.0}, 1.0, 1.0, b'{"x":1.0,"y":1.0,"a":2}')
    column, slow = readings_fields([big, sent, Reading(DeviceId("r1"), {"b": 1}, 1.0, 1.0)])
    assert column.to_pylist()[1] == '{"a":2}'
    assert slow.tolist() == [0, 2]
