"""The Kafka record format: every event round-trips, and no value crashes the decoder."""

from __future__ import annotations

import base64
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from iotstream.bus import kafka_codec
from iotstream.bus.base import Position
from iotstream.bus.kafka_codec import (
    COLUMNS,
    READINGS,
    RECORDS,
    UNDECODABLE,
    UndecodableRecord,
    decode,
    decode_all,
    decode_batch,
    encode,
    encode_batch,
    murmur2,
    partition_of,
    schema,
)
from iotstream.models import (
    EVENT_KINDS,
    MAX_DEVICE_ID,
    REJECTED_PAYLOAD_KEEP,
    REPORTS,
    Batch,
    CommandReply,
    DeviceId,
    RawMessage,
    Reading,
    Rejected,
)

T0 = 1_800_000_000.0


@dataclass
class Record:
    """A consumed record as ``decode_batch`` sees it."""

    data: bytes | None
    place: tuple[str, int, int] = ("mqtt-messages", 2, 41)
    millis: int = 1_800_000_000_250
    timestamp_type: int = 1  # create time

    def value(self) -> bytes | None:
        return self.data

    def topic(self) -> str:
        return self.place[0]

    def partition(self) -> int:
        return self.place[1]

    def offset(self) -> int:
        return self.place[2]

    def timestamp(self) -> tuple[int, int]:
        return self.timestamp_type, self.millis


times = st.floats(min_value=0, max_value=1e11, allow_nan=False)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
device_ids = st.text(
    st.characters(blacklist_characters="+#/\x7f", blacklist_categories=("Cc", "Cs")),
    min_size=1,
    max_size=MAX_DEVICE_ID,
).map(DeviceId.parse)
reading_events = st.builds(
    Reading, device_ids, st.dictionaries(st.text(), json_values), times, times
)
raw_events = st.builds(RawMessage, st.text(), st.binary(), times)
rejected_events = st.builds(
    Rejected,
    st.text(),
    st.binary(max_size=REJECTED_PAYLOAD_KEEP),
    st.integers(min_value=0, max_value=2**31),
    st.text(),
    st.text(),
    times,
)
reply_events = st.builds(
    CommandReply,
    device_ids,
    st.text(),
    st.sampled_from(REPORTS),
    json_values,
    st.none() | st.text(),
    times,
)
events = reading_events | raw_events | rejected_events | reply_events
Event = Reading | RawMessage | Rejected | CommandReply


@given(events)
def test_every_event_round_trips(event: Event) -> None:
    key, value, _ = encode(event)
    assert decode(value) == event
    by_device = isinstance(event, Reading | CommandReply)
    expected_key = event.device_id if by_device else event.topic  # type: ignore[union-attr]
    assert key == expected_key.encode()


@given(st.lists(events, max_size=20))
def test_a_batch_round_trips_in_events_order(items: list[Event]) -> None:
    batch = Batch.from_events(items)
    records = encode_batch(batch)
    live = [*batch.readings, *batch.raw, *batch.replies]
    assert [decode(value) for _, value, _ in records.live] == live
    assert [decode(value) for _, value, _ in records.deadletter] == batch.rejected
    both = [*records.live, *records.deadletter]
    assert decode_batch(Record(value) for _, value, _ in both) == batch


@given(st.lists(events, max_size=40), st.integers(min_value=1, max_value=6))
def test_packed_readings_round_trip_in_each_devices_order(items: list[Event], n: int) -> None:
    batch = Batch.from_events(items)
    records = encode_batch(batch, partitions=n)
    by_partition: dict[int, list[Reading]] = {}
    for key, value, partition in records.live:
        events = decode_all(value)
        VALIDATOR.validate(orjson.loads(value))
        if len(events) > 1:
            assert key is None
        for event in events:
            if isinstance(event, Reading):
                assert partition == partition_of(event.device_id, n)
                by_partition.setdefault(partition, []).append(event)
    assert len(by_partition) == len({partition_of(r.device_id, n) for r in batch.readings})
    decoded = decode_batch(Record(value) for _, value, _ in [*records.live, *records.deadletter])
    assert (decoded.raw, decoded.replies, decoded.rejected) == (
        batch.raw,
        batch.replies,
        batch.rejected,
    )
    for device in {r.device_id for r in batch.readings}:
        assert [r for r in decoded.readings if r.device_id == device] == [
            r for r in batch.readings if r.device_id == device
        ]


