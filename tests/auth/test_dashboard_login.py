"""The dashboard against ``iotstream run --auth on``: it asks for a login, refuses a wrong
password, and once logged in streams and polls with the token; logging out asks again."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, ConsoleMessage, expect

from harness import stop_process
from tests.conftest import Server, start_server

pytestmark = [pytest.mark.browser, pytest.mark.e2e]


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    server = start_server(tmp_path_factory.mktemp("secured-dashboard"), "--auth", "on")
    try:
        found = re.search(r"Created the user admin with the password (\S+)", server.log.read_text())
        assert found is not None, server.log.read_text()
        yield server, found.group(1)
    finally:
        stop_process(server.process)


def test_logging_in_to_the_dashboard(browser: Browser, secured_server: tuple[Server, str]) -> None:
    server, password = secured_server
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", console)
    try:
        page.goto(server.http + "/")
        dialog = page.locator("#login")
        expect(dialog).to_be_visible()
        assert page.evaluate("window.iotstream.state().connection") == "connecting"

        page.fill("#login input[name=username]", "admin")
        page.fill("#login input[name=password]", "not the password")
        page.click("#login button[type=submit]")
        expect(page.locator("#login .login-error")).to_have_text("wrong user name or password")

        page.fill("#login input[name=password]", password)
        page.click("#login button[type=submit]")
        expect(dialog).to_be_hidden()
        expect(page.locator("#user .name")).to_have_text("admin · admin")
        page.wait_for_function("window.iotstream.state().connection === 'live'")
        # The pipeline panel polls /api/stats with the token: the WebSocket client shows.
        expect(page.locator("[data-metric=clients]")).to_have_text("1")

        page.click("#user [data-action=logout]")
        expect(dialog).to_be_visible()
        expect(page.locator("#user")).to_be_hidden()
    finally:
        page.context.close()
    # Only the refusals the test provoked: the first look without a session, the wrong password.
    assert errors and all("401" in error for error in errors), errors
