"""The live dashboard in Debian's headless Chromium against ``iotstream run`` and Mosquitto.

Tests read the page through its debug hook, ``window.iotstream.state()`` (device ids, their
screen positions, connection state, last seq), instead of parsing pixels.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from .conftest import MqttListener, Server, require, start_server, stop_process

pytestmark = pytest.mark.browser

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "dashboard.png"
State = dict[str, Any]


def unique(prefix: str = "bot") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Dashboard:
    """One open dashboard page and every JavaScript error it reported."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console error: {message.text}")

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.wait(lambda s: s["connection"] == "live", "the WebSocket to connect")

    def state(self) -> State:
        return self.page.evaluate("window.iotstream.state()")  # type: ignore[no-any-return]

    def device(self, device_id: str, state: State | None = None) -> dict[str, Any] | None:
        devices = (state or self.state())["devices"]
        return next((d for d in devices if d["id"] == device_id), None)

    def wait(self, predicate: Callable[[State], object], what: str, timeout: float = 10) -> State:
        """Poll the debug hook until ``predicate(state)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                summary = {k: v for k, v in state.items() if k not in ("devices", "recentFrames")}
                raise AssertionError(f"timed out waiting for {what}; state: {summary}")
            time.sleep(0.05)

    def wait_for_device(
        self, device_id: str, condition: Callable[[dict[str, Any]], object] = bool
    ) -> dict[str, Any]:
        state = self.wait(
            lambda s: (d := self.device(device_id, s)) is not None and condition(d),
            f"{device_id} to show as expected",
        )
        device = self.device(device_id, state)
        assert device is not None
        return device

    def search(self, device_id: str) -> None:
        """Type the id in the list's search box and wait for the list to show only that one."""
        self.page.fill("#fleet input[type=search]", device_id)
        self.page.wait_for_function(
            "/^1 (of|device)/.test(document.querySelector('#fleet .count').textContent)"
        )

    def select_in_list(self, device_id: str) -> None:
        self.search(device_id)
        self.page.click(f'.device[data-id="{device_id}"]')
        self.wait(lambda s: s["selected"] == device_id, f"{device_id} to be selected")

    def expect_console_error(self, text: str) -> None:
        """Accept the one console error the test provoked on purpose."""
        expected = [e for e in self.errors if text in e]
        assert len(expected) == 1, self.errors
        self.errors.remove(expected[0])


def open_dashboard(browser: Browser, url: str, width: int = 1280, height: int = 800) -> Dashboard:
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    dashboard = Dashboard(page)
    dashboard.open(url)
    return dashboard


@pytest.fixture
def dashboard(browser: Browser, server: Server) -> Iterator[Dashboard]:
    """The dashboard of the module's server; the test fails on any JavaScript error."""
    dashboard = open_dashboard(browser, server.http + "/")
    yield dashboard
    dashboard.page.context.close()
    assert dashboard.errors == []


def publish(server: Server, device_id: str, **fields: object) -> None:
    server.publish(f"sensors/{device_id}/coordinates", json.dumps(fields))


def expected_screen(state: State, x: float, y: float) -> tuple[float, float]:
    """Where the plane draws (x, y) in metres: y points up, the view's centre is in the middle."""
    view = state["view"]
    (cx, cy), scale = view["center"], view["scale"]
    return view["width"] / 2 + (x - cx) * scale, view["height"] / 2 - (y - cy) * scale


def at(device: dict[str, Any], state: State, x: float, y: float) -> bool:
    """The device's marker is drawn at (x, y), its glide from the last position finished."""
    if device["screen"] is None:
        return False
    sx, sy = expected_screen(state, x, y)
    return abs(device["screen"][0] - sx) < 0.5 and abs(device["screen"][1] - sy) < 0.5