def test_a_packed_record_stops_at_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_codec, "PACK_BYTES", 400)
    readings = [
        Reading("robot-1", {"x": float(n), "pad": "-" * 50}, T0 + n, T0 + n) for n in range(20)
    ]
    records = encode_batch(Batch(readings=readings), partitions=1).live
    assert len(records) > 3
    assert all(len(value) <= 400 for _, value, _ in records)
    assert [e for _, value, _ in records for e in decode_all(value)] == readings
    assert {orjson.loads(value)["k"] for _, value, _ in records} == {COLUMNS}
    one = encode_batch(Batch(readings=readings[:1]), partitions=1).live
    assert one == [(b"robot-1", encode(readings[0])[1], 0)]  # a lone reading, keyed


def test_kafkas_murmur2() -> None:
    # Utils.murmur2 of the Java client, as unsigned 32 bits.
    assert murmur2(b"21") == -973932308 & 0xFFFFFFFF
    assert murmur2(b"") == 275646681


VALIDATOR = Draft202012Validator(schema())


@given(events)
def test_every_record_matches_the_published_schema(event: Event) -> None:
    _, value, _ = encode(event)
    VALIDATOR.validate(orjson.loads(value))


def test_the_schema_and_the_record_table_cover_every_kind_of_event() -> None:
    Draft202012Validator.check_schema(schema())
    assert {kind.type for kind in RECORDS} == set(EVENT_KINDS.values())
    codes = {
        definition["properties"]["k"]["const"]
        for definition in schema()["$defs"].values()
        if "properties" in definition
    }
    assert codes == {kind.code for kind in RECORDS} | {COLUMNS, READINGS}
    assert len(schema()["oneOf"]) == len(RECORDS) + 2


@pytest.mark.parametrize(
    "value",
    [
        {"k": "r", "id": "a/b", "ts": 1, "at": 1, "f": {}},
        {"k": "r", "id": "", "ts": 1, "at": 1, "f": {}},
        {"k": "r", "id": "a", "ts": 1, "at": 1, "f": []},
        {"k": "m", "tp": "t", "at": 1},
        {"k": "x", "tp": "t", "pl": "", "n": -1, "why": "", "msg": "", "at": 1},
        {"k": "c", "id": "a", "cmd": "c1", "st": "done", "res": None, "err": None, "at": 1},
        {"k": "c", "id": "a", "cmd": "c1", "st": "failed", "res": None, "err": 5, "at": 1},
    ],
)
def test_the_schema_refuses_what_is_not_a_record(value: dict[str, Any]) -> None:
    assert not VALIDATOR.is_valid(value)


def test_the_envelope_is_compact_json() -> None:
    _, value, _ = encode(Reading("robot1", {"x": 1.5, "y": -2.0}, T0, T0 + 0.5))
    assert orjson.loads(value) == {
        "k": "r",
        "id": "robot1",
        "ts": T0,
        "at": T0 + 0.5,
        "f": {"x": 1.5, "y": -2.0},
    }
    _, value, _ = encode(RawMessage("test/hello", b"\xff\x00", T0))
    assert orjson.loads(value) == {"k": "m", "tp": "test/hello", "pl": "/wA=", "at": T0}


