"""The lake contract, written once. A backend's test module subclasses ``LakeSuite`` and
provides a ``location`` fixture: ``(url, storage_options)`` of a lake of its own (an empty
directory, or a fresh prefix in a bucket); the suite opens ``DeltaLake`` instances on it."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from iotstream.lake import RAW_MESSAGES, READINGS, REJECTED, TABLES, RawQuery, ReadingQuery
from iotstream.lake.base import READING_SCHEMA, reading_rows
from iotstream.lake.delta import DeltaLake
from iotstream.models import Batch, DeviceId, RawMessage, Reading, Rejected

Location = tuple[str, Mapping[str, str] | None]

DAY = 86_400.0
T0 = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
MIDNIGHT = T0 - T0 % DAY
EVERYTHING = ReadingQuery(0, 4e9, limit=1_000_000)


def reading(device: str, ts: float, **fields: Any) -> Reading:
    return Reading(DeviceId(device), dict(fields), ts, ts + 0.25)


def point(device: str, ts: float, x: float, y: float) -> Reading:
    return reading(device, ts, x=x, y=y)


def row(r: Reading) -> dict[str, Any]:
    """The row the lake gives back for ``r``."""
    return {"deviceId": r.device_id, "timestamp": r.timestamp, "receivedAt": r.received_at,
            **r.fields}  # fmt: skip


def key(r: dict[str, Any]) -> tuple[float, str, float]:
    return (r["timestamp"], r["deviceId"], r["receivedAt"])


def table(lake: DeltaLake, name: str) -> DeltaTable:
    return DeltaTable(lake.uri(name), storage_options=lake.storage_options)


def day_of(path: str) -> str:
    return path.split("date=")[1].split("/")[0]


class LakeSuite:
    @pytest.fixture
    async def lake(self, location: Location) -> AsyncIterator[DeltaLake]:
        url, options = location
        async with DeltaLake(url, options, vacuum_retention_hours=0) as lake:
            yield lake

    async def test_every_kind_reads_back_exactly(self, lake: DeltaLake) -> None:
        fields = {
            "x": 0.1 + 0.2,
            "y": -1e-300,
            "z": 12345.678901234567,
            "heading": 90,
            "big": 2**63 - 1,
            "huge": 2**70,
            "nested": {"a": [1, 2.5, None, {"b": "c"}], "": {}},
            'we"ird': True,
            "ünï cödé": "é\u2028\n",
            "a.b c[0]": None,
            "tail\\": [],
        }
        readings = [
            Reading(DeviceId('r"1\\ é'), fields, T0 + 0.123456, T0 + 0.5),
            reading("r2", T0 + 1, x=5, y="north"),  # an int and a string where floats go
            reading("r3", T0 + 2, motorRPM=1500),  # no coordinates at all
        ]
        raw = [
            RawMessage("test/hello", b"\x00\xff\n{binary", T0 + 3),
            RawMessage("test/empty", b"", T0 + 4),
        ]
        rejected = [
            Rejected("sensors/a/coordinates", b"\x00bad\xff", 5000, "invalid_json", "é\n", T0 + 5)
        ]
        await lake.append(Batch(readings=readings, raw=raw, rejected=rejected))

        got = await lake.readings(EVERYTHING)
        assert got == [row(r) for r in readings]
        assert list(got[0]) == ["deviceId", "timestamp", "receivedAt", "x", "y", "z",
                                "heading", "big", "huge", "nested", 'we"ird', "ünï cödé",
                                "a.b c[0]", "tail\\"]  # fmt: skip
        assert type(got[1]["x"]) is int and got[1]["y"] == "north"
        assert "x" not in got[2]

        raws = await lake.raw_messages(RawQuery(0, 4e9))
        assert raws == [
            {"topic": m.topic, "payload": m.payload, "receivedAt": m.received_at} for m in raw
        ]
        stored = table(lake, REJECTED).to_pyarrow_table().to_pylist()
        assert [
            (r["topic"], r["payload"], r["size"], r["reason"], r["detail"], r["received_at"])
            for r in stored
        ] == [
            ("sensors/a/coordinates", b"\x00bad\xff", 5000, "invalid_json", "é\n",
             datetime.fromtimestamp(T0 + 5, UTC)),
        ]  # fmt: skip

    async def test_columns_are_typed_and_other_fields_share_one_column(
        self, lake: DeltaLake
    ) -> None:
        await lake.append(Batch(readings=[reading("r1", T0, x=1.5, y=2.5, speed=3)]))
        schema = table(lake, READINGS).schema().to_arrow()
        assert [(f.name, str(f.type)) for f in pa.schema(schema)] == [
            ("device_id", "string"),
            ("ts", "timestamp[us, tz=UTC]"),
            ("received_at", "timestamp[us, tz=UTC]"),
            ("x", "double"),
            ("y", "double"),
            ("z", "double"),
            ("fields", "string"),
            ("date", "date32[day]"),
        ]
        rows = table(lake, READINGS).to_pyarrow_table().to_pylist()
        assert rows == [
            {
                "device_id": "r1",
                "ts": datetime.fromtimestamp(T0, UTC),
                "received_at": datetime.fromtimestamp(T0 + 0.25, UTC),
                "x": 1.5,
                "y": 2.5,
                "z": None,
                "fields": '{"speed":3}',
                "date": datetime.fromtimestamp(T0, UTC).date(),
            }
        ]

    async def test_rows_come_in_time_then_device_order(self, lake: DeltaLake) -> None:
        readings = [point(d, T0 + s, s, 0) for s in (5, 1, 3) for d in ("b", "a")]
        await lake.append(Batch(readings=readings[:3]))
        await lake.append(Batch(readings=readings[3:]))
        got = await lake.readings(EVERYTHING)
        assert [(r["timestamp"] - T0, r["deviceId"]) for r in got] == [
            (1, "a"), (1, "b"), (3, "a"), (3, "b"), (5, "a"), (5, "b"),
        ]  # fmt: skip

    async def test_device_time_and_rect_filters(self, lake: DeltaLake) -> None:
        readings = [point(d, T0 + s, float(s), float(-s)) for s in range(10) for d in "abc"]
        await lake.append(Batch(readings=readings))
        window = await lake.readings(ReadingQuery(T0 + 2, T0 + 4, devices=["a", "c"]))
        assert [(r["deviceId"], r["x"]) for r in window] == [
            ("a", 2.0), ("c", 2.0), ("a", 3.0), ("c", 3.0), ("a", 4.0), ("c", 4.0),
        ]  # fmt: skip
        rect = await lake.readings(ReadingQuery(T0, T0 + 100, rect=(6.5, -8.5, 8.5, 0)))
        assert [(r["deviceId"], r["x"], r["y"]) for r in rect] == [
            (d, x, -x) for x in (7.0, 8.0) for d in "abc"
        ]
        assert await lake.readings(ReadingQuery(T0, T0 + 100, devices=["nobody"])) == []
        assert await lake.readings(ReadingQuery(T0, T0 + 100, devices=[])) == []
        assert await lake.readings(ReadingQuery(T0 + 100, T0 + 200)) == []
        limited = await lake.readings(ReadingQuery(T0, T0 + 100, devices=["b"], limit=3))
        assert [r["x"] for r in limited] == [0.0, 1.0, 2.0]
        topics = [RawMessage(f"t/{n % 2}", bytes([n]), T0 + n) for n in range(6)]
        await lake.append(Batch(raw=topics))
        one = await lake.raw_messages(RawQuery(T0 + 1, T0 + 4, topic="t/1"))
        assert [m["payload"] for m in one] == [b"\x01", b"\x03"]

    async def test_keyset_pages_stay_stable_while_rows_arrive(self, lake: DeltaLake) -> None:
        first = [point(d, T0 + s, s, 0) for s in range(0, 10, 2) for d in "ab"]
        await lake.append(Batch(readings=first))
        page = await lake.readings(ReadingQuery(T0, T0 + 100, limit=4))
        assert [key(r) for r in page] == [key(row(r)) for r in sorted(first, key=_order)[:4]]
        # Arrivals before the cursor (late) and after it, and one on the cursor's own second.
        later = [point("c", T0 + 1, 1, 0), point("c", T0 + 2, 2, 0), point("c", T0 + 7, 7, 0)]
        await lake.append(Batch(readings=later))
        seen = list(page)
        while page:
            last = page[-1]
            page = await lake.readings(ReadingQuery(T0, T0 + 100, after=key(last), limit=4))
            seen.extend(page)
        # The pages that follow hold exactly what sorts after the first page, new rows included;
        # late rows that sort before the cursor are not repeated into them.
        cursor = key(seen[3])
        expected = [key(row(r)) for r in sorted(first + later, key=_order)]
        assert [key(r) for r in seen[4:]] == [k for k in expected if k > cursor]
        assert (T0 + 7, "c", T0 + 7.25) in [key(r) for r in seen]
        assert len({key(r) for r in seen}) == len(seen)  # nothing twice
        raws = [RawMessage(t, b"p", T0 + s) for s in range(3) for t in ("b", "a")]
        await lake.append(Batch(raw=raws))
        pages, after = [], None
        while True:
            got = await lake.raw_messages(RawQuery(T0, T0 + 10, after=after, limit=4))
            if not got:
                break
            pages.append([(m["receivedAt"] - T0, m["topic"]) for m in got])
            after = (got[-1]["receivedAt"], got[-1]["topic"])
        assert pages == [[(0, "a"), (0, "b"), (1, "a"), (1, "b")], [(2, "a"), (2, "b")]]

    async def test_late_readings_appear_at_their_device_time(self, lake: DeltaLake) -> None:
        await lake.append(Batch(readings=[point("r1", T0 + s, s, 0) for s in (10, 20)]))
        yesterday = T0 - DAY
        await lake.append(
            Batch(readings=[point("r1", T0 + 15, 15, 0), point("r1", yesterday, -1, 0)])
        )
        got = await lake.readings(ReadingQuery(yesterday, T0 + 100))
        assert [r["x"] for r in got] == [-1, 10, 15, 20]
        days = sorted({day_of(path) for path in table(lake, READINGS).file_uris()})
        assert days == ["2027-01-14", "2027-01-15"]

    async def test_transactions_are_recorded_and_read_back_per_table(
        self, lake: DeltaLake, location: Location
    ) -> None:
        for name in TABLES:
            assert await lake.versions(name) == {}
        await lake.append(Batch(readings=[point("r1", T0, 1, 1)]), {"bus/0": 10, "bus/1": 5})
        # Nothing but raw messages: readings and rejected move too.
        await lake.append(Batch(raw=[RawMessage("t", b"p", T0)]), {"bus/0": 11})
        await lake.append(Batch(), {"bus/2": 1})
        expected = {"bus/0": 11, "bus/1": 5, "bus/2": 1}
        for name in TABLES:
            assert await lake.versions(name) == expected
            # One commit per append, each with its rows and its transactions.
            assert table(lake, name).version() == 3
        # Past a checkpoint, another process sees them too.
        for name in TABLES:
            table(lake, name).create_checkpoint()
        await lake.append(Batch(readings=[point("r1", T0 + 1, 1, 1)]), {"bus/1": 6})
        url, options = location
        async with DeltaLake(url, options) as other:
            for name in TABLES:
                assert await other.versions(name) == {**expected, "bus/1": 6}
            assert len(await other.readings(EVERYTHING)) == 2

    async def test_new_fields_need_no_migration_and_never_grow_the_schema(
        self, lake: DeltaLake
    ) -> None:
        schema = table(lake, READINGS).schema().to_json()
        await lake.append(Batch(readings=[reading("r1", T0, x=1.0, y=1.0)]))
        many = [reading("r1", T0 + 1 + n / 10_000, **{f"f{n}": n}) for n in range(5000)]
        many.append(reading("r1", T0 + 2, **{f"g{n}": float(n) for n in range(5000)}))
        await lake.append(Batch(readings=many))
        assert table(lake, READINGS).schema().to_json() == schema
        got = await lake.readings(EVERYTHING)
        assert len(got) == 5002
        assert got[1 + 4321] == row(many[4321])
        assert got[-1] == row(many[-1])

    async def test_compaction_keeps_every_row_in_fewer_files(self, lake: DeltaLake) -> None:
        sent = []
        for n in range(12):
            batch = [point(f"r{d}", T0 + n + d / 10, n, d) for d in range(5)]
            batch.append(point("r0", T0 - DAY + n, n, 0))  # and a second day
            sent.extend(batch)
            await lake.append(Batch(readings=batch, raw=[RawMessage("t", bytes([n]), T0 + n)]))
        before = await lake.readings(EVERYTHING)
        assert len(before) == len(sent)
        assert len(table(lake, READINGS).file_uris()) == 24
        await lake.compact()
        files = table(lake, READINGS).file_uris()
        assert sorted(day_of(f) for f in files) == ["2027-01-14", "2027-01-15"]
        assert len(table(lake, RAW_MESSAGES).file_uris()) == 1
        today = table(lake, READINGS).to_pyarrow_dataset(
            file_pruning_predicate=[("date", "=", "2027-01-15")]
        )
        stored = today.to_table(columns=["device_id", "ts"]).to_pylist()
        assert len(stored) == 60
        assert [(r["device_id"], r["ts"]) for r in stored] == sorted(
            (r["device_id"], r["ts"]) for r in stored
        )  # one file, sorted by device and time
        assert await lake.readings(EVERYTHING) == before
        assert len(await lake.raw_messages(RawQuery(0, 4e9))) == 12
        ours = ReadingQuery(T0 + 3, T0 + 5, devices=["r2"])
        assert [r["x"] for r in await lake.readings(ours)] == [3, 4]

    async def test_compaction_runs_while_appending(self, lake: DeltaLake) -> None:
        appended = 0

        async def append_many() -> None:
            nonlocal appended
            for n in range(30):
                rows = [point(f"r{d}", T0 + n + d / 100, n, d) for d in range(20)]
                await lake.append(Batch(readings=rows), {"bus/0": n})
                appended += len(rows)

        async def compact_often() -> int:
            runs = 0
            while appended < 600:
                await lake.compact()
                runs += 1
                await asyncio.sleep(0)
            return runs

        _, runs = await asyncio.gather(append_many(), compact_often())
        assert runs >= 2
        got = await lake.readings(EVERYTHING)
        assert len(got) == 600 and len({key(r) for r in got}) == 600
        assert await lake.versions(READINGS) == {"bus/0": 29}
        await lake.compact()
        assert len(table(lake, READINGS).file_uris()) == 1
        assert len(await lake.readings(EVERYTHING)) == 600

    async def test_appends_of_two_processes_interleave_without_losing_rows(
        self, lake: DeltaLake, location: Location
    ) -> None:
        # Each lake keeps the table it appends through; every append of the other moves the
        # table past what that one last saw.
        url, options = location
        async with DeltaLake(url, options) as other:
            for n in range(6):
                ours = [point("r1", T0 + n, n, 1)]
                theirs = [point("r2", T0 + n, n, 2)]
                await lake.append(Batch(readings=ours), {"ours/0": n})
                await other.append(Batch(readings=theirs), {"theirs/0": n})
            assert await other.versions(READINGS) == {"ours/0": 5, "theirs/0": 5}
        got = await lake.readings(EVERYTHING)
        assert sorted((r["deviceId"], r["timestamp"]) for r in got) == sorted(
            (device, T0 + n) for device in ("r1", "r2") for n in range(6)
        )
        assert table(lake, READINGS).version() == 12

    async def test_expire_drops_whole_old_days(self, lake: DeltaLake) -> None:
        days = [MIDNIGHT - 2 * DAY, MIDNIGHT - DAY, MIDNIGHT]
        await lake.append(
            Batch(
                readings=[point("r1", day + 3600, n, 0) for n, day in enumerate(days)],
                raw=[RawMessage("t", bytes([n]), day + 60) for n, day in enumerate(days)],
                rejected=[Rejected("t", b"", 0, "r", "d", day) for day in days],
            )
        )
        # The middle day ends at MIDNIGHT, not before MIDNIGHT - 1: it stays.
        await lake.expire(MIDNIGHT - 1)
        assert [r["x"] for r in await lake.readings(EVERYTHING)] == [1, 2]
        await lake.expire(MIDNIGHT + 3600)
        assert [r["x"] for r in await lake.readings(EVERYTHING)] == [2]
        assert [m["payload"] for m in await lake.raw_messages(RawQuery(0, 4e9))] == [b"\x02"]
        assert table(lake, REJECTED).to_pyarrow_table().num_rows == 1

    async def test_tables_stay_readable_by_spark(self, lake: DeltaLake) -> None:
        await lake.append(Batch(readings=[point("r1", T0, 1, 1)], raw=[RawMessage("t", b"", T0)]))
        await lake.compact()
        await lake.expire(T0 - DAY)
        for name in TABLES:
            dt = table(lake, name)
            protocol = dt.protocol()
            assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
            assert not protocol.reader_features and not protocol.writer_features
            assert dt.metadata().partition_columns == ["date"]
            assert "delta.enableDeletionVectors" not in dt.metadata().configuration

    async def test_reading_batches_are_the_rows_as_arrow_columns(self, lake: DeltaLake) -> None:
        readings = [point(d, T0 + s / 10, float(s), float(-s)) for s in range(25) for d in "ab"]
        readings += [
            reading("a", T0 + 0.05, x=5, y="north", heading=90),  # an int, a string
            reading("b", T0 + 0.15, nested={"deep": [1, None]}),  # no coordinates
        ]
        await lake.append(Batch(readings=readings[:20]))
        await lake.append(Batch(readings=readings[20:]))
        await lake.compact()
        query = ReadingQuery(T0, T0 + 100, limit=1_000)

        async def tables(query: ReadingQuery, rows: int) -> list[pa.Table]:
            return [t async for t in lake.reading_batches(query, rows)]

        got = await tables(query, 7)
        assert [t.num_rows for t in got[:-1]] == [7] * (len(got) - 1)
        assert sum(t.num_rows for t in got) == len(readings)
        assert all(t.schema == READING_SCHEMA for t in got)
        whole = pa.concat_tables(got)
        assert reading_rows(whole) == await lake.readings(query)
        assert [key(r) for r in reading_rows(whole)] == sorted(key(row(r)) for r in readings)
        odd = reading_rows(whole)[2]
        assert odd == row(readings[-2]) and type(odd["x"]) is int
        assert whole.column("x")[2].as_py() == 5.0  # the int is its column too
        assert whole.column("y")[2].as_py() is None  # the string is not
        assert whole.column("fields")[0].as_py() is None  # nothing but coordinates
        # Limit, cursor, device and rect filters as readings() has them; nothing, no table.
        after = key(reading_rows(whole)[9])
        paged = await tables(ReadingQuery(T0, T0 + 100, after=after, limit=5, devices=["b"]), 2)
        assert [key(r) for r in reading_rows(pa.concat_tables(paged))] == [
            key(r) for r in await lake.readings(ReadingQuery(T0, T0 + 100, ["b"], None, after, 5))
        ]
        assert [t.num_rows for t in paged] == [2, 2, 1]
        assert await tables(ReadingQuery(T0 + 200, T0 + 300), 10) == []
        assert await tables(ReadingQuery(T0, T0 + 100, devices=[]), 10) == []
        rect = await tables(ReadingQuery(T0, T0 + 100, rect=(1.5, -3.5, 3.5, 0)), 10)
        assert pa.concat_tables(rect).column("x").to_pylist() == [2, 2, 3, 3]

    async def test_reading_batches_stop_early_without_harm(self, lake: DeltaLake) -> None:
        await lake.append(Batch(readings=[point("a", T0 + s, s, 0) for s in range(50)]))
        batches = lake.reading_batches(EVERYTHING, 10)
        first = await anext(batches)
        await batches.aclose()
        assert first.num_rows == 10
        assert len(await lake.readings(EVERYTHING)) == 50

    async def test_microseconds_are_kept(self, lake: DeltaLake) -> None:
        ts = [T0 + 0.000001, T0 + 0.999999, 1_000_000_000.123456, 0.0]
        await lake.append(Batch(readings=[point("r1", t, 0, 0) for t in ts]))
        got = await lake.readings(EVERYTHING)
        assert [r["timestamp"] for r in got] == sorted(ts)
        assert all(math.isclose(r["receivedAt"] - r["timestamp"], 0.25) for r in got)


def _order(r: Reading) -> tuple[float, str, float]:
    return (r.timestamp, r.device_id, r.received_at)
