"""The authenticator: logs users in, and tells who holds a token or an API key.

``Authenticator`` is what the API asks; the functions below it manage accounts and are
shared by the admin routes and the ``iotstream users``/``apikeys`` commands.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from pwdlib import PasswordHash

from ..config import AuthSettings
from ..errors import AuthError, ConfigError, InvalidCredentials, LoginThrottled
from ..health import Health
from ..lifecycle import Component
from .base import Accounts, ApiKey, User
from .keys import AUDIENCE, ISSUER, KeyRing
from .limiter import LoginLimiter
from .oidc import OidcVerifier
from .roles import Principal, Role, check_name

log = logging.getLogger(__name__)

PASSWORDS = PasswordHash.recommended()
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
API_KEY_PREFIX = "iots_"
TOKEN_CACHE = 10_000


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the user does not exist, so an unknown name takes as long as a
    known one with a wrong password."""
    return PASSWORDS.hash(secrets.token_urlsafe(16))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AuthError(f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


async def add_user(accounts: Accounts, name: str, role: Role, password: str) -> User:
    """Add a user; ``AuthError`` when the name is invalid or taken or the password too short."""
    try:
        check_name(name)
    except ValueError as exc:
        raise AuthError(str(exc)) from exc
    check_password(password)
    password_hash = await asyncio.to_thread(PASSWORDS.hash, password)
    user = User(name, role, password_hash, time.time())
    if not await accounts.add_user(user):
        raise AuthError(f"user {name!r} exists; remove it first")
    return user


async def remove_user(accounts: Accounts, name: str) -> bool:
    """Remove a user (``False``: there is none by that name); ``AuthError`` for the last
    admin, who cannot be removed. Its tokens stop working when they expire."""
    found = await accounts.user(name)
    if found is None:
        return False
    if found.role is Role.ADMIN:
        admins = [u for u in await accounts.users() if u.role is Role.ADMIN]
        if len(admins) <= 1:
            raise AuthError("the last admin cannot be removed")
    return await accounts.remove_user(name)


async def add_api_key(accounts: Accounts, name: str, role: Role) -> tuple[ApiKey, str]:
    """A new API key and its secret text, which is stored only as a hash: show it once."""
    try:
        check_name(name, "API key")
    except ValueError as exc:
        raise AuthError(str(exc)) from exc
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(name, role, _digest(secret), time.time())
    if not await accounts.add_api_key(key):
        raise AuthError(f"API key {name!r} exists; remove it first")
    return key, secret


async def ensure_admin(accounts: Accounts) -> str | None:
    """With no user at all, create ``admin`` with a random password and return the password
    (to show once); else ``None``. Of several instances starting at once, one creates it."""
    if await accounts.users():
        return None
    password = secrets.token_urlsafe(18)
    try:
        await add_user(accounts, "admin", Role.ADMIN, password)
    except AuthError:
        return None  # another instance was first
    return password


@dataclass(frozen=True, slots=True)
class Token:
    access_token: str
    expires_in: int
    role: Role


class Authenticator(Component):
    """Checks credentials against the accounts, the key ring and an optional OIDC issuer.

    ``required``: whether the API refuses callers without credentials (``auth_required``).
    """

    def __init__(self, accounts: Accounts, settings: AuthSettings, *, required: bool) -> None:
        self.accounts = accounts
        self.settings = settings
        self.required = required
        self.keys = KeyRing(
            accounts,
            token_ttl=settings.token_ttl,
            lifetime=settings.key_lifetime * 86_400,
            given=settings.jwt_key,
        )
        self.limiter = LoginLimiter(settings.login_attempts)
        self.oidc: OidcVerifier | None = None
        if settings.oidc_issuer is not None:
            if settings.oidc_audience is None:
                raise ConfigError("--oidc-issuer needs --oidc-audience")
            self.oidc = OidcVerifier(
                settings.oidc_issuer,
                settings.oidc_audience,
                role_claim=settings.oidc_role_claim,
                algorithms=settings.oidc_algorithms,
            )
        self._tokens: dict[str, Principal] = {}
        self.initial_password: str | None = None
        """The password of the ``admin`` this start created, to print once."""
        self._running = False

    async def start(self) -> None:
        await self.accounts.open()
        try:
            await self.keys.load()
            if self.required:
                self.initial_password = await ensure_admin(self.accounts)
        except BaseException:
            await self.accounts.close()
            raise
        self._running = True

    async def stop(self) -> None:
        self._running = False
        await self.accounts.close()

    def health(self) -> Health:
        return Health(self._running, "credentials required" if self.required else "open")

    async def login(self, name: str, password: str, client: str) -> Token:
        """A token for ``name``; ``InvalidCredentials`` for a wrong name or password,
        ``LoginThrottled`` after too many failures for the name or the client address."""
        keys = (f"user:{name}", f"addr:{client}")
        wait = self.limiter.retry_after(*keys)
        if wait > 0:
            raise LoginThrottled(wait)
        user = await self.accounts.user(name) if len(password) <= MAX_PASSWORD else None
        stored = user.password_hash if user is not None else _dummy_hash()
        valid = await asyncio.to_thread(PASSWORDS.verify, password[:MAX_PASSWORD], stored)
        if user is None or not valid:
            self.limiter.failed(*keys)
            raise InvalidCredentials("wrong user name or password")
        self.limiter.succeeded(keys[0])
        now = time.time()
        ttl = int(self.settings.token_ttl)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user.name,
            "role": user.role.value,
            "iat": int(now),
            # Whole seconds, rounded up: a token never lives shorter than it says.
            "exp": math.ceil(now + ttl),
            "jti": secrets.token_urlsafe(12),
        }
        return Token(await self.keys.sign(claims), ttl, user.role)

    async def bearer(self, token: str) -> Principal:
        """Who holds a token of this server or of the OIDC issuer."""
        # A token checked once holds until it expires (its key outlives it), and a signature
        # check costs ~0.2 ms: remembering the token makes every request after the first cheap.
        known = self._tokens.get(token)
        if known is not None and known.expires is not None and known.expires > time.time():
            return known
        principal = await self._check_bearer(token)
        if len(self._tokens) >= TOKEN_CACHE:
            self._tokens.clear()
        self._tokens[token] = principal
        return principal

    async def _check_bearer(self, token: str) -> Principal:
        if self.oidc is not None:
            try:
                unverified: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
            except jwt.PyJWTError as exc:
                raise InvalidCredentials("malformed token") from exc
            if self.oidc.accepts(unverified):
                return await self.oidc.verify(token)
        claims = await self.keys.verify(token)
        try:
            role = Role(claims["role"])
        except ValueError as exc:
            raise InvalidCredentials("invalid token") from exc
        return Principal(str(claims["sub"]), role, "user", float(claims["exp"]))

    async def api_key(self, key: str) -> Principal:
        """Who holds an API key."""
        found = await self.accounts.api_key(_digest(key)) if len(key) <= 256 else None
        if found is None:
            raise InvalidCredentials("unknown API key")
        return Principal(found.name, found.role, "apikey")