def test_robots_appear_in_the_list_and_on_the_plane_and_move(
    dashboard: Dashboard, server: Server
) -> None:
    robot = unique()
    publish(server, robot, x=5.0, y=5.0, heading=90.0)
    server.publish(f"sensors/{robot}/motorRPM", "1500")
    state = dashboard.wait(
        lambda s: (
            (d := dashboard.device(robot, s)) is not None
            and d["fields"].get("motorRPM") == 1500
            and at(d, s, 5.0, 5.0)
        ),
        "the robot on the plane",
    )
    device = dashboard.device(robot, state)
    assert device is not None and device["visible"] and device["heading"] == 90.0

    dashboard.search(robot)
    row = dashboard.page.locator(f'.device[data-id="{robot}"]')
    assert "motorRPM 1500" in row.inner_text()
    assert "heading 90" in row.inner_text()
    assert dashboard.page.locator(".device:not([hidden])").count() == 1

    publish(server, robot, x=8.0, y=6.5, heading=45.0)
    state = dashboard.wait(
        lambda s: (d := dashboard.device(robot, s)) is not None and at(d, s, 8.0, 6.5),
        "the robot to move on the plane",
    )
    moved = dashboard.device(robot, state)
    assert moved is not None and moved["screen"] != device["screen"]

    # Clicking the marker selects the robot and the plane follows it: it sits in the middle.
    box = dashboard.page.locator("#plane").bounding_box()
    assert box is not None
    dashboard.page.mouse.click(box["x"] + moved["screen"][0], box["y"] + moved["screen"][1])
    dashboard.wait(
        lambda s: s["selected"] == robot and s["following"] and s["view"]["center"] == [8.0, 6.5],
        "the plane to follow the selected robot",
    )
    # The panels are drawn on the next animation frame after the click.
    expect(row).to_have_attribute("aria-selected", "true", timeout=5000)
    expect(dashboard.page.locator('#details [data-field="motorRPM"]')).to_have_text(
        "1500", timeout=5000
    )


def test_the_plane_pans_zooms_and_fits_the_fleet(dashboard: Dashboard, server: Server) -> None:
    far, near = unique(), unique()
    publish(server, far, x=-40.0, y=30.0)
    publish(server, near, x=1.0, y=1.0)
    dashboard.wait_for_device(far, lambda d: d["visible"])
    dashboard.wait_for_device(near, lambda d: d["visible"])
    page = dashboard.page
    box = page.locator("#plane").bounding_box()
    assert box is not None
    middle = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    before = dashboard.state()["view"]
    page.mouse.move(*middle)
    page.mouse.wheel(0, -400)
    zoomed = dashboard.wait(lambda s: s["view"]["scale"] > before["scale"] * 1.5, "wheel zoom")
    page.click('[data-zoom="out"]')
    assert dashboard.state()["view"]["scale"] < zoomed["view"]["scale"]

    page.mouse.move(*middle)
    page.mouse.down()
    page.mouse.move(middle[0] + 200, middle[1] + 100, steps=5)
    page.mouse.up()
    panned = dashboard.state()["view"]
    shift = zoomed["view"]["center"][0] - panned["center"][0]
    assert shift == pytest.approx(200 / panned["scale"], rel=0.05)

    page.click('[data-zoom="fit"]')
    state = dashboard.wait(lambda s: all(d["visible"] for d in s["devices"]), "fit to fleet")
    assert not state["following"]


def test_the_pipeline_status_shows_rates_devices_clients_and_health(
    dashboard: Dashboard, server: Server
) -> None:
    page = dashboard.page
    # The first poll may come before the dashboard's own WebSocket is counted.
    page.wait_for_function("document.querySelector('[data-metric=clients]').textContent >= 1")
    components = page.locator("#pipeline .components li")
    components.first.wait_for()
    names = components.all_inner_texts()
    assert {"broker", "ingest", "bus", "processor", "store", "hub", "commands"} <= set(names)
    assert all(components.nth(i).get_attribute("data-status") == "UP" for i in range(len(names)))
    stats = server.get("/api/stats").json()
    assert int(page.inner_text('[data-metric="devices"]')) <= stats["devices"]
    assert float(page.inner_text('[data-metric="rate"]')) >= 0
    assert page.inner_text('[data-metric="rejected"]') == str(stats["rejected"])


