"""Where a device will be ``horizon`` seconds after its newest reading (numpy, no SQL).

Every model turns a device's recent readings (the last ``PredictionParams.history`` seconds
up to the *origin*, the newest one) into a position and a velocity at the origin, and
predicts ``position + velocity * horizon``:

- ``last``: the last position, standing still;
- ``velocity``: constant velocity, the displacement over the last ``velocity_window``
  seconds (at least the last segment) over its duration;
- ``kalman``: a constant-velocity Kalman filter per axis (white-noise acceleration of
  ``accel_noise`` m/s², position noise ``position_noise`` m) run over the recent readings,
  which weighs noisy positions against the motion so far.

``predict`` is what the live API calls on one device's recent readings. ``evaluate_track``
scores every model on one device's track: origins every ``stride`` seconds in the held-out
later part (the last ``holdout`` of its time span), the truth interpolated between readings
at most ``max_step`` apart; ADE is the mean error at ``steps`` points evenly spread over the
horizon, FDE the error at its end (metres). ``combine`` adds tracks' sums into
``ModelScore``s; ``best_model`` picks the model to trust.

The same functions run in every engine (in Spark per device, through ``applyInArrow``), so
that engines agree exactly; an engine hands over only the readings from ``held_out_start``
on, with the time of the track's first reading (``first``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .base import ModelScore

MODELS = ("last", "velocity", "kalman")
"""Model names, simplest first (a tie goes to the simpler one)."""

MAX_HISTORY_READINGS = 256
"""At most this many recent readings feed the Kalman filter."""
INITIAL_SPEED = 2.0
"""m/s: the standard deviation of the velocity the Kalman filter starts from (it starts at
rest, unsure)."""

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class PredictionParams:
    history: float = 3.0
    """Seconds of readings up to the origin that a model sees."""
    velocity_window: float = 1.0
    accel_noise: float = 0.3
    position_noise: float = 0.05
    holdout: float = 0.3
    """The later share of each track's time span that ``evaluate_track`` scores on."""
    stride: float = 1.0
    """Seconds between evaluation origins."""
    steps: int = 10
    max_step: float = 1.0
    """Seconds: the truth at a time is interpolated only between readings this close."""

    def __post_init__(self) -> None:
        for name in ("history", "velocity_window", "accel_noise", "position_noise"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be above 0")
        if not 0 < self.holdout <= 1:
            raise ValueError("holdout must be in (0, 1]")
        if not (self.stride > 0 and self.max_step > 0 and self.steps >= 1):
            raise ValueError("stride, max_step and steps must be above 0")


DEFAULT_PARAMS = PredictionParams()


@dataclass(frozen=True, slots=True)
class TrackScore:
    """One model at one horizon on one track: sums, so that tracks add up exactly."""

    model: str
    horizon: float
    ade_sum: float
    fde_sum: float
    samples: int


def _check_model(model: str) -> None:
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; models: {', '.join(MODELS)}")


def _states(
    t: Floats, x: Floats, y: Floats, origins: Ints, model: str, params: PredictionParams
) -> tuple[Floats, Floats, Floats, Floats]:
    """Position and velocity ``(px, py, vx, vy)`` at each origin index, from the readings
    of the ``history`` seconds up to it (``t`` ascending)."""
    px, py = x[origins], y[origins]
    if model == "last":
        zero = np.zeros(len(origins))
        return px, py, zero, zero.copy()
    first = np.searchsorted(t, t[origins] - params.history, "left")
    if model == "velocity":
        back = np.searchsorted(t, t[origins] - params.velocity_window, "left")
        back = np.minimum(back, origins - 1)
        ok = (back >= first) & (back >= 0)
        back = np.where(ok, back, origins)
        span = t[origins] - t[back]
        ok &= span > 0
        safe = np.where(ok, span, 1.0)
        vx = np.where(ok, (px - x[back]) / safe, 0.0)
        vy = np.where(ok, (py - y[back]) / safe, 0.0)
        return px, py, vx, vy
    return _kalman(t, x, y, origins, first, params)


def _kalman(
    t: Floats, x: Floats, y: Floats, origins: Ints, first: Ints, params: PredictionParams
) -> tuple[Floats, Floats, Floats, Floats]:
    """The filter over each origin's history, all origins at once, oldest reading first.
    Both axes share one covariance (same times, same noise), kept as its three entries."""
    n = len(origins)
    width = int(min(MAX_HISTORY_READINGS, np.max(origins - first) + 1)) if n else 1
    columns = origins[:, None] - (width - 1) + np.arange(width)[None, :]
    used = columns >= np.maximum(first, origins - (width - 1))[:, None]
    columns = np.clip(columns, 0, None)
    q = params.accel_noise**2
    r = params.position_noise**2
    px, py, vx, vy = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    p00, p01, p11 = np.zeros(n), np.zeros(n), np.zeros(n)
    last = np.zeros(n)
    started = np.zeros(n, dtype=bool)
    for c in range(width):
        index = columns[:, c]
        tc, xc, yc = t[index], x[index], y[index]
        here = used[:, c]
        begin = here & ~started
        step = here & started
        # Start: at the first reading, at rest but unsure of the velocity.
        px = np.where(begin, xc, px)
        py = np.where(begin, yc, py)
        p00 = np.where(begin, r, p00)
        p11 = np.where(begin, INITIAL_SPEED**2, p11)
        # Predict to this reading's time, then correct with its position.
        dt = np.where(step, tc - last, 0.0)
        ax = px + vx * dt
        ay = py + vy * dt
        a00 = p00 + 2 * dt * p01 + dt * dt * p11 + q * dt**3 / 3
        a01 = p01 + dt * p11 + q * dt * dt / 2
        a11 = p11 + q * dt
        s = a00 + r
        k0, k1 = a00 / s, a01 / s
        ix, iy = xc - ax, yc - ay
        px = np.where(step, ax + k0 * ix, px)
        py = np.where(step, ay + k0 * iy, py)
        vx = np.where(step, vx + k1 * ix, vx)
        vy = np.where(step, vy + k1 * iy, vy)
        p00, p01, p11 = (
            np.where(step, (1 - k0) * a00, p00),
            np.where(step, (1 - k0) * a01, p01),
            np.where(step, a11 - k1 * a01, p11),
        )
        last = np.where(here, tc, last)
        started |= here
    return px, py, vx, vy


def _arrays(
    timestamps: Iterable[float], xs: Iterable[float], ys: Iterable[float]
) -> tuple[Floats, Floats, Floats]:
    t = np.asarray(timestamps, dtype=np.float64)
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    if not (t.shape == x.shape == y.shape and t.ndim == 1):
        raise ValueError("timestamps, xs and ys must be sequences of the same length")
    order = np.argsort(t, kind="stable")
    return t[order], x[order], y[order]


def predict(
    timestamps: Sequence[float] | Floats,
    xs: Sequence[float] | Floats,
    ys: Sequence[float] | Floats,
    horizon: float,
    model: str = "kalman",
    params: PredictionParams = DEFAULT_PARAMS,
) -> tuple[float, float]:
    """Where the device of these readings (any order) will be ``horizon`` seconds after the
    newest one, by ``model``. Raises ``ValueError`` without readings or for a bad model."""
    _check_model(model)
    t, x, y = _arrays(timestamps, xs, ys)
    if len(t) == 0:
        raise ValueError("no readings to predict from")
    origin = np.array([len(t) - 1], dtype=np.intp)
    px, py, vx, vy = _states(t, x, y, origin, model, params)
    return float(px[0] + vx[0] * horizon), float(py[0] + vy[0] * horizon)


def evaluate_track(
    timestamps: Sequence[float] | Floats,
    xs: Sequence[float] | Floats,
    ys: Sequence[float] | Floats,
    horizons: Sequence[float],
    params: PredictionParams = DEFAULT_PARAMS,
    *,
    first: float | None = None,
) -> list[TrackScore]:
    """Every model at every horizon (ascending) on one device's readings. ``first``: the
    time of the track's first reading when the readings given start later; an engine need
    only give those from ``held_out_start`` on."""
    t, x, y = _arrays(timestamps, xs, ys)
    chosen = sorted(set(float(h) for h in horizons))
    if any(not h > 0 for h in chosen):
        raise ValueError("horizons must be above 0")
    origins = _origins(t, params, first)
    states = {model: _states(t, x, y, origins, model, params) for model in MODELS}
    scores: list[TrackScore] = []
    sums: dict[tuple[str, float], tuple[float, float, int]] = {}
    for horizon in chosen:
        ahead = horizon * np.arange(1, params.steps + 1) / params.steps
        targets = t[origins][:, None] + ahead[None, :]
        valid = _truth_valid(t, targets, params.max_step)
        kept = origins[valid]
        if len(kept) == 0 or len(t) < 2:
            for model in MODELS:
                sums[model, horizon] = (0.0, 0.0, 0)
            continue
        targets = targets[valid]
        truth_x = np.interp(targets, t, x)
        truth_y = np.interp(targets, t, y)
        for model in MODELS:
            px, py, vx, vy = (part[valid] for part in states[model])
            ex = px[:, None] + vx[:, None] * ahead[None, :] - truth_x
            ey = py[:, None] + vy[:, None] * ahead[None, :] - truth_y
            error = np.hypot(ex, ey)
            sums[model, horizon] = (
                float(error.mean(axis=1).sum()),
                float(error[:, -1].sum()),
                len(kept),
            )
    for model in MODELS:
        for horizon in chosen:
            ade, fde, n = sums[model, horizon]
            scores.append(TrackScore(model, horizon, ade, fde, n))
    return scores


def held_out_start(first: float, last: float, params: PredictionParams = DEFAULT_PARAMS) -> float:
    """The earliest time ``evaluate_track`` reads of a track from ``first`` to ``last``: the
    held-out part less the models' history."""
    return _split(first, last, params) - params.history


def _split(first: float, last: float, params: PredictionParams) -> float:
    return first + (1 - params.holdout) * (last - first)


def _origins(t: Floats, params: PredictionParams, first: float | None) -> Ints:
    """The first reading of every ``stride`` seconds of the held-out part."""
    if len(t) < 2:
        return np.zeros(0, dtype=np.intp)
    split = _split(t[0] if first is None else first, t[-1], params)
    start = int(np.searchsorted(t, split, "left"))
    buckets = np.floor((t[start:] - split) / params.stride)
    fresh = np.ones(len(buckets), dtype=bool)
    fresh[1:] = buckets[1:] != buckets[:-1]
    return (np.flatnonzero(fresh) + start).astype(np.intp)


def _truth_valid(t: Floats, targets: Floats, max_step: float) -> npt.NDArray[np.bool_]:
    """Origins whose every target time lies within the track, between readings at most
    ``max_step`` apart."""
    inside = targets[:, -1] <= t[-1]
    after = np.clip(np.searchsorted(t, targets, "left"), 1, len(t) - 1)
    close = (t[after] - t[after - 1]) <= max_step
    valid: npt.NDArray[np.bool_] = inside & close.all(axis=1)
    return valid


def combine(tracks: Iterable[Sequence[TrackScore]]) -> list[ModelScore]:
    """Tracks' scores added up per model and horizon, in ``MODELS`` and horizon order."""
    totals: dict[tuple[str, float], list[Any]] = {}
    for track in tracks:
        for s in track:
            total = totals.setdefault((s.model, s.horizon), [0.0, 0.0, 0])
            total[0] += s.ade_sum
            total[1] += s.fde_sum
            total[2] += s.samples
    ordered = sorted(totals, key=lambda key: (MODELS.index(key[0]), key[1]))
    return [
        ModelScore(
            model,
            horizon,
            totals[model, horizon][0] / n if (n := totals[model, horizon][2]) else float("nan"),
            totals[model, horizon][1] / n if n else float("nan"),
            n,
        )
        for model, horizon in ordered
    ]


def best_model(scores: Sequence[ModelScore], horizon: float | None = None) -> str:
    """The model with the lowest ADE at ``horizon`` (the nearest evaluated one), or summed
    over every horizon; the simplest model when nothing was scored."""
    scored = [s for s in scores if s.samples > 0]
    if not scored:
        return MODELS[0]
    if horizon is not None:
        nearest = min({s.horizon for s in scored}, key=lambda h: (abs(h - horizon), h))
        scored = [s for s in scored if s.horizon == nearest]
    total: dict[str, float] = {}
    for s in scored:
        total[s.model] = total.get(s.model, 0.0) + s.ade
    return min(total, key=lambda model: (total[model], MODELS.index(model)))
