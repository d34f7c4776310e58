"""MQTT accounts of the embedded Mosquitto: a password file, an ACL file, and the server's own
accounts, all in the broker's directory (``<data-dir>/mosquitto``)::

    passwd            Mosquitto's password file: every device and the server's accounts, hashed
    acl               what each account may read and write (written at every start)
    server-accounts   the passwords of the server's own accounts, for its clients (mode 0600)
    mosquitto.pid     the running broker, which ``reload()`` sends SIGHUP

A device's user name is its ``DeviceId``; the ACL lets it write ``sensors/<id>/#`` and
``orin/<id>/command/ack|result``, and read ``orin/<id>/command``, and nothing else. The server's
accounts (``SERVER_ACCOUNTS``) read and write what the ingest, the commands and the simulated
robots need. A device's password is printed once and only its hash is kept.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import BrokerError, InvalidDeviceId
from ..models import DeviceId

INGEST = "iotstream-ingest"
COMMANDS = "iotstream-commands"
SIMULATOR = "iotstream-simulator"
_ACKS = ("read orin/+/command/ack", "read orin/+/command/result")
SERVER_ACCOUNTS: dict[str, tuple[str, ...]] = {
    INGEST: ("read sensors/#", *_ACKS),
    COMMANDS: ("write orin/+/command", *_ACKS),
    # Simulated robots are devices of the device SDK: commands in, acknowledgements out.
    SIMULATOR: (
        "write sensors/#",
        "read orin/+/command",
        "write orin/+/command/ack",
        "write orin/+/command/result",
    ),
}
"""The server's own accounts and their ACL lines."""
DEVICE_PATTERNS = (
    "write sensors/%u/#",
    "read orin/%u/command",
    "write orin/%u/command/ack",
    "write orin/%u/command/result",
)
"""What every device may do, ``%u`` being its user name (authenticated, unlike a client id)."""

PASSWD = "passwd"
ACL = "acl"
SERVER_PASSWORDS = "server-accounts"
PID_FILE = "mosquitto.pid"
CONFIG = "mosquitto.conf"
_LOCK = "accounts.lock"
# Mosquitto's own format ($7$: PBKDF2-SHA512); the passwords are random, so the iteration
# count guards little and costs every CONNECT: Mosquitto's default order of magnitude.
_ITERATIONS = 1000
_SALT_BYTES = 12


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str


def account_name(text: str) -> DeviceId:
    """The device id ``text`` as an MQTT user name; raises ``InvalidDeviceId`` saying why it
    cannot be one (the password file's format adds ``:`` and outer blanks to what a device
    id refuses, and the server's account names are taken)."""
    name = DeviceId.parse(text)
    if ":" in name:
        raise InvalidDeviceId("a device with an MQTT account cannot have ':' in its id")
    if name != name.strip():
        raise InvalidDeviceId("a device with an MQTT account cannot start or end with a blank")
    if name in SERVER_ACCOUNTS:
        raise InvalidDeviceId(f"{name} is the name of one of the server's own accounts")
    return name


