"""The parser: every topic and payload shape of the wire, and no exception for any input."""

from __future__ import annotations

import json
import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iotstream.models import CommandReply, RawMessage, Reading, Rejected
from iotstream.parser import Parser

NOW = 1_800_000_000.0
parser = Parser()


def one(topic: str, payload: bytes) -> Reading | RawMessage | Rejected | CommandReply:
    batch = parser.parse(topic, payload, NOW)
    events = batch.events()
    assert len(events) == 1
    return events[0]


def test_reference_coordinates() -> None:
    event = one("sensors/robot1/coordinates", b'{"x": 123.45, "y": 67.89, "timestamp": 1691234567}')
    assert event == Reading("robot1", {"x": 123.45, "y": 67.89}, 1691234567.0, NOW)


def test_extra_fields_and_z_are_kept() -> None:
    event = one("sensors/r/coordinates", b'{"x": 1, "y": 2, "z": 3, "heading": 90, "mode": "auto"}')
    assert isinstance(event, Reading)
    assert event.fields == {"x": 1.0, "y": 2.0, "z": 3.0, "heading": 90, "mode": "auto"}
    assert event.timestamp == NOW  # no timestamp: the receive time


def test_millisecond_timestamps_are_normalised() -> None:
    event = one("sensors/r/coordinates", b'{"x": 1, "y": 2, "timestamp": 1691234567890}')
    assert isinstance(event, Reading)
    assert math.isclose(event.timestamp, 1691234567.89)


def test_reserved_fields_cannot_be_set_by_a_device() -> None:
    event = one("sensors/r/coordinates", b'{"x": 1, "y": 2, "deviceId": "other", "receivedAt": 5}')
    assert isinstance(event, Reading)
    assert event.device_id == "r"
    assert set(event.fields) == {"x", "y"}


def test_scalar_fields() -> None:
    assert one("sensors/robot1/coordX", b"123.45") == Reading("robot1", {"x": 123.45}, NOW, NOW)
    assert one("sensors/robot1/coordY", b"67.89") == Reading("robot1", {"y": 67.89}, NOW, NOW)
    assert one("sensors/robot1/coordZ", b"-1") == Reading("robot1", {"z": -1.0}, NOW, NOW)
    assert one("sensors/robot1/motorRPM", b"1500") == Reading(
        "robot1", {"motorRPM": 1500}, NOW, NOW
    )
    assert one("sensors/robot1/mode", b"docking") == Reading(
        "robot1", {"mode": "docking"}, NOW, NOW
    )


def test_other_topics_are_raw() -> None:
    assert one("test/hello", b"Hello World!") == RawMessage("test/hello", b"Hello World!", NOW)
    assert isinstance(one("sensors/robot1", b"1"), RawMessage)
    assert isinstance(one("sensors/a/b/c", b"1"), RawMessage)


def test_command_acks_and_results_are_replies() -> None:
    assert one("orin/robot1/command/ack", b'{"id": "c1", "status": "delivered"}') == CommandReply(
        "robot1", "c1", "delivered", None, None, NOW
    )
    assert one("orin/robot1/command/ack", b'{"id": "c1"}') == CommandReply(
        "robot1", "c1", "delivered", None, None, NOW
    )
    result = b'{"id": "c2", "status": "failed", "result": {"x": 1}, "error": "blocked"}'
    assert one("orin/robot1/command/result", result) == CommandReply(
        "robot1", "c2", "failed", {"x": 1}, "blocked", NOW
    )
    # The commands themselves, and anything else under orin/, stay raw messages.
    assert one("orin/robot1/command", b"tracking") == RawMessage(
        "orin/robot1/command", b"tracking", NOW
    )
    assert isinstance(one("orin/robot1/command/other", b"{}"), RawMessage)
    assert isinstance(one("orin/robot1/status", b"online"), RawMessage)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("orin/r/command/ack", b"delivered", "invalid_json"),
        ("orin/r/command/ack", b"[1]", "not_an_object"),
        ("orin/r/command/ack", b'{"status": "delivered"}', "invalid_reply"),
        ("orin/r/command/ack", b'{"id": 5}', "invalid_reply"),
        ("orin/r/command/ack", b'{"id": "c", "status": "succeeded"}', "invalid_reply"),
        ("orin/r/command/result", b'{"id": "c"}', "invalid_reply"),
        ("orin/r/command/result", b'{"id": "c", "status": "delivered"}', "invalid_reply"),
        ("orin/r/command/result", b'{"id": "c", "status": "failed", "error": 1}', "invalid_reply"),
        ("orin/a+b/command/result", b'{"id": "c", "status": "failed"}', "invalid_device_id"),
    ],
)
def test_a_reply_that_is_not_one_is_rejected(topic: str, payload: bytes, reason: str) -> None:
    assert rejected(topic, payload) == reason


