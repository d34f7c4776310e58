"""The values of the pipeline: device ids checked once, batches grouped by the table of kinds."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from iotstream.errors import InvalidDeviceId
from iotstream.models import (
    EVENT_KINDS,
    MAX_DEVICE_ID,
    Batch,
    CommandReply,
    DeviceId,
    RawMessage,
    Reading,
    Rejected,
)
from iotstream.parser import Parser

T0 = 1_800_000_000.0


@pytest.mark.parametrize("text", ["robot1", "r-1_ä", "a" * MAX_DEVICE_ID, "with space"])
def test_a_device_id_is_any_short_text_that_fits_one_topic_level(text: str) -> None:
    device_id = DeviceId.parse(text)
    assert type(device_id) is DeviceId and device_id == text
    assert DeviceId.parse(device_id) is device_id  # checked once


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("a" * (MAX_DEVICE_ID + 1), "longer than 128"),
        ("a/b", "'/'"),
        ("a+", "'+'"),
        ("#", "'#'"),
        ("a\x00b", "control"),
        ("a\x7f", "control"),
    ],
)
def test_what_cannot_name_a_device_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(InvalidDeviceId) as caught:
        DeviceId.parse(text)
    assert why.strip("'") in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_pydantic_validates_a_device_id_with_the_same_rule() -> None:
    adapter = TypeAdapter(DeviceId)
    assert type(adapter.validate_python("r1")) is DeviceId
    with pytest.raises(ValidationError, match="'/'"):
        adapter.validate_python("a/b")


def test_the_parser_hands_on_checked_device_ids() -> None:
    batch = Parser().parse("sensors/robot7/coordinates", b'{"x": 1, "y": 2}', T0)
    [reading] = batch.readings
    assert type(reading.device_id) is DeviceId and reading.device_id == "robot7"
    again = Parser().parse_batch([("sensors/robot7/motorRPM", b"5", T0)] * 2)
    assert again.readings[0].device_id is again.readings[1].device_id


def test_a_batch_lists_every_kind_of_the_table_in_order() -> None:
    reading = Reading(DeviceId("r1"), {"x": 1.0}, T0, T0)
    raw = RawMessage("test/hello", b"hi", T0)
    rejected = Rejected("sensors/r1/coordinates", b"{", 1, "invalid_json", "not JSON", T0)
    reply = CommandReply(DeviceId("r1"), "c1", "delivered", None, None, T0)
    batch = Batch.from_events([reply, rejected, raw, reading, raw])
    assert list(EVENT_KINDS) == ["readings", "raw", "rejected", "replies"]
    assert batch.events() == [reading, raw, raw, rejected, reply]
    assert len(batch) == 5
    assert batch == Batch(readings=[reading], raw=[raw, raw], rejected=[rejected], replies=[reply])
    assert batch.of(RawMessage) is batch.raw
    merged = Batch(readings=[reading])
    merged.extend(batch)
    assert merged.readings == [reading, reading] and merged.rejected == [rejected]
    with pytest.raises(TypeError, match="acks"):
        Batch(acks=[])
