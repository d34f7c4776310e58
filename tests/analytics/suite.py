"""The analytics contract, written once. An engine's test module subclasses
``AnalyticsSuite`` and provides an ``engine`` fixture over ``lake_url`` (``conftest``): a
Delta lake holding the robots of ``scenarios``, appended out of order. Expected values are
worked out by hand from the paths (seconds after ``T0``; blocks of 2 s start at ``T0``)."""

from __future__ import annotations

import math

import pytest

from iotstream.analytics import (
    MODELS,
    AnalyticsEngine,
    MotionParams,
    Stop,
    Summary,
    Trip,
    Window,
)

from .scenarios import DEVICES, READINGS, T0, reference_heatmap

DEFAULT = MotionParams()
REL = 1e-9
EVERYTHING = Window(T0 - 60, T0 + 1000)


def window(*devices: str, start: float = -60, end: float = 1000) -> Window:
    return Window(T0 + start, T0 + end, list(devices))


def approx(value: float, abs: float = 1e-9) -> object:
    return pytest.approx(value, rel=REL, abs=abs)


def check_trip(
    trip: Trip,
    start: float,
    end: float,
    start_xy: tuple[float, float],
    end_xy: tuple[float, float],
    distance: float,
    max_speed: float,
    tol: float = 1e-9,
) -> None:
    """``tol``: metres (and m/s) the path's positions were rounded by."""
    assert trip.start == approx(T0 + start)
    assert trip.end == approx(T0 + end)
    assert (trip.start_x, trip.start_y) == (approx(start_xy[0], tol), approx(start_xy[1], tol))
    assert (trip.end_x, trip.end_y) == (approx(end_xy[0], tol), approx(end_xy[1], tol))
    assert trip.distance == approx(distance, tol)
    assert trip.duration == approx(end - start)
    assert trip.avg_speed == approx(distance / (end - start), tol)
    assert trip.max_speed == approx(max_speed, tol)


def check_stop(stop: Stop, start: float, end: float, xy: tuple[float, float]) -> None:
    assert (stop.start, stop.end) == (approx(T0 + start), approx(T0 + end))
    assert stop.duration == approx(end - start)
    assert (stop.x, stop.y) == (approx(xy[0]), approx(xy[1]))