def rejected(topic: str, payload: bytes) -> str:
    event = one(topic, payload)
    assert isinstance(event, Rejected), event
    assert event.detail
    return event.reason


def test_rejections_carry_a_reason() -> None:
    coords = "sensors/r/coordinates"
    assert rejected(coords, b"not json") == "invalid_json"
    assert rejected(coords, b"[1, 2]") == "not_an_object"
    assert rejected(coords, b"42") == "not_an_object"
    assert rejected(coords, b'{"x": "1", "y": 2}') == "invalid_coordinate"
    assert rejected(coords, b'{"x": true, "y": 2}') == "invalid_coordinate"
    assert rejected(coords, b'{"x": 1}') == "invalid_coordinate"
    # JSON has no infinity: an overflowing literal is refused as JSON already.
    assert rejected(coords, b'{"x": 1e999, "y": 2}') == "invalid_json"
    assert rejected(coords, b'{"x": 1, "y": 2, "z": null}') == "invalid_coordinate"
    assert rejected(coords, b'{"x": 1, "y": 2, "timestamp": "yesterday"}') == "invalid_timestamp"
    assert rejected("sensors/r/coordX", b"NaN") == "invalid_coordinate"
    assert rejected("sensors/r/coordX", b"left") == "invalid_coordinate"
    assert rejected("sensors/r/motorRPM", b"\xff\xfe") == "invalid_encoding"
    assert rejected("sensors/r/motorRPM", b'{"a": 1}') == "not_a_scalar"
    assert rejected("sensors/r/timestamp", b"1") == "reserved_field"


def test_device_id_rules() -> None:
    good = b'{"x": 1, "y": 2}'
    assert rejected("sensors//coordinates", good) == "invalid_device_id"
    assert rejected(f"sensors/{'a' * 129}/coordinates", good) == "invalid_device_id"
    assert rejected("sensors/a+b/coordinates", good) == "invalid_device_id"
    assert rejected("sensors/a#/coordinates", good) == "invalid_device_id"
    assert rejected("sensors/a\x01b/coordinates", good) == "invalid_device_id"
    assert isinstance(one(f"sensors/{'a' * 128}/coordinates", good), Reading)


def test_oversized_payloads_are_rejected_and_cut() -> None:
    small = Parser(max_payload=100)
    payload = orjson.dumps({"x": 1, "y": 2, "pad": "p" * 2000})
    (event,) = small.parse("sensors/r/coordinates", payload, NOW).events()
    assert isinstance(event, Rejected)
    assert event.reason == "payload_too_large"
    assert event.size == len(payload)
    assert len(event.payload) == 1024


def test_a_batch_keeps_going_past_bad_messages() -> None:
    batch = parser.parse_batch(
        [
            ("sensors/a/coordinates", b"{", NOW),
            ("sensors/a/coordinates", b'{"x": 1, "y": 2}', NOW),
            ("x/y", b"raw", NOW),
        ]
    )
    assert (len(batch.readings), len(batch.raw), len(batch.rejected)) == (1, 1, 1)


topics = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda d, f: f"sensors/{d}/{f}",
        st.text(max_size=10),
        st.sampled_from(["coordinates", "coordX", "coordY", "motorRPM", "timestamp"]),
    ),
)
json_like = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
payloads = st.one_of(
    st.binary(max_size=200),
    json_like.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {"x": json_like, "y": json_like}, optional={"timestamp": json_like, "z": json_like}
    ).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=400, deadline=None)
@given(topic=topics, payload=payloads)
def test_any_input_gives_exactly_one_event_and_never_raises(topic: str, payload: bytes) -> None:
    events = parser.parse(topic, payload, NOW).events()
    assert len(events) == 1
    event = events[0]
    if isinstance(event, Reading):
        for key in ("x", "y", "z"):
            if key in event.fields and topic.endswith("coordinates"):
                assert math.isfinite(event.fields[key])
        assert math.isfinite(event.timestamp)
    elif isinstance(event, Rejected):
        assert event.reason and event.size == len(payload)