def test_a_command_button_reaches_the_robot_over_mqtt(dashboard: Dashboard, server: Server) -> None:
    robot = unique()
    publish(server, robot, x=2.0, y=3.0)
    dashboard.wait_for_device(robot)
    with MqttListener(server.mqtt_port, f"orin/{robot}/command") as device_side:
        page = dashboard.page
        dashboard.select_in_list(robot)
        page.click('#details [data-command="slam"]')
        accepted = page.locator('#details .results li[data-status="accepted"]')
        accepted.wait_for()
        assert f"slam → {robot}" in accepted.inner_text()
        assert accepted.get_attribute("data-command-id")
        # Tracked live: a device that never answers stays sent.
        page.locator('#details .results li[data-state="sent"]').wait_for()

        page.fill("#details .custom-command input", "goto 3.5 2.0")
        page.press("#details .custom-command input", "Enter")
        page.locator('#details .results li[data-status="accepted"]').nth(1).wait_for()
        assert device_side.lines(2) == ["slam", "goto 3.5 2.0"]

    page.fill("#details .custom-command input", "x" * 257)
    page.press("#details .custom-command input", "Enter")
    failed = page.locator('#details .results li[data-status="failed"]')
    failed.wait_for()
    assert "422" in failed.inner_text() and "at most 256 characters" in failed.inner_text()
    dashboard.expect_console_error("status of 422")


def test_a_dropped_connection_resumes_and_loses_no_update(
    dashboard: Dashboard, server: Server
) -> None:
    robot = unique()
    publish(server, robot, x=1.0, y=1.0)
    before = dashboard.wait(
        lambda s: (d := dashboard.device(robot, s)) is not None and d["x"] == 1.0, "the robot"
    )
    dashboard.page.evaluate("window.iotstream.dropConnection(3000)")
    assert dashboard.state()["connection"] == "reconnecting"
    for x in (2.0, 3.0, 4.0):
        publish(server, robot, x=x, y=1.0)
    server.wait_for(f"/api/devices/{robot}", lambda r: r.json()["x"] == 4.0)
    during = dashboard.state()
    assert during["connection"] != "live", "the dashboard reconnected before the publishing ended"
    shown = dashboard.device(robot, during)
    assert shown is not None and shown["x"] == 1.0

    after = dashboard.wait(
        lambda s: (
            s["connection"] == "live"
            and (d := dashboard.device(robot, s)) is not None
            and d["x"] == 4.0
        ),
        "the missed update after reconnecting",
    )
    # The server replayed the missed frames: seq never skipped and no snapshot was needed.
    seqs = [f["seq"] for f in after["recentFrames"] if f["seq"] >= before["lastSeq"]]
    assert seqs == list(range(before["lastSeq"], after["lastSeq"] + 1))
    assert after["counts"]["connects"] == before["counts"]["connects"] + 1
    assert after["counts"]["snapshots"] == before["counts"]["snapshots"]
    assert after["counts"]["gaps"] == 0


def test_a_lost_frame_is_noticed_and_resynced_with_a_snapshot(
    dashboard: Dashboard, server: Server
) -> None:
    lost, later = unique(), unique()
    before = dashboard.state()
    dashboard.page.evaluate("window.iotstream.loseFrames(1)")
    publish(server, lost, x=7.0, y=7.0)
    server.wait_for(f"/api/devices/{lost}", lambda r: r.status_code == 200)
    publish(server, later, x=8.0, y=8.0)
    # Only the snapshot asked for after the gap can bring the device of the lost frame.
    after = dashboard.wait(
        lambda s: dashboard.device(lost, s) is not None and dashboard.device(later, s) is not None,
        "both devices after the resync",
    )
    assert after["counts"]["gaps"] == 1
    assert after["counts"]["snapshots"] == before["counts"]["snapshots"] + 1
    frames = [f for f in after["recentFrames"] if f["seq"] > before["lastSeq"]]
    assert frames[-1]["type"] == "snapshot"
    device = dashboard.device(lost, after)
    assert device is not None and device["x"] == 7.0