class AnalyticsSuite:
    # --- trips and stops ---------------------------------------------------------------------

    def test_a_straight_drive_between_two_stops(self, engine: AnalyticsEngine) -> None:
        motion = engine.motion(window("straight"), DEFAULT)
        [trip] = motion.trips
        assert trip.device_id == "straight"
        check_trip(trip, 20, 50, (0, 0), (30, 0), 30, 1)
        first, last = motion.stops
        check_stop(first, 0, 20, (0, 0))
        check_stop(last, 50, 80, (30, 0))
        assert engine.trips(window("straight"), DEFAULT) == motion.trips
        assert engine.stops(window("straight"), DEFAULT) == motion.stops

    def test_a_pause_shorter_than_min_stop_does_not_end_a_trip(
        self, engine: AnalyticsEngine
    ) -> None:
        motion = engine.motion(window("turner"), DEFAULT)
        first, second = motion.trips
        # 10 m along x, 5 s still at the corner, 5 m along y from 25 to 35 (trimmed to the
        # readings where it set off and came to rest, though its blocks start at 24 and end
        # at 36): one trip of 15 m.
        check_trip(first, 10, 35, (0, 0), (10, 5), 15, 1)
        check_trip(second, 50, 60, (10, 5), (0, 5), 10, 1)
        # Stops of exactly min_stop (10 s) count; the 5 s pause does not.
        before, middle, after = motion.stops
        check_stop(before, 0, 10, (0, 0))
        check_stop(middle, 35, 50, (10, 5))
        check_stop(after, 60, 70, (0, 5))

    def test_min_stop_and_the_speeds_are_parameters(self, engine: AnalyticsEngine) -> None:
        short = MotionParams(min_stop=4.0)
        trips = engine.trips(window("turner"), short)
        # Now the 5 s pause is a stop, and the corner ends the first trip.
        assert [(t.start - T0, t.end - T0) for t in trips] == [
            (approx(10), approx(20)),
            (approx(25), approx(35)),
            (approx(50), approx(60)),
        ]
        stops = engine.stops(window("turner"), short)
        assert [(s.start - T0, s.end - T0) for s in stops] == [
            (approx(0), approx(10)),
            (approx(20), approx(25)),
            (approx(35), approx(50)),
            (approx(60), approx(70)),
        ]
        # The y leg (0.5 m/s) is too slow to start a trip above 0.6 m/s.
        slow = MotionParams(start_speed=0.6, stop_speed=0.3)
        trips = engine.trips(window("turner"), slow)
        assert [(t.start - T0, t.end - T0) for t in trips] == [
            (approx(10), approx(20)),
            (approx(50), approx(60)),
        ]
        # Hysteresis: 0.5 m/s, between the two speeds, keeps the state it finds; after the
        # corner pause that is still.
        assert engine.trips(window("straight"), slow)[0].distance == approx(30)

    def test_turning_while_moving_measures_the_smoothed_path(self, engine: AnalyticsEngine) -> None:
        [trip] = engine.trips(window("circle"), DEFAULT)
        # Ten 2 s blocks of 0.4 rad each on a 5 m circle: ten chords of 10 sin(0.2).
        chord = 10 * math.sin(0.2)
        end = (5 * math.cos(4.0), 5 * math.sin(4.0))
        check_trip(trip, 10, 30, (5, 0), end, 10 * chord, chord / 2, tol=1e-5)
        assert trip.distance == pytest.approx(20, rel=0.01)  # the arc, within 1 %
        stops = engine.stops(window("circle"), DEFAULT)
        assert [(s.start - T0, s.end - T0) for s in stops] == [
            (approx(0), approx(10)),
            (approx(30), approx(45)),
        ]

    def test_a_gap_ends_a_trip_and_counts_as_neither_moving_nor_stopped(
        self, engine: AnalyticsEngine
    ) -> None:
        motion = engine.motion(window("gappy"), DEFAULT)
        first, second = motion.trips
        check_trip(first, 0, 29.9, (0, 0), (29.9, 0), 29.9, 1)
        check_trip(second, 120, 150, (100, 0), (130, 0), 30, 1)
        [stop] = motion.stops
        check_stop(stop, 150, 165, (130, 0))
        [summary] = motion.summaries
        assert summary.gaps == 1
        assert summary.moving_time == approx(59.9)
        assert summary.stopped_time == approx(15)
        assert summary.distance == approx(59.9)
        assert summary.readings == 300 + 451

    def test_a_silence_shorter_than_max_gap_is_stopped_time(self, engine: AnalyticsEngine) -> None:
        motion = engine.motion(window("pause"), DEFAULT)
        assert motion.trips == []
        [stop] = motion.stops
        check_stop(stop, 0, 50, (5, 5))
        assert motion.summaries == [Summary("pause", T0, T0 + 50, 0.0, 0.0, 50.0, 0.0, 22, 0)]
        # With max_gap below the silence, it is a gap: two sessions, each too short a stop.
        gapped = engine.motion(window("pause"), MotionParams(max_gap=20.0))
        assert [(s.start - T0, s.end - T0) for s in gapped.stops] == [
            (approx(0), approx(10)),
            (approx(40), approx(50)),
        ]
        assert gapped.summaries[0].gaps == 1
        assert gapped.summaries[0].stopped_time == approx(20)

    def test_noise_neither_starts_trips_nor_breaks_them(self, engine: AnalyticsEngine) -> None:
        [trip] = engine.trips(window("noisy"), DEFAULT)
        # Set off at 30 and came to rest at 90: the noise moves the trimmed ends by less
        # than a block, and the smoothed distance by less than 1 %.
        assert T0 + 28 <= trip.start <= T0 + 32
        assert T0 + 88 <= trip.end <= T0 + 92
        assert trip.distance == pytest.approx(60, rel=0.01)
        assert len(engine.stops(window("noisy"), DEFAULT)) == 2

    def test_the_window_cuts_trips_at_its_edges(self, engine: AnalyticsEngine) -> None:
        [trip] = engine.trips(window("straight", start=30, end=80), DEFAULT)
        check_trip(trip, 30, 50, (10, 0), (30, 0), 20, 1)
        [summary] = engine.summaries(window("straight", start=30, end=40), DEFAULT)
        assert (summary.start, summary.end) == (approx(T0 + 30), approx(T0 + 40))
        assert summary.readings == 101
        assert summary.moving_time == approx(10)

    # --- summaries -----------------------------------------------------------------------

    def test_one_summary_per_device_in_device_order(self, engine: AnalyticsEngine) -> None:
        summaries = engine.summaries(EVERYTHING, DEFAULT)
        assert [s.device_id for s in summaries] == list(DEVICES)
        by = {s.device_id: s for s in summaries}
        assert by["straight"] == Summary(
            "straight", T0, T0 + 80, by["straight"].distance, 30.0, 50.0, 1.0, 801, 0
        )
        assert by["straight"].distance == approx(30)
        turner = by["turner"]
        assert (turner.distance, turner.moving_time, turner.stopped_time) == (
            approx(25),
            approx(35),
            approx(35),
        )
        assert (turner.max_speed, turner.readings, turner.gaps) == (approx(1), 701, 0)

    def test_devices_narrow_the_window(self, engine: AnalyticsEngine) -> None:
        both = engine.summaries(window("turner", "straight", "nobody"), DEFAULT)
        assert [s.device_id for s in both] == ["straight", "turner"]
        assert engine.trips(window(), DEFAULT) == []
        assert engine.motion(window("nobody"), DEFAULT).summaries == []
        trips = engine.trips(window("turner", "straight"), DEFAULT)
        assert [(t.device_id, t.start - T0) for t in trips] == [
            ("straight", approx(20)),
            ("turner", approx(10)),
            ("turner", approx(50)),
        ]
        assert engine.heatmap(window(), 0.5, 60) == []

    def test_a_window_before_any_reading_is_empty(self, engine: AnalyticsEngine) -> None:
        empty = Window(T0 - 10 * 86_400, T0 - 9 * 86_400)
        assert engine.motion(empty, DEFAULT).summaries == []
        assert engine.heatmap(empty, 1.0, 60) == []
        assert all(s.samples == 0 for s in engine.evaluate(empty, [1.0]))

    # --- heatmap -------------------------------------------------------------------------

    def test_heatmap_counts_readings_and_dwell_per_cell(self, engine: AnalyticsEngine) -> None:
        cells = {(c.i, c.j): c for c in engine.heatmap(window("straight"), 0.5, 60.0)}
        # 20 s still at the origin plus the first 0.5 m of the drive.
        assert (cells[0, 0].readings, cells[0, 0].dwell) == (205, approx(20.5))
        assert (cells[1, 0].readings, cells[1, 0].dwell) == (5, approx(0.5))
        # Still at x = 30 from 50 to 80: the last reading dwells nowhere.
        assert (cells[60, 0].readings, cells[60, 0].dwell) == (301, approx(30))
        assert sum(c.readings for c in cells.values()) == 801
        assert sum(c.dwell for c in cells.values()) == approx(80)

    def test_heatmap_caps_dwell_at_max_gap(self, engine: AnalyticsEngine) -> None:
        cells = {(c.i, c.j): c for c in engine.heatmap(window("gappy"), 0.5, 60.0)}
        # The last reading before the 90 s silence dwells 60 s.
        assert (cells[59, 0].readings, cells[59, 0].dwell) == (5, approx(60.4))
        capped = {(c.i, c.j): c for c in engine.heatmap(window("gappy"), 0.5, 5.0)}
        assert capped[59, 0].dwell == approx(5.4)

    def test_the_fleet_heatmap_is_every_reading(self, engine: AnalyticsEngine) -> None:
        for cell in (0.5, 2.0, 0.3):
            got = engine.heatmap(EVERYTHING, cell, 60.0)
            expected = reference_heatmap(READINGS, DEVICES, cell, 60.0)
            assert [(c.i, c.j) for c in got] == sorted(expected)
            for c in got:
                readings, dwell = expected[c.i, c.j]
                assert (c.readings, c.dwell) == (readings, approx(dwell, abs=1e-6))
        # Negative coordinates fall in negative cells: i*cell <= x < (i+1)*cell.
        circle = engine.heatmap(window("circle"), 1.0, 60.0)
        assert any(c.i < 0 and c.j < 0 for c in circle)

    # --- prediction ----------------------------------------------------------------------

    def test_evaluate_scores_every_model_on_held_out_time(self, engine: AnalyticsEngine) -> None:
        scores = engine.evaluate(window("cruise"), [3.0, 1.0])
        assert [(s.model, s.horizon) for s in scores] == [
            (m, h) for m in MODELS for h in (1.0, 3.0)
        ]
        by = {(s.model, s.horizon): s for s in scores}
        # 1 m/s in a straight line: standing still is wrong by 0.1 m per 0.1 s ahead, and
        # constant velocity is exact; the Kalman filter is far better than standing still.
        assert by["last", 1.0].ade == approx(0.55, abs=1e-6)
        assert by["last", 1.0].fde == approx(1.0, abs=1e-6)
        assert by["last", 3.0].ade == approx(1.65, abs=1e-6)
        assert by["velocity", 1.0].fde == approx(0, abs=1e-5)
        assert by["velocity", 3.0].ade == approx(0, abs=1e-5)
        assert by["kalman", 3.0].ade < 0.1 * by["last", 3.0].ade
        assert all(85 <= s.samples <= 91 for s in scores)
