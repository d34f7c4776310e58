"""The dashboard's analytics layers in Debian's headless Chromium against ``iotstream run``, a
real Mosquitto and the lake it archives to: the heatmap layer, the selected robot's trips,
stops and summary, and ghost markers ahead of moving robots.

Robots are driven by real MQTT publishes. Readings that must lie in the past carry their own
device ``timestamp``; a robot whose ghost is watched is published in real time. The page's
time zone is chosen so that "today" (since local midnight) holds the last few minutes
whenever the test runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from .conftest import Server
from .test_dashboard import Dashboard, State, expected_screen, unique

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

BACKGROUND = (11, 18, 32)  # the plane's background, #0b1220


OFFSET = 12 - time.gmtime().tm_hour
"""Hours east of UTC of the page's zone: about noon there, so local midnight is hours away."""


def midday_zone() -> str:
    # POSIX-style names: Etc/GMT-3 is three hours east of UTC.
    return f"Etc/GMT{-OFFSET:+d}" if OFFSET else "Etc/GMT"


def page_local(seconds: float) -> str:
    """Epoch seconds as a datetime-local input of the page takes them (its zone's wall time)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds + OFFSET * 3600))


@pytest.fixture
def dashboard(browser: Browser, server: Server) -> Iterator[Dashboard]:
    """The dashboard of the module's server at midday; the test fails on any JavaScript error."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 800}, timezone_id=midday_zone()
    )
    dashboard = Dashboard(context.new_page())
    dashboard.open(server.http + "/")
    yield dashboard
    context.close()
    assert dashboard.errors == []


def analytics(state: State) -> dict[str, Any]:
    return state["analytics"]  # type: ignore[no-any-return]


def publish_track(
    server: Server, device_id: str, t0: float, points: list[tuple[float, float, float]]
) -> None:
    """Readings ``(t, x, y)`` at device times ``t0 + t`` over one MQTT connection."""
    lines = [json.dumps({"x": x, "y": y, "timestamp": t0 + t}) for t, x, y in points]
    server.publish_lines(f"sensors/{device_id}/coordinates", lines)


def errand(start: tuple[float, float], metres: float) -> list[tuple[float, float, float]]:
    """Still for 15 s, then 1 m/s along +x for ``metres`` metres, then still for 20 s; two
    readings a second."""
    x0, y0 = start
    points: list[tuple[float, float, float]] = []
    t = 0.0
    while t < 15:
        points.append((t, x0, y0))
        t += 0.5
    for k in range(1, int(metres * 2) + 1):
        points.append((t, x0 + k * 0.5, y0))
        t += 0.5
    end = t
    while t < end + 20:
        points.append((t, x0 + metres, y0))
        t += 0.5
    return points


def pixel(dashboard: Dashboard, sx: float, sy: float) -> tuple[int, int, int]:
    """The plane canvas's colour at (sx, sy) in CSS pixels."""
    rgb = dashboard.page.evaluate(
        """([sx, sy]) => {
            const canvas = document.getElementById('plane');
            const ratio = canvas.width / canvas.clientWidth;
            const data = canvas.getContext('2d').getImageData(
                Math.round(sx * ratio), Math.round(sy * ratio), 1, 1).data;
            return [data[0], data[1], data[2]];
        }""",
        [sx, sy],
    )
    return (rgb[0], rgb[1], rgb[2])