def test_a_floor_plan_is_placed_by_its_origin_and_scale(
    dashboard: Dashboard, server: Server
) -> None:
    svg = (
        "<svg xmlns='http://www.w3.org/2000/svg' width='200' height='100'>"
        "<rect width='200' height='100' fill='white'/></svg>"
    )
    image = "data:image/svg+xml," + quote(svg)
    page = dashboard.page
    page.click("#floorplan-toggle")
    page.fill("#floorplan [name=image]", image)
    page.fill("#floorplan [name=originX]", "-5")
    page.fill("#floorplan [name=originY]", "-2")
    page.fill("#floorplan [name=scale]", "0.1")
    page.click("#floorplan button[type=submit]")
    state = dashboard.wait(lambda s: s["background"] is not None, "the floor plan")
    left, top, width, height = state["background"]["rect"]
    scale = state["view"]["scale"]
    # 200 x 100 px at 0.1 m/px: 20 x 10 m with its bottom-left corner at (-5, -2).
    assert (width, height) == pytest.approx((20 * scale, 10 * scale))
    assert (left, top) == pytest.approx(expected_screen(state, -5, 8))

    # The settings are in the URL, so the link brings the same plan back.
    dashboard.open(page.url)
    assert dashboard.wait(lambda s: s["background"] is not None, "the plan from the URL")
    page.click("#floorplan-toggle")
    page.click('#floorplan [data-action="clear"]')
    dashboard.wait(lambda s: s["background"] is None, "the plan removed")
    assert "image=" not in page.url


def test_a_silent_robot_turns_grey(dashboard: Dashboard, server: Server) -> None:
    robot = unique()
    publish(server, robot, x=3.0, y=3.0)
    assert not dashboard.wait_for_device(robot)["stale"]
    dashboard.search(robot)
    row = dashboard.page.locator(f'.device[data-id="{robot}"]')
    assert "stale" not in (row.get_attribute("class") or "")
    dashboard.wait(
        lambda s: (d := dashboard.device(robot, s)) is not None and d["stale"], "staleness"
    )
    dashboard.page.locator(f'.device.stale[data-id="{robot}"]').wait_for()


def test_twenty_simulated_robots_move_and_are_pictured(browser: Browser, tmp_path: Path) -> None:
    require("mosquitto")
    srv = start_server(tmp_path, "--simulate", "20")
    try:
        dashboard = open_dashboard(browser, srv.http + "/", 1440, 900)
        first = dashboard.wait(lambda s: len(s["devices"]) == 20, "20 robots")
        start = {d["id"]: (d["x"], d["y"]) for d in first["devices"]}
        if os.environ.get("IOTSTREAM_UPDATE_SCREENSHOT"):
            time.sleep(6)  # trails grow, for the README's picture
        page = dashboard.page
        page.click('.device[data-id="robot3"]')
        page.click('#details [data-command="slam"]')
        page.locator('#details .results li[data-status="accepted"]').wait_for()
        # A simulated robot answers: the row follows the command to its end.
        page.locator('#details .results li[data-state="succeeded"]').wait_for()
        page.wait_for_function(
            "document.querySelector('.pipeline-note').textContent.includes('1 command ')"
        )
        page.click('[data-zoom="fit"]')
        state = dashboard.wait(
            lambda s: all(
                d["visible"] and not d["stale"] and (d["x"], d["y"]) != start[d["id"]]
                for d in s["devices"]
            ),
            "every robot shown, moved from where it started",
        )
        assert len(state["devices"]) == 20
        page.mouse.move(0, 0)  # no hover highlight in the picture
        picture = page.screenshot(path=str(tmp_path / "dashboard.png"))
        assert picture.startswith(b"\x89PNG")
        if os.environ.get("IOTSTREAM_UPDATE_SCREENSHOT"):
            # Only on request, so that a test run leaves the README's picture alone.
            SCREENSHOT.write_bytes(picture)
        page.context.close()
        assert dashboard.errors == []
    finally:
        stop_process(srv.process)


# -- history mode ---------------------------------------------------------------------------

SLIDER = "#history input[name=time]"
PLAY = '#history [data-action="play"]'
# Two robots' readings, one second apart in device time; B half a second after A.
PATH_A = [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (3.0, 1.0), (3.0, 2.0)]
PATH_B = [(10.0, 5.0), (9.0, 5.5), (8.0, 5.0), (7.0, 5.5), (6.0, 5.0), (5.0, 5.5)]


