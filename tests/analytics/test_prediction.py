"""Next-position prediction: the models, their evaluation, and picking the best."""

from __future__ import annotations

import numpy as np
import pytest

from iotstream.analytics import MODELS, ModelScore, PredictionParams, best_model, predict
from iotstream.analytics.prediction import TrackScore, combine, evaluate_track


def line(seconds: float, vx: float, vy: float, rate: float = 10.0, start: float = 1e9) -> tuple:
    t = start + np.arange(round(seconds * rate) + 1) / rate
    return t, vx * (t - start) + 3.0, vy * (t - start) - 2.0


def scores(track: list[TrackScore]) -> dict[tuple[str, float], float]:
    return {(s.model, s.horizon): s.ade_sum / s.samples for s in track}


def test_constant_velocity_is_exact_on_a_straight_line() -> None:
    t, x, y = line(10, 0.6, -0.8)
    for horizon in (0.5, 1.0, 3.0):
        px, py = predict(t, x, y, horizon, "velocity")
        assert (px, py) == (
            pytest.approx(0.6 * (10 + horizon) + 3.0),
            pytest.approx(-0.8 * (10 + horizon) - 2.0),
        )


def test_last_position_stands_still_and_readings_may_come_in_any_order() -> None:
    t, x, y = line(5, 1.0, 0.0)
    order = np.random.default_rng(1).permutation(len(t))
    assert predict(t[order], x[order], y[order], 2.0, "last") == (x[-1], y[-1])
    assert predict(t[order], x[order], y[order], 2.0, "velocity") == pytest.approx(
        (x[-1] + 2.0, y[-1])
    )


def test_the_kalman_filter_follows_a_straight_line() -> None:
    t, x, y = line(10, 1.0, 0.5)
    px, py = predict(t, x, y, 2.0, "kalman")
    assert px == pytest.approx(x[-1] + 2.0, abs=0.05)
    assert py == pytest.approx(y[-1] + 1.0, abs=0.05)


def test_one_reading_predicts_where_it_is() -> None:
    for model in MODELS:
        assert predict([5.0], [1.0], [2.0], 3.0, model) == (1.0, 2.0)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        predict([1.0], [1.0], [1.0], 1.0, "oracle")
    with pytest.raises(ValueError, match="no readings"):
        predict([], [], [], 1.0)
    with pytest.raises(ValueError, match="same length"):
        predict([1.0, 2.0], [1.0], [1.0], 1.0)
    with pytest.raises(ValueError, match="holdout"):
        PredictionParams(holdout=0)


def test_evaluation_on_a_clean_line_scores_velocity_exact_and_last_by_hand() -> None:
    t, x, y = line(100, 1.0, 0.0)
    track = evaluate_track(t, x, y, [3.0, 1.0])
    assert [(s.model, s.horizon) for s in track] == [(m, h) for m in MODELS for h in (1.0, 3.0)]
    by = {(s.model, s.horizon): s for s in track}
    # Origins every second of the last 30 s, while the truth is still known h seconds on.
    assert by["last", 1.0].samples == 30
    assert by["last", 3.0].samples == 28
    assert by["last", 1.0].ade_sum / 30 == pytest.approx(0.55)
    assert by["last", 3.0].fde_sum / 28 == pytest.approx(3.0)
    assert by["velocity", 3.0].ade_sum == pytest.approx(0, abs=1e-6)
    assert best_model(combine([track])) == "velocity"


def test_the_kalman_filter_beats_both_baselines_on_noisy_straight_motion() -> None:
    rng = np.random.default_rng(5)
    t, x, y = line(300, 1.0, 0.4)
    x = x + rng.normal(0, 0.1, len(t))
    y = y + rng.normal(0, 0.1, len(t))
    ade = scores(evaluate_track(t, x, y, [1.0, 3.0]))
    for h in (1.0, 3.0):
        assert ade["kalman", h] < ade["velocity", h] < ade["last", h]
    assert best_model(combine([evaluate_track(t, x, y, [1.0, 3.0])]), horizon=1.0) == "kalman"


def test_standing_still_is_best_for_a_robot_that_does_not_move() -> None:
    rng = np.random.default_rng(6)
    t = 1e9 + np.arange(600) / 10
    x, y = rng.normal(4, 0.05, len(t)), rng.normal(2, 0.05, len(t))
    assert best_model(combine([evaluate_track(t, x, y, [1.0])])) == "last"


def test_origins_whose_horizon_crosses_a_gap_are_left_out() -> None:
    t, x, y = line(100, 1.0, 0.0)
    silent = (t > t[0] + 80) & (t < t[0] + 90)
    track = evaluate_track(t[~silent], x[~silent], y[~silent], [1.0])
    # Origins are the first reading of each second from 70 s: none from 81 to 89 (no
    # reading), and the one at 80 s would need the truth in the silence.
    assert {s.samples for s in track} == {30 - 10}


def test_tracks_add_up_per_model_and_horizon() -> None:
    a = [TrackScore("last", 1.0, 2.0, 4.0, 2), TrackScore("kalman", 1.0, 1.0, 1.0, 1)]
    b = [TrackScore("last", 1.0, 1.0, 2.0, 1), TrackScore("kalman", 1.0, 0.0, 0.0, 0)]
    assert combine([a, b]) == [
        ModelScore("last", 1.0, 1.0, 2.0, 3),
        ModelScore("kalman", 1.0, 1.0, 1.0, 1),
    ]
    assert best_model([]) == "last"
    assert (
        best_model([ModelScore("kalman", 1.0, 0.2, 0.3, 5), ModelScore("last", 1.0, 0.2, 0.1, 5)])
        == "last"
    )