def test_the_selected_robots_trips_stops_and_summary(dashboard: Dashboard, server: Server) -> None:
    robot = unique("trip")
    t0 = round(time.time()) - 120.0
    publish_track(server, robot, t0, errand((2.0, 2.0), 10.0))
    window = f"from={t0 - 1}&to={t0 + 60}"
    trips = server.wait_for(
        f"/api/devices/{robot}/trips?{window}",
        lambda r: r.status_code == 200 and len(r.json()["trips"]) == 1,
        30,
    ).json()["trips"]
    [trip] = trips
    assert trip["startX"] == pytest.approx(2.0, abs=1.0)
    assert trip["endX"] == pytest.approx(12.0, abs=1.0)
    assert trip["distance"] == pytest.approx(10.0, abs=1.0)

    dashboard.wait_for_device(robot)
    dashboard.select_in_list(robot)
    state = dashboard.wait(
        lambda s: (
            analytics(s)["device"]["state"] == "loaded"
            and analytics(s)["device"]["deviceId"] == robot
            and len(analytics(s)["device"]["trips"]) == 1
            and analytics(s)["device"]["drawn"]["trips"] == 1
        ),
        "the robot's trips of today, drawn",
        30,
    )
    shown = analytics(state)["device"]
    assert shown["label"] == "today"
    assert shown["trips"] == trips  # today holds the same one trip as the narrow window
    assert [stop["x"] for stop in shown["stops"]] == pytest.approx([2.0, 12.0], abs=1.0)
    assert shown["summary"]["distance"] == pytest.approx(10.0, abs=1.0)
    assert shown["summary"]["readings"] == len(errand((2.0, 2.0), 10.0))
    assert shown["drawn"] == {"trips": 1, "stops": len(shown["stops"]), "prediction": False}

    page = dashboard.page
    items = page.locator("#details .trips li")
    assert items.count() == 1
    assert f"{trip['distance']:.1f} m" in items.first.inner_text()
    assert page.locator("#details .stops li").count() == len(shown["stops"])
    assert page.inner_text('#details [data-count="trips"]') == "1"
    distance = page.inner_text('#details .summary [data-summary="distance"]')
    assert distance == f"{shown['summary']['distance']:.1f} m"

    # Clicking the trip highlights it on the plane.
    items.first.click()
    dashboard.wait(lambda s: analytics(s)["device"]["highlight"] == trip["start"], "highlight")
    # The list is drawn on the next animation frame after the click.
    expect(items.first).to_have_attribute("aria-selected", "true", timeout=5000)


def test_the_heatmap_layer_draws_where_robots_were(dashboard: Dashboard, server: Server) -> None:
    robot = unique("heat")
    t0 = round(time.time()) - 150.0
    publish_track(server, robot, t0, errand((-20.0, -20.0), 6.0))
    query = f"/api/analytics/heatmap?devices={robot}&from={t0 - 1}&to={t0 + 60}&cell=1"
    expected = server.wait_for(
        query,
        lambda r: (
            r.status_code == 200
            and sum(c["readings"] for c in r.json()["cells"]) == len(errand((0, 0), 6.0))
        ),
        30,
    ).json()["cells"]

    dashboard.wait_for_device(robot)
    dashboard.select_in_list(robot)
    page = dashboard.page
    page.click("#heatmap-toggle")
    assert page.get_attribute("#heatmap-toggle", "aria-pressed") == "true"
    page.select_option("#heatmap select[name=scope]", "device")
    state = dashboard.wait(
        lambda s: (
            (h := analytics(s)["heatmap"])["status"] == "loaded"
            and h["devices"] == [robot]
            and h["drawn"] == 1
        ),
        "the robot's heatmap",
        30,
    )
    heat = analytics(state)["heatmap"]
    assert heat["cells"] == len(expected)
    assert heat["readings"] == sum(c["readings"] for c in expected)
    assert heat["maxDwell"] == pytest.approx(max(c["dwell"] for c in expected))
    # One pixel per 1 m cell, placed on the cells' square of the plane.
    i0, i1 = min(c["i"] for c in expected), max(c["i"] for c in expected)
    j0, j1 = min(c["j"] for c in expected), max(c["j"] for c in expected)
    assert heat["image"] == [i1 - i0 + 1, j1 - j0 + 1]
    assert heat["rect"] == [i0, j0, i1 + 1, j1 + 1]
    assert "readings in" in page.inner_text("#heatmap .heatmap-status")

    # The cell where the robot waited 15 s is painted; off, it is plain plane again. (The cell
    # where it waits now is hotter still, but its marker, ring and label cover part of it.)
    [start] = [c for c in expected if (c["i"], c["j"]) == (-20, -20)]
    assert start["dwell"] >= 15.0
    page.mouse.move(0, 0)
    at = expected_screen(state, start["i"] + 0.5, start["j"] + 0.75)  # off the path's line
    painted = pixel(dashboard, *at)
    page.click("#heatmap-toggle")
    dashboard.wait(lambda s: analytics(s)["heatmap"]["drawn"] == 0, "the layer off")
    assert dashboard.state()["view"] == state["view"]
    assert pixel(dashboard, *at) != painted
    assert page.locator("#heatmap").is_hidden()