def publish_path(
    server: Server, device_id: str, path: list[tuple[float, float]], t0: float
) -> None:
    """Readings at device times ``t0``, ``t0 + 1``, ... over one MQTT connection."""
    lines = [json.dumps({"x": x, "y": y, "timestamp": t0 + i}) for i, (x, y) in enumerate(path)]
    server.publish_lines(f"sensors/{device_id}/coordinates", lines)


def wait_archived(server: Server, devices: list[str], count: int, t0: float) -> None:
    """Until the history API has ``count`` readings of ``devices`` (the archiver commits about
    once a second)."""
    query = f"/api/history?devices={','.join(devices)}&from={t0 - 1}&to={t0 + 60}"
    server.wait_for(query, lambda r: r.status_code == 200 and len(r.json()["points"]) == count, 30)


def history(state: State) -> dict[str, Any]:
    return state["history"]  # type: ignore[no-any-return]


def seek(dashboard: Dashboard, seconds: float) -> None:
    """Move the time slider as a user dragging it would."""
    dashboard.page.evaluate(
        """(t) => {
            const slider = document.querySelector('#history input[name=time]');
            slider.value = String(t);
            slider.dispatchEvent(new Event('input', {bubbles: true}));
        }""",
        seconds,
    )


def track_tolerance(pixels_per_metre: float) -> float:
    """What the dashboard asks for: about a pixel in metres, 1, 2 or 5 times a power of ten."""
    metres = 1 / pixels_per_metre
    power = 10 ** math.floor(math.log10(metres))
    step = max(d * power for d in (1, 2, 5) if d * power <= metres)
    return max(0.01, float(f"{step:.1g}"))


def off_path(screen: list[float], state: State, path: list[tuple[float, float]]) -> float:
    """Pixels from the marker at ``screen`` to the polyline ``path`` as the plane draws it."""
    px, py = screen[0], screen[1]
    points = [expected_screen(state, x, y) for x, y in path]
    best = math.inf
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        dx, dy = x1 - x0, y1 - y0
        k = max(0.0, min(1.0, ((px - x0) * dx + (py - y0) * dy) / (dx * dx + dy * dy)))
        best = min(best, math.hypot(px - (x0 + k * dx), py - (y0 + k * dy)))
    return best


def replay_rate(first: State, last: State) -> float:
    """Replayed seconds per second of the page's clock between two states of one playback."""
    a, b = history(first), history(last)
    seconds = (b["tickedAt"] - a["tickedAt"]) / 1000
    return float((b["time"] - a["time"]) / seconds)


def play_through(
    dashboard: Dashboard, robots: dict[str, list[tuple[float, float]]], until: float
) -> tuple[dict[str, list[tuple[float, float]]], list[State]]:
    """Watch a playback until the replay time passes ``until``: the positions each robot
    reported, in the order the plane showed them, and the states sampled while playing."""
    seen: dict[str, list[tuple[float, float]]] = {robot: [] for robot in robots}
    samples: list[State] = []
    deadline = time.monotonic() + 60
    while True:
        state = dashboard.state()
        replay = history(state)
        assert replay["playing"], "the replay stopped before the end of the readings"
        if replay["tickedAt"] is not None:
            samples.append(state)
        for robot, path in robots.items():
            device = dashboard.device(robot, state)
            if device is None or device.get("x") is None:
                continue
            point = (device["x"], device["y"])
            if not seen[robot] or seen[robot][-1] != point:
                seen[robot].append(point)
            # Its trail is its history up to now (all of it: the last 8 s of replayed time).
            reached = path.index(point)
            assert [tuple(p) for p in device["trail"]] == path[: reached + 1], (robot, device)
            # Between two readings the marker glides along the segment joining them.
            if device["screen"] is not None:
                assert off_path(device["screen"], state, path) < 1.5, (robot, device, replay)
        if replay["time"] > until:
            return seen, samples
        assert time.monotonic() < deadline, f"the replay never reached {until}: {replay}"
        time.sleep(0.05)


