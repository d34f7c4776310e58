"""Events as Kafka records, and back.

A record's value is one compact JSON object (orjson) whose ``k`` names the kind;
its key keeps order where it matters, since Kafka orders records per key:

============  ==========  ====================================================================
kind          key         value
============  ==========  ====================================================================
Reading       device id   ``{"k":"r","id":device_id,"ts":timestamp,"at":received_at,"f":{...}}``
RawMessage    MQTT topic  ``{"k":"m","tp":topic,"pl":payload,"at":received_at}``
Rejected      MQTT topic  ``{"k":"x","tp":topic,"pl":payload,"n":size,"why":reason,``
                          ``"msg":detail,"at":received_at}``
============  ==========  ====================================================================

``ts`` and ``at`` are epoch seconds (JSON numbers), ``f`` the reading's fields as they are,
``pl`` the payload bytes in standard base64 so that any bytes round-trip exactly. Decoding
ignores keys it does not know, so a later writer may add some.

A value that is not such a record (someone else wrote to the topic) does not stop a
consumer: ``decode_batch`` turns it into a ``Rejected`` with reason ``undecodable_record``
whose topic names the record's place (``kafka:<topic>-<partition>@<offset>``), so it is
kept aside and counted like any other bad input and its offset is committed past.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from .models import REJECTED_PAYLOAD_KEEP, Batch, Event, RawMessage, Reading, Rejected

UNDECODABLE = "undecodable_record"

KafkaRecord = tuple[bytes, bytes]
"""``(key, value)`` of one record."""

# confluent_kafka's TIMESTAMP_NOT_AVAILABLE; Kafka itself fills the others in.
_NO_TIMESTAMP = 0


class UndecodableRecord(ValueError):
    """A record value that is not an encoded event."""


class ConsumedRecord(Protocol):
    """What ``decode_batch`` reads of a consumed record (``confluent_kafka.Message`` has it)."""

    def value(self) -> bytes | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...


def _b64(payload: bytes) -> str:
    return base64.b64encode(payload).decode("ascii")


def encode(event: Event) -> KafkaRecord:
    if isinstance(event, Reading):
        return event.device_id.encode(), orjson.dumps(
            {
                "k": "r",
                "id": event.device_id,
                "ts": event.timestamp,
                "at": event.received_at,
                "f": event.fields,
            }
        )
    if isinstance(event, RawMessage):
        return event.topic.encode(), orjson.dumps(
            {"k": "m", "tp": event.topic, "pl": _b64(event.payload), "at": event.received_at}
        )
    return event.topic.encode(), orjson.dumps(
        {
            "k": "x",
            "tp": event.topic,
            "pl": _b64(event.payload),
            "n": event.size,
            "why": event.reason,
            "msg": event.detail,
            "at": event.received_at,
        }
    )


def encode_batch(batch: Batch) -> list[KafkaRecord]:
    """The records of every event, in ``Batch.events()`` order (readings, raw, rejected)."""
    return [encode(event) for event in batch.events()]


def _text(document: dict[str, Any], key: str) -> str:
    value = document[key]
    if type(value) is not str:
        raise UndecodableRecord(f"{key!r} is not a string")
    return value


def _seconds(document: dict[str, Any], key: str) -> float:
    value = document[key]
    if type(value) is not float and type(value) is not int:
        raise UndecodableRecord(f"{key!r} is not a number")
    return float(value)


def _payload(document: dict[str, Any]) -> bytes:
    try:
        return base64.b64decode(_text(document, "pl"), validate=True)
    except binascii.Error:
        raise UndecodableRecord("'pl' is not base64") from None


def decode(value: bytes | None) -> Event:
    """The event a record value encodes; raises ``UndecodableRecord`` for anything else."""
    if value is None:
        raise UndecodableRecord("the record has no value")
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise UndecodableRecord(f"not JSON: {exc}") from None
    if type(document) is not dict:
        raise UndecodableRecord("not a JSON object")
    try:
        kind = document["k"]
        if kind == "r":
            fields = document["f"]
            if type(fields) is not dict:
                raise UndecodableRecord("'f' is not an object")
            return Reading(
                _text(document, "id"),
                fields,
                _seconds(document, "ts"),
                _seconds(document, "at"),
            )
        if kind == "m":
            return RawMessage(_text(document, "tp"), _payload(document), _seconds(document, "at"))
        if kind == "x":
            size = document["n"]
            if type(size) is not int:
                raise UndecodableRecord("'n' is not an integer")
            return Rejected(
                _text(document, "tp"),
                _payload(document),
                size,
                _text(document, "why"),
                _text(document, "msg"),
                _seconds(document, "at"),
            )
    except KeyError as exc:
        raise UndecodableRecord(f"no {exc.args[0]!r} key") from None
    raise UndecodableRecord(f"unknown kind {kind!r}")


def undecodable(record: ConsumedRecord, error: UndecodableRecord) -> Rejected:
    """The dead letter that stands for a record ``decode`` refused."""
    value = record.value() or b""
    kind, millis = record.timestamp()
    return Rejected(
        f"kafka:{record.topic()}-{record.partition()}@{record.offset()}",
        value[:REJECTED_PAYLOAD_KEEP],
        len(value),
        UNDECODABLE,
        str(error),
        millis / 1000 if kind != _NO_TIMESTAMP else time.time(),
    )


def decode_batch(records: Iterable[ConsumedRecord]) -> Batch:
    """One batch of the events in ``records``; see the module docstring for bad records."""
    batch = Batch()
    readings, raw, rejected = batch.readings, batch.raw, batch.rejected
    for record in records:
        try:
            event = decode(record.value())
        except UndecodableRecord as exc:
            rejected.append(undecodable(record, exc))
            continue
        if isinstance(event, Reading):
            readings.append(event)
        elif isinstance(event, RawMessage):
            raw.append(event)
        else:
            rejected.append(event)
    return batch