def test_unknown_keys_are_ignored_and_integer_times_accepted() -> None:
    value = orjson.dumps({"k": "r", "id": "r1", "ts": 5, "at": 6, "f": {}, "later": 1})
    assert decode(value) == Reading("r1", {}, 5.0, 6.0)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (None, "no value"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"x": 1}', "no 'k' key"),
        (b'{"k": "z"}', "unknown kind 'z'"),
        (b'{"k": "r", "id": "a", "ts": 1, "at": 1}', "no 'f' key"),
        (b'{"k": "r", "id": 7, "ts": 1, "at": 1, "f": {}}', "'id' is not a string"),
        (b'{"k": "r", "id": "a/b", "ts": 1, "at": 1, "f": {}}', "'id': device id contains"),
        (b'{"k": "r", "id": "a", "ts": "1", "at": 1, "f": {}}', "'ts' is not a number"),
        (b'{"k": "r", "id": "a", "ts": true, "at": 1, "f": {}}', "'ts' is not a number"),
        (b'{"k": "r", "id": "a", "ts": 1, "at": 1, "f": []}', "'f' is not an object"),
        (b'{"k": "m", "tp": "t", "pl": "not base64!", "at": 1}', "'pl' is not base64"),
        (b'{"k": "x", "tp": "t", "pl": "", "n": 1.5, "why": "", "msg": "", "at": 1}', "'n'"),
        (
            b'{"k": "c", "id": "a", "cmd": "c", "st": "done", "res": 1, "err": null, "at": 1}',
            "'st' is not one of",
        ),
        (
            b'{"k": "c", "id": "a", "cmd": "c", "st": "failed", "res": 1, "err": 2, "at": 1}',
            "'err' is neither",
        ),
        (
            b'{"k": "c", "id": "a", "cmd": 1, "st": "failed", "res": 1, "err": null, "at": 1}',
            "'cmd'",
        ),
    ],
)
def test_what_is_not_an_event_is_refused_with_the_reason(value: bytes | None, detail: str) -> None:
    with pytest.raises(UndecodableRecord, match=detail):
        decode(value)
    with pytest.raises(UndecodableRecord, match=detail):
        decode_all(value)


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (b'{"k": "R"}', "'r' is not a list"),
        (b'{"k": "R", "r": []}', "'r' is not a list"),
        (b'{"k": "R", "r": [1]}', "not an object"),
        (b'{"k": "R", "r": [{"id": "a", "ts": 1, "at": 1}]}', "has no 'f' key"),
        (b'{"k": "R", "r": [{"id": "a/b", "ts": 1, "at": 1, "f": {}}]}', "'id': device id"),
    ],
)
def test_a_packed_record_with_anything_but_readings_is_refused(value: bytes, detail: str) -> None:
    with pytest.raises(UndecodableRecord, match=detail):
        decode_all(value)


def columns(**changed: Any) -> bytes:
    good: dict[str, Any] = {"id": ["a", "b"], "ts": [1.5, 2], "at": [3, 4.5], "f": [{}, {"x": 1}]}
    return orjson.dumps({"k": COLUMNS, "c": {**good, **changed}})


def test_readings_in_columns_decode_in_order_with_integer_times_as_floats() -> None:
    assert decode_all(columns()) == [
        Reading("a", {}, 1.5, 3.0),
        Reading("b", {"x": 1}, 2.0, 4.5),
    ]
    assert all(type(r.timestamp) is float for r in decode_all(columns()))  # type: ignore[union-attr]


