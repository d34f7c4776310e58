"""Roles and who holds them: ``viewer`` < ``operator`` < ``admin``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Role(StrEnum):
    """What a caller may do; each role may do everything the smaller ones may."""

    VIEWER = "viewer"
    """every GET, the WebSocket and the dashboard"""
    OPERATOR = "operator"
    """and commands to devices"""
    ADMIN = "admin"
    """and users, API keys and devices"""

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def covers(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}

PrincipalKind = Literal["user", "apikey", "oidc", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request, with which role, and until when (epoch seconds) the
    credentials hold; ``expires`` is ``None`` for API keys and when auth is off."""

    name: str
    role: Role
    kind: PrincipalKind
    expires: float | None = None


ANONYMOUS = Principal("anonymous", Role.ADMIN, "anonymous")
"""Every caller when auth is off: as today, anyone on loopback may do anything."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


def check_name(name: str, what: str = "user") -> str:
    """A user or API key name: 1-64 letters, digits, ``_ . @ -``, not starting with one of
    the signs. Raises ``ValueError`` with the reason."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"a {what} name is 1-64 letters, digits or _ . @ -, starting with a letter "
            f"or digit; got {name[:80]!r}"
        )
    return name
