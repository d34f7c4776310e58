"""Tracked commands sent from the dashboard in Debian's headless Chromium to simulated robots of
``iotstream run --simulate`` (what ``make demo`` runs): a goto is shown going queued → sent →
delivered → succeeded and the robot drives to the goal; a command to a robot that is switched
off expires on screen after its TTL and never reaches the robot.

What the page was pushed is read from its own WebSocket (Playwright sees every frame), what it
showed from the command rows' ``data-state`` (each change recorded as it happens), and what the
robot did through REST.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, WebSocket

from .conftest import Server, require, start_server, stop_process
from .test_dashboard import Dashboard

pytestmark = pytest.mark.browser

TTL = 4
"""Seconds every command of the dashboard may wait (the server's ``--command-ttl``)."""
OFF = 10
"""Seconds a rebooted robot stays off: longer than the TTL and the sweep that expires it."""
FLOOR = (60.0, 40.0)
RECORD_SHOWN_STATES = """() => {
    window.shownStates = [];
    new MutationObserver((records) => {
        for (const record of records) {
            const row = record.target;
            window.shownStates.push([row.dataset.commandId, row.dataset.state]);
        }
    }).observe(document.querySelector("#details .results"), {
        subtree: true, attributes: true, attributeFilter: ["data-state"],
    });
}"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require("mosquitto")
    srv = start_server(
        tmp_path_factory.mktemp("demo"),
        "--simulate", "2",
        "--simulate-rate", "10",
        "--command-ttl", str(TTL),
    )  # fmt: skip
    yield srv
    stop_process(srv.process)


class CommandScreen:
    """The dashboard, with every ``command`` frame its WebSocket received and every state its
    command rows showed, in order."""

    def __init__(self, browser: Browser, url: str) -> None:
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        self.frames: list[dict[str, Any]] = []
        page.on("websocket", self._watch)
        self.dashboard = Dashboard(page)
        self.dashboard.open(url)
        self.page = page
        page.evaluate(RECORD_SHOWN_STATES)

    def _watch(self, socket: WebSocket) -> None:
        def received(payload: str | bytes) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "command":
                self.frames.append(frame)

        socket.on("framereceived", received)

    def send(self, device_id: str, text: str) -> str:
        """Type ``text`` in the selected robot's command box; the id of the command made."""
        if self.dashboard.state()["selected"] != device_id:
            self.dashboard.select_in_list(device_id)
        self.page.fill("#details .custom-command input", text)
        self.page.press("#details .custom-command input", "Enter")
        row = self.page.locator("#details .results li").first
        self.page.wait_for_function(
            """(text) => {
                const row = document.querySelector('#details .results li');
                return row?.dataset.status === 'accepted'
                    && row.querySelector('.what').textContent.startsWith(text);
            }""",
            arg=text,
        )
        command_id = row.get_attribute("data-command-id")
        assert command_id
        return command_id

    def wait_shown(self, command_id: str, state: str, timeout: float) -> str:
        """Until the command's row shows ``state``; the row's text then."""
        row = self.page.locator(f'#details .results li[data-command-id="{command_id}"]')
        self.page.locator(
            f'#details .results li[data-command-id="{command_id}"][data-state="{state}"]'
        ).wait_for(timeout=timeout * 1000)
        return row.inner_text()

    def shown(self, command_id: str) -> list[str]:
        """The states the command's row showed, in order, each once."""
        states = [s for c, s in self.page.evaluate("window.shownStates") if c == command_id]
        return [state for state, _ in itertools.groupby(states)]

    def pushed(self, command_id: str) -> list[str]:
        """The states of the command in the frames pushed to the page, in order, each once."""
        states = [
            command["status"]
            for frame in self.frames
            for command in frame["commands"]
            if command["id"] == command_id
        ]
        return [state for state, _ in itertools.groupby(states)]

    def close(self) -> None:
        self.page.context.close()
        assert self.dashboard.errors == []


@pytest.fixture
def screen(browser: Browser, demo: Server) -> Iterator[CommandScreen]:
    screen = CommandScreen(browser, demo.http + "/")
    yield screen
    screen.close()


def online(demo: Server, device_id: str, timeout: float = 20) -> dict[str, Any]:
    state: dict[str, Any] = demo.wait_for(
        f"/api/devices/{device_id}",
        lambda r: r.status_code == 200 and r.json().get("presence") == "online" and "x" in r.json(),
        timeout,
    ).json()
    return state


def is_subsequence(shown: list[str], of: list[str]) -> bool:
    remaining = iter(of)
    return all(state in remaining for state in shown)


def test_a_goto_from_the_dashboard_is_tracked_to_success_and_the_robot_reaches_the_goal(
    screen: CommandScreen, demo: Server
) -> None:
    state = online(demo, "robot1")
    goal = (round(min(55.0, max(5.0, state["x"] + 1.5)), 2), round(state["y"], 2))
    started = time.time()
    command_id = screen.send("robot1", f"goto {goal[0]} {goal[1]}")
    text = screen.wait_shown(command_id, "succeeded", timeout=30)
    assert "result" in text

    # Every move was pushed to the page, in order; the row showed them as they came.
    everything = ["queued", "sent", "delivered", "succeeded"]
    assert screen.pushed(command_id) == everything
    shown = screen.shown(command_id)
    assert shown[-1] == "succeeded" and is_subsequence(shown, everything), shown

    done = demo.get(f"/api/commands/{command_id}").json()
    assert [t["status"] for t in done["transitions"]] == everything
    assert math.dist((done["result"]["x"], done["result"]["y"]), goal) < 0.5
    # The robot's own readings, kept in the history, pass through the goal.
    history = demo.wait_for(
        f"/api/devices/robot1/history?from={started}",
        lambda r: any(
            math.dist((p["x"], p["y"]), goal) < 0.5 for p in r.json()["points"] if "x" in p
        ),
        timeout=20,
    )
    assert history.status_code == 200


def test_a_command_whose_last_frame_is_lost_is_fetched_again_on_the_resync(
    screen: CommandScreen, demo: Server
) -> None:
    state = online(demo, "robot1")
    x = state["x"] + 6.0 if state["x"] < FLOOR[0] / 2 else state["x"] - 6.0
    command_id = screen.send("robot1", f"goto {x:.2f} {state['y']:.2f}")
    screen.wait_shown(command_id, "delivered", timeout=20)
    gaps = screen.dashboard.state()["counts"]["gaps"]

    # The robot drives for seconds; from now on no command frame reaches the page, each loss
    # shows as a gap at the next frame, and the page resyncs with a snapshot, which holds no
    # commands.
    screen.page.evaluate("window.iotstream.loseFrames(100, 'command')")
    demo.wait_for(
        f"/api/commands/{command_id}", lambda r: r.json()["status"] == "succeeded", timeout=30
    )
    screen.wait_shown(command_id, "succeeded", timeout=10)
    assert screen.pushed(command_id)[-1] == "succeeded"  # pushed, and lost on the page
    assert screen.dashboard.state()["counts"]["gaps"] > gaps


def test_a_command_to_a_switched_off_robot_expires_on_screen_and_never_runs(
    screen: CommandScreen, demo: Server
) -> None:
    state = online(demo, "robot2")
    ran_before = state.get("commands", 0)
    reboot = screen.send("robot2", f"reboot {OFF}")
    screen.wait_shown(reboot, "succeeded", timeout=20)
    demo.wait_for("/api/devices/robot2", lambda r: r.json().get("presence") == "offline")

    # The corner farthest from where it stopped: it would not get there by chance.
    corners = [(5.0, 5.0), (55.0, 5.0), (5.0, 35.0), (55.0, 35.0)]
    goal = max(corners, key=lambda c: math.dist(c, (state["x"], state["y"])))
    goto = screen.send("robot2", f"goto {goal[0]} {goal[1]}")
    text = screen.wait_shown(goto, "expired", timeout=TTL + 10)
    assert "never sent" in text
    assert screen.pushed(goto) == ["queued", "expired"]
    assert screen.shown(goto) == ["queued", "expired"]
    expired = demo.get(f"/api/commands/{goto}").json()
    assert (expired["reason"], expired["attempts"]) == ("ttl_expired", 0)
    assert expired["closedAt"] - expired["createdAt"] >= TTL

    # Back on: the robot runs the next command it is sent, and never ran the goto.
    online(demo, "robot2", timeout=OFF + 20)
    probe = screen.send("robot2", "none")
    screen.wait_shown(probe, "succeeded", timeout=20)
    # Each field is a message of its own: wait for the count as well as the last command.
    after = demo.wait_for(
        "/api/devices/robot2",
        lambda r: (
            r.json().get("lastCommand") == "none" and r.json().get("commands", 0) >= ran_before + 2
        ),
    ).json()
    assert after["commands"] == ran_before + 2  # the reboot and the probe: nothing between
    assert math.dist((after["x"], after["y"]), goal) > 5
    assert demo.get(f"/api/commands/{goto}").json()["status"] == "expired"


def test_the_demo_server_log_has_no_errors(demo: Server) -> None:
    log = Path(demo.log).read_text()
    assert " ERROR " not in log, log[-2000:]