def test_history_mode_replays_the_last_minute(dashboard: Dashboard, server: Server) -> None:
    a, b = unique("replay"), unique("replay")
    t0 = round(time.time()) - 20.0
    publish_path(server, a, PATH_A, t0)
    publish_path(server, b, PATH_B, t0 + 0.5)
    wait_archived(server, [a, b], 12, t0)
    # Once both are drawn, the live plane has fitted them: its view is settled.
    before = dashboard.wait(
        lambda s: all(
            (d := dashboard.device(r, s)) is not None
            and (d["x"], d["y"]) == path[-1]
            and d["screen"] is not None
            for r, path in ((a, PATH_A), (b, PATH_B))
        ),
        "both robots live",
    )
    page = dashboard.page

    # The history button loads the last minute of the fleet; the slider spans that window.
    page.click("#history-toggle")
    state = dashboard.wait(lambda s: history(s)["status"] == "loaded", "the last minute", 30)
    replay = history(state)
    assert state["mode"] == "history"
    assert page.get_attribute("#history-toggle", "aria-pressed") == "true"
    assert replay["to"] - replay["from"] == pytest.approx(60, abs=0.01)
    assert abs(replay["to"] - time.time()) < 30
    assert replay["from"] < t0 and t0 + 6 < replay["to"]
    assert float(page.get_attribute(SLIDER, "min") or "nan") == pytest.approx(replay["from"])
    assert float(page.get_attribute(SLIDER, "max") or "nan") == pytest.approx(replay["to"])
    assert replay["readings"] >= 12
    assert "readings of" in page.inner_text("#history .history-status")
    # It starts at the first reading in the window (ours or an earlier test's).
    assert replay["from"] <= replay["time"] <= t0

    # Playing at 1x moves both markers through the published positions, in order.
    seek(dashboard, t0 - 0.5)
    dashboard.wait(
        lambda s: all((d := dashboard.device(r, s)) and d["screen"] is None for r in (a, b)),
        "neither robot to have reported yet",
    )
    page.click(PLAY)
    dashboard.wait(lambda s: history(s)["playing"], "the replay to play")
    assert page.get_attribute(PLAY, "aria-label") == "Pause"
    seen, samples = play_through(dashboard, {a: PATH_A, b: PATH_B}, t0 + 5.6)
    assert seen == {a: PATH_A, b: PATH_B}
    assert replay_rate(samples[0], samples[-1]) == pytest.approx(1, rel=0.02)

    # Pausing stops the clock and the markers.
    page.click(PLAY)
    paused = dashboard.wait(lambda s: not history(s)["playing"], "the replay to pause")
    assert page.get_attribute(PLAY, "aria-label") == "Play"
    time.sleep(0.5)
    still = dashboard.state()
    assert history(still)["time"] == history(paused)["time"]
    assert [dashboard.device(r, still)["screen"] for r in (a, b)] == [  # type: ignore[index]
        dashboard.device(r, paused)["screen"]  # type: ignore[index]
        for r in (a, b)
    ]

    # At 10x the same readings go by ten times as fast; space plays and pauses.
    page.select_option("#history select[name=speed]", "10")
    seek(dashboard, t0 - 0.5)
    page.focus(SLIDER)
    page.keyboard.press(" ")
    dashboard.wait(lambda s: history(s)["playing"] and history(s)["speed"] == 10, "10x")
    seen, samples = play_through(dashboard, {a: PATH_A}, t0 + 5.1)
    assert seen[a][-1] == PATH_A[-1] and seen[a] == sorted(seen[a], key=PATH_A.index)
    assert replay_rate(samples[0], samples[-1]) == pytest.approx(10, rel=0.02)
    page.keyboard.press(" ")
    dashboard.wait(lambda s: not history(s)["playing"], "space to pause")

    # The selected robot's whole track is drawn as the server simplified it for the zoom.
    dashboard.select_in_list(a)
    for zoom in ("none", "out"):
        if zoom == "out":
            for _ in range(3):
                page.click('[data-zoom="out"]')
        state = dashboard.wait(
            lambda s: (
                (t := history(s)["track"]) is not None
                and t["deviceId"] == a
                and t["state"] == "loaded"
                and t["tolerance"] == track_tolerance(s["view"]["scale"])
                and t["drawn"] == t["count"]
            ),
            f"the simplified track (zoom {zoom})",
        )
        track, replay = history(state)["track"], history(state)
        answer = server.get(
            f"/api/devices/{a}/history?from={replay['from']}&to={replay['to']}"
            f"&simplify={track['tolerance']}"
        ).json()
        assert track["points"] == [[p["x"], p["y"]] for p in answer["points"]]
        assert track["points"] == [[0.0, 0.0], [3.0, 0.0], [3.0, 2.0]]
    assert track["tolerance"] > 0.01

    # Back to live: the plane looks where it did, and a new reading shows.
    page.click('#history [data-action="live"]')
    back = dashboard.wait(
        lambda s: s["mode"] == "live" and s["view"] == before["view"], "the live view back"
    )
    assert page.locator("#history").is_hidden()
    assert page.get_attribute("#history-toggle", "aria-pressed") == "false"
    assert back["selected"] is None and not back["following"]
    assert back["history"]["track"] is None
    publish(server, a, x=42.0, y=24.0)
    dashboard.wait(
        lambda s: (
            s["connection"] == "live"
            and (d := dashboard.device(a, s)) is not None
            and at(d, s, 42.0, 24.0)
        ),
        "the new live reading",
    )