def test_a_batch_records_each_events_position_beside_it_kind_by_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafka_codec, "_KNOWN_IDS", {})  # no id checked before
    raw = RawMessage("other/topic", b"{}", T0)
    records = [
        Record(columns(), ("mqtt-messages", 0, 7)),
        Record(encode(raw)[1], ("mqtt-messages", 1, 3)),
        Record(b"#", ("mqtt-messages", 1, 4)),
        Record(columns(id=["c", "a"]), ("mqtt-messages", 0, 8)),
    ]
    positions: dict[type[Any], list[Position]] = {}
    batch = decode_batch(records, positions)
    # The second record of ids "a" and "c" decodes "a" as already checked, "c" as new.
    assert batch.readings == [
        Reading("a", {}, 1.5, 3.0),
        Reading("b", {"x": 1}, 2.0, 4.5),
        Reading("c", {}, 1.5, 3.0),
        Reading("a", {"x": 1}, 2.0, 4.5),
    ]
    assert batch.raw == [raw]
    assert [letter.topic for letter in batch.rejected] == ["kafka:mqtt-messages-1@4"]
    assert positions == {
        Reading: [Position("mqtt-messages-0", 7)] * 2 + [Position("mqtt-messages-0", 8)] * 2,
        RawMessage: [Position("mqtt-messages-1", 3)],
        Rejected: [Position("mqtt-messages-1", 4)],
    }


@pytest.mark.parametrize(
    ("value", "detail"),
    [
        (b'{"k": "C"}', "no 'c' key"),
        (b'{"k": "C", "c": [1]}', "'c' is not an object"),
        (b'{"k": "C", "c": {"id": ["a"], "ts": [1], "at": [1]}}', "no 'f' key"),
        (columns(f={}), "are not all lists"),
        (columns(id=[], ts=[], at=[], f=[]), "empty or not of one length"),
        (columns(at=[1]), "empty or not of one length"),
        (columns(id=["a", 7]), "'id' of 'c' holds something that is not a string"),
        (columns(id=["a", "b/c"]), "'id': device id contains"),
        (columns(ts=[1, "2"]), "'ts' of 'c' holds something that is not a number"),
        (columns(at=[True, 1]), "'at' of 'c' holds something that is not a number"),
        (columns(f=[{}, []]), "'f' of 'c' holds something that is not an object"),
    ],
)
def test_readings_in_columns_that_do_not_line_up_are_refused(value: bytes, detail: str) -> None:
    with pytest.raises(UndecodableRecord, match=detail):
        decode_all(value)


def test_readings_one_object_each_as_earlier_bridges_wrote_them_still_decode() -> None:
    readings = [Reading("a", {"x": 1.0}, T0, T0 + 1), Reading("b", {}, T0 + 2, T0 + 3)]
    value = orjson.dumps(
        {
            "k": READINGS,
            "r": [
                {"id": r.device_id, "ts": r.timestamp, "at": r.received_at, "f": r.fields}
                for r in readings
            ],
        }
    )
    VALIDATOR.validate(orjson.loads(value))
    assert decode_all(value) == readings


@given(st.binary() | json_values.map(orjson.dumps))
def test_decoding_anything_raises_nothing_but_undecodable_record(value: Any) -> None:
    with contextlib.suppress(UndecodableRecord):
        decode(value)
    with contextlib.suppress(UndecodableRecord):
        decode_all(value)


def test_an_undecodable_record_becomes_a_dead_letter_naming_its_place() -> None:
    good = Reading("a", {"x": 1.0}, T0, T0)
    garbage = b"#" * (REJECTED_PAYLOAD_KEEP + 10)
    batch = decode_batch([Record(encode(good)[1]), Record(garbage)])
    assert batch.readings == [good]
    assert batch.rejected == [
        Rejected(
            "kafka:mqtt-messages-2@41",
            garbage[:REJECTED_PAYLOAD_KEEP],
            len(garbage),
            UNDECODABLE,
            batch.rejected[0].detail,
            1_800_000_000.25,
        )
    ]
    assert batch.rejected[0].detail.startswith("not JSON")


def test_a_record_without_timestamp_is_dated_now() -> None:
    [letter] = decode_batch([Record(b"?", timestamp_type=0, millis=-1)]).rejected
    assert abs(letter.received_at - time.time()) < 60


def test_payloads_are_standard_base64() -> None:
    payload = bytes(range(256))
    _, value, _ = encode(RawMessage("t", payload, T0))
    assert base64.b64decode(orjson.loads(value)["pl"]) == payload