def test_a_ghost_marker_runs_ahead_of_a_moving_robot(dashboard: Dashboard, server: Server) -> None:
    robot = unique("ghost")
    page = dashboard.page
    page.click("#ghost-toggle")
    assert page.get_attribute("#ghost-toggle", "aria-pressed") == "true"
    # Along +y at 1 m/s in real time: x stays, y is the seconds since the start.
    began = time.monotonic()
    for _ in range(12):
        y = time.monotonic() - began
        server.publish(f"sensors/{robot}/coordinates", json.dumps({"x": 30.0, "y": y}))
        time.sleep(0.15)
    state = dashboard.wait(
        lambda s: (
            robot in analytics(s)["ghosts"]["ghosts"]
            and (d := dashboard.device(robot, s)) is not None
            and d["y"] > 1.0
        ),
        "the robot's ghost",
    )
    device = dashboard.device(robot, state)
    assert device is not None
    gx, gy = analytics(state)["ghosts"]["ghosts"][robot]
    horizon = analytics(state)["ghosts"]["horizon"]
    # Ahead along its way by about its speed times the horizon; the speed is measured from
    # receive times, so a little jitter is allowed.
    assert gx == pytest.approx(30.0, abs=0.3)
    assert gy - device["y"] == pytest.approx(horizon * 1.0, rel=0.5)

    # Selected, it also gets the server's prediction by its best model.
    dashboard.select_in_list(robot)
    state = dashboard.wait(
        lambda s: (
            (p := analytics(s)["device"]["prediction"]) is not None
            and p.get("prediction") is not None
        ),
        "the server's prediction",
        30,
    )
    prediction = analytics(state)["device"]["prediction"]
    assert prediction["deviceId"] == robot and prediction["horizon"] == horizon
    assert prediction["prediction"]["x"] == pytest.approx(30.0, abs=0.5)
    assert prediction["prediction"]["y"] > prediction["basis"]["y"]
    line = page.locator("#details .prediction")
    line.wait_for()
    assert prediction["model"] in line.inner_text()

    # Off, no ghost is drawn.
    page.click("#ghost-toggle")
    dashboard.wait(lambda s: analytics(s)["ghosts"]["ghosts"] == {}, "no ghosts")


def test_history_mode_shows_the_analytics_of_its_window(
    dashboard: Dashboard, server: Server
) -> None:
    robot = unique("replay")
    t0 = round(time.time()) - 90.0
    publish_track(server, robot, t0, errand((5.0, -5.0), 4.0))
    server.wait_for(
        f"/api/devices/{robot}/trips?from={t0 - 1}&to={t0 + 60}",
        lambda r: r.status_code == 200 and len(r.json()["trips"]) == 1,
        30,
    )
    page = dashboard.page
    page.click("#history-toggle")
    dashboard.wait(lambda s: s["history"]["status"] in ("loaded", "empty"), "the last minute", 30)
    page.fill("#history input[name=device]", robot)
    page.select_option("#history select[name=preset]", "custom")
    page.fill("#history input[name=from]", page_local(t0 - 1))
    page.fill("#history input[name=to]", page_local(t0 + 45))
    page.click("#history button[type=submit]")
    dashboard.wait(
        lambda s: s["history"]["status"] == "loaded" and s["history"]["device"] == robot,
        "the custom window",
        30,
    )
    dashboard.select_in_list(robot)
    page.click("#heatmap-toggle")
    page.select_option("#heatmap select[name=scope]", "device")
    state = dashboard.wait(
        lambda s: (
            (d := analytics(s)["device"])["state"] == "loaded"
            and d["label"] == "the history window"
            and (h := analytics(s)["heatmap"])["status"] == "loaded"
            and h["range"] == "history"
            and h["devices"] == [robot]
            and d["drawn"]["trips"] == 1
        ),
        "the analytics of the history window",
        30,
    )
    shown, heat = analytics(state)["device"], analytics(state)["heatmap"]
    window = (t0 - 1, t0 + 45)
    assert (shown["from"], shown["to"]) == window == (heat["from"], heat["to"])
    assert len(shown["trips"]) == 1 and shown["drawn"]["trips"] == 1
    assert shown["trips"][0]["distance"] == pytest.approx(4.0, abs=0.5)
    assert heat["readings"] == len(errand((0, 0), 4.0))
    assert page.inner_text("#details .analysis h3") == "The history window"
    assert page.is_disabled("#heatmap select[name=range]")
