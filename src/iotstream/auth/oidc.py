"""Tokens of an external OpenID Connect provider (``--oidc-issuer``, ``--oidc-audience``).

The provider's keys come from the ``jwks_uri`` of its discovery document
(``<issuer>/.well-known/openid-configuration``). They are kept in memory and fetched again
when a token names a key id not among them, at most once per ``REFRESH_INTERVAL``, so tokens
with made-up key ids cannot make iotstream hammer the provider. Only the algorithms of
``--oidc-algorithms`` are accepted, never ``none`` or a shared-secret one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

import jwt

from ..errors import InvalidCredentials
from .roles import Principal, Role

log = logging.getLogger(__name__)

REFRESH_INTERVAL = 60.0
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT = 1 << 20


def _fetch_json(url: str) -> Any:
    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) URL: {url!r}")
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:
        return json.loads(response.read(MAX_DOCUMENT))


def claim(claims: dict[str, Any], path: str) -> Any:
    """The value at the dotted ``path`` of ``claims`` (``realm_access.roles``), or ``None``."""
    node: Any = claims
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def role_of(value: Any) -> Role | None:
    """The highest iotstream role named by a claim's value (a string or a list)."""
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    known = {role.value: role for role in Role}
    roles = [known[name] for name in names if isinstance(name, str) and name in known]
    return max(roles, key=lambda role: role.rank, default=None)


class OidcVerifier:
    def __init__(
        self, issuer: str, audience: str, *, role_claim: str, algorithms: list[str]
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.role_claim = role_claim
        self.algorithms = algorithms
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -REFRESH_INTERVAL
        self._lock = asyncio.Lock()

    def accepts(self, unverified: dict[str, Any]) -> bool:
        """Whether a token with these (unverified) claims is this provider's to check."""
        return str(unverified.get("iss", "")).rstrip("/") == self.issuer

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < REFRESH_INTERVAL:
                return
            self._fetched_at = time.monotonic()
            try:
                discovery = await asyncio.to_thread(
                    _fetch_json, f"{self.issuer}/.well-known/openid-configuration"
                )
                jwks = await asyncio.to_thread(_fetch_json, discovery["jwks_uri"])
                keys = jwt.PyJWKSet.from_dict(jwks).keys
            except (OSError, ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
                log.warning("cannot fetch the keys of %s: %s", self.issuer, exc)
                return
            self._keys = {key.key_id: key for key in keys if key.key_id}

    async def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidCredentials("malformed token") from exc
        kid, algorithm = header.get("kid"), header.get("alg")
        if algorithm not in self.algorithms:
            raise InvalidCredentials("token algorithm not accepted")
        if not isinstance(kid, str):
            raise InvalidCredentials("token without a key id")
        if kid not in self._keys:
            await self._refresh()
        key = self._keys.get(kid)
        if key is None:
            raise InvalidCredentials("token signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidCredentials("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidCredentials("invalid token") from exc
        role = role_of(claim(claims, self.role_claim))
        if role is None:
            raise InvalidCredentials(f"token has no iotstream role in {self.role_claim!r}")
        return Principal(str(claims["sub"]), role, "oidc", float(claims["exp"]))
