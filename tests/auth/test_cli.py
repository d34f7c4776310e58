"""``iotstream users`` and ``iotstream apikeys`` change the accounts a server reads."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

from iotstream.auth import Authenticator, Role
from iotstream.auth.file import FileAccounts
from iotstream.cli import main
from iotstream.config import AuthSettings


def run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    stdin: str = "",
) -> str:  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    main(argv)
    return capsys.readouterr().out


def test_users_and_api_keys_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--data-dir", str(tmp_path)]
    out = run(["users", "add", "otto", "--role", "operator", *where], monkeypatch, capsys,
              "a fine password\n")  # fmt: skip
    assert "added operator otto" in out
    assert run(["users", "list", *where], monkeypatch, capsys).startswith("otto\toperator\t")
    key = run(["apikeys", "add", "tracker", "--role", "viewer", *where], monkeypatch, capsys)
    key = key.strip()
    assert key.startswith("iots_")
    path = tmp_path / "auth" / "accounts.json"
    assert key not in path.read_text() and "a fine password" not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0

    async def check(removed: bool) -> None:
        async with Authenticator(FileAccounts(path), AuthSettings(), required=False) as auth:
            if removed:
                assert await auth.accounts.users() == []
                assert await auth.accounts.api_keys() == []
                return
            assert (await auth.login("otto", "a fine password", "::1")).role is Role.OPERATOR
            assert (await auth.api_key(key)).name == "tracker"

    asyncio.run(check(removed=False))
    run(["apikeys", "remove", "tracker", *where], monkeypatch, capsys)
    run(["users", "remove", "otto", *where], monkeypatch, capsys)
    asyncio.run(check(removed=True))


def test_a_short_password_or_a_taken_name_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--data-dir", str(tmp_path)]
    with pytest.raises(SystemExit) as short:
        run(["users", "add", "vera", "--role", "viewer", *where], monkeypatch, capsys, "short\n")
    assert short.value.code == 2
    run(["users", "add", "vera", "--role", "viewer", *where], monkeypatch, capsys, "long enough\n")
    with pytest.raises(SystemExit):
        run(["users", "add", "vera", "--role", "admin", *where], monkeypatch, capsys, "x" * 9)
    assert "exists" in capsys.readouterr().err


def test_the_last_admin_cannot_be_removed_from_the_command_line_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--data-dir", str(tmp_path)]
    run(["users", "add", "root", "--role", "admin", *where], monkeypatch, capsys, "long enough\n")
    with pytest.raises(SystemExit) as refused:
        run(["users", "remove", "root", *where], monkeypatch, capsys)
    assert refused.value.code == 2
    assert "the last admin cannot be removed" in capsys.readouterr().err
    run(["users", "add", "deputy", "--role", "admin", *where], monkeypatch, capsys, "also long\n")
    assert "removed root" in run(["users", "remove", "root", *where], monkeypatch, capsys)