def password_hash(password: str, salt: bytes | None = None) -> str:
    """``password`` hashed as Mosquitto's password file keeps it."""
    salt = salt or secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    encode = base64.b64encode
    return f"$7${_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def password_matches(password: str, hashed: str) -> bool:
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        found = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except ValueError:
        return False
    return secrets.compare_digest(found, base64.b64decode(digest))


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` at once (a reader never sees half a file), readable by its owner."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


class Accounts:
    """The account files in ``directory``; every change holds a lock, so the server and
    ``iotstream devices`` may edit them at once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.passwd = directory / PASSWD
        self.acl = directory / ACL

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with (self.directory / _LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _entries(self) -> dict[str, str]:
        """The password file's user names and hashes, in file order."""
        entries: dict[str, str] = {}
        if self.passwd.exists():
            for line in self.passwd.read_text().splitlines():
                name, sep, hashed = line.partition(":")
                if sep and not line.startswith("#"):
                    entries[name.strip()] = hashed.strip()
        return entries

    def _save(self, entries: dict[str, str]) -> None:
        _write_private(self.passwd, "".join(f"{n}:{h}\n" for n, h in entries.items()))

    def devices(self) -> list[str]:
        """The user names of the devices with an account, sorted."""
        return sorted(name for name in self._entries() if name not in SERVER_ACCOUNTS)

    def add_device(self, text: str, *, replace: bool = False) -> Credentials:
        """A new account for device ``text`` with a random password, returned once; with
        ``replace`` an existing one gets a new password, else it is an error."""
        name = account_name(text)
        password = secrets.token_hex(16)
        with self._locked():
            entries = self._entries()
            if name in entries and not replace:
                raise BrokerError(f"{name} already has an MQTT account")
            entries[name] = password_hash(password)
            self._save(entries)
        return Credentials(name, password)

    def remove_device(self, text: str) -> bool:
        """Delete the device's account; ``False`` when it had none."""
        name = account_name(text)
        with self._locked():
            entries = self._entries()
            if entries.pop(name, None) is None:
                return False
            self._save(entries)
        return True

    def prepare(self) -> dict[str, Credentials]:
        """Make the server's accounts (new random passwords the first time, kept in
        ``server-accounts``) and the ACL file; returns the server's credentials by name."""
        with self._locked():
            stored = self.directory / SERVER_PASSWORDS
            passwords: dict[str, str] = json.loads(stored.read_text()) if stored.exists() else {}
            missing = [name for name in SERVER_ACCOUNTS if name not in passwords]
            if missing:
                passwords.update((name, secrets.token_hex(16)) for name in missing)
                _write_private(stored, json.dumps(passwords, indent=2) + "\n")
            entries = self._entries()
            changed = False
            for name in SERVER_ACCOUNTS:
                if not password_matches(passwords[name], entries.get(name, "")):
                    entries[name] = password_hash(passwords[name])
                    changed = True
            if changed or not self.passwd.exists():
                self._save(entries)
            _write_private(self.acl, acl_text())
        return {name: Credentials(name, passwords[name]) for name in SERVER_ACCOUNTS}

    def broker_pid(self) -> int | None:
        """The pid of the Mosquitto running on these files, if one does."""
        try:
            pid = int((self.directory / PID_FILE).read_text())
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        config = str((self.directory / CONFIG).resolve()).encode()
        if not command or not command[0].endswith(b"mosquitto") or config not in command:
            return None  # the pid file outlived its broker, and the pid went to another process
        return pid

    def enforced(self) -> bool:
        """Whether the broker's configuration in this directory checks these accounts."""
        try:
            return "allow_anonymous false" in (self.directory / CONFIG).read_text().splitlines()
        except OSError:
            return False

    def reload(self) -> int | None:
        """Make a running broker read the files again (SIGHUP: a new account works at once,
        a removed one's connection is closed; nobody else is disconnected). Returns its pid,
        or ``None`` when none runs (it reads them when it starts)."""
        pid = self.broker_pid()
        if pid is None:
            return None
        try:
            os.kill(pid, signal.SIGHUP)
        except PermissionError as exc:
            raise BrokerError(
                f"cannot signal the broker (pid {pid}) to reload its accounts: {exc.strerror}; "
                "run this as the user the server runs as"
            ) from exc
        except ProcessLookupError:
            return None
        return pid


def acl_text() -> str:
    """The ACL file: the server's accounts, then what every device may do."""
    lines = ["# Written by iotstream at every start: edit iotstream.broker.accounts instead."]
    for name, rules in SERVER_ACCOUNTS.items():
        lines += ["", f"user {name}", *(f"topic {rule}" for rule in rules)]
    # Patterns apply to every account, whatever ``user`` line comes before them.
    lines += ["", "# Every device, by its user name", *(f"pattern {p}" for p in DEVICE_PATTERNS)]
    return "\n".join(lines) + "\n"