def local(seconds: float) -> str:
    """Epoch seconds as a datetime-local input takes them (local time)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(seconds))


def test_history_of_one_device_in_a_custom_window(dashboard: Dashboard, server: Server) -> None:
    robot, other = unique("custom"), unique("custom")
    t0 = round(time.time()) - 30.0
    publish_path(server, robot, PATH_A, t0)
    publish_path(server, other, PATH_B, t0)
    wait_archived(server, [robot, other], 12, t0)
    page = dashboard.page
    page.click("#history-toggle")
    dashboard.wait(lambda s: history(s)["status"] == "loaded", "the last minute", 30)

    page.fill("#history input[name=device]", robot)
    page.select_option("#history select[name=preset]", "custom")
    page.fill("#history input[name=from]", local(t0 - 1))
    page.fill("#history input[name=to]", local(t0 + 12))
    page.click("#history button[type=submit]")
    state = dashboard.wait(
        lambda s: history(s)["status"] == "loaded" and history(s)["device"] == robot,
        "the custom window",
        30,
    )
    replay = history(state)
    assert (replay["from"], replay["to"]) == (t0 - 1, t0 + 12)
    assert replay["readings"] == len(PATH_A)
    assert [d["id"] for d in state["devices"]] == [robot]

    # Space from the page (not from a control) plays it to the end of the window.
    page.select_option("#history select[name=speed]", "60")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press(" ")
    end = dashboard.wait(
        lambda s: not history(s)["playing"] and history(s)["time"] == t0 + 12, "the end", 30
    )
    device = dashboard.device(robot, end)
    assert device is not None and (device["x"], device["y"]) == PATH_A[-1]
    assert device["stale"]  # seven seconds after its last reading


def test_history_mode_says_when_the_lake_is_off(browser: Browser, tmp_path: Path) -> None:
    require("mosquitto")
    srv = start_server(tmp_path, "--lake", "off")
    try:
        dashboard = open_dashboard(browser, srv.http + "/")
        page = dashboard.page
        page.click("#history-toggle")
        dashboard.wait(lambda s: history(s)["status"] == "off", "the lake-off message")
        status = page.locator("#history .history-status")
        assert status.is_visible()
        assert "History is off" in status.inner_text()
        assert "--lake off" in status.inner_text()
        assert page.locator(PLAY).is_disabled() and page.locator(SLIDER).is_disabled()
        page.click('#history [data-action="live"]')
        dashboard.wait(lambda s: s["mode"] == "live" and s["connection"] == "live", "live again")
        dashboard.expect_console_error("status of 503")
        page.context.close()
        assert dashboard.errors == []
    finally:
        stop_process(srv.process)
