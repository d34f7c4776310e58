"""The keys that sign and check iotstream's own tokens (EdDSA over Ed25519, or ES256).

Generated keys live in the accounts store, so every api instance signs with the same key and
checks the tokens of the others. The newest key signs; after ``lifetime`` seconds a new one
replaces it, and the old one is kept (and published at ``/.well-known/jwks.json``) until
the last token it signed has expired. A key given by path (``--jwt-key``) signs instead.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from ..errors import ConfigError, InvalidCredentials
from .base import Accounts, SigningKey

log = logging.getLogger(__name__)

ISSUER = "iotstream"
AUDIENCE = "iotstream"
# How often an unknown key id may make this instance look for keys another one made.
RELOAD_INTERVAL = 1.0

PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class _Key:
    kid: str
    algorithm: str
    private: PrivateKey
    public: PublicKey
    created: float

    def jwk(self) -> dict[str, Any]:
        public = self.public
        jwk: dict[str, Any]
        if isinstance(public, ed25519.Ed25519PublicKey):
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "alg": self.algorithm, "use": "sig"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _load(pem: str | bytes, created: float, source: str) -> _Key:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{source}: not an unencrypted PEM private key ({exc})") from exc
    if isinstance(private, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    elif isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1":
        algorithm = "ES256"
    else:
        raise ConfigError(f"{source}: the key must be Ed25519 or EC P-256")
    public = private.public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kid = _b64(hashlib.sha256(der).digest())[:16]
    return _Key(kid, algorithm, private, public, created)


def generate_key() -> SigningKey:
    """A new Ed25519 signing key, as the accounts store keeps it."""
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = _load(pem, time.time(), "generated key")
    return SigningKey(key.kid, pem.decode(), key.created)


class KeyRing:
    """Signs tokens with the current key and checks them against every key still valid."""

    def __init__(
        self, accounts: Accounts, *, token_ttl: float, lifetime: float, given: Path | None = None
    ) -> None:
        self.accounts = accounts
        self.token_ttl = token_ttl
        self.lifetime = lifetime
        self._given: _Key | None = None
        if given is not None:
            try:
                self._given = _load(given.read_bytes(), given.stat().st_mtime, str(given))
            except OSError as exc:
                raise ConfigError(f"cannot read --jwt-key {given}: {exc.strerror}") from exc
        self._keys: dict[str, _Key] = {}
        self._newest: _Key | None = None
        self._loaded_at = 0.0

    async def load(self) -> None:
        """Read the stored keys; make a new one when none signs any more; drop those whose
        tokens have all expired."""
        now = time.time()
        stored = sorted(await self.accounts.signing_keys(), key=lambda k: k.created)
        if self._given is None and (not stored or now - stored[-1].created >= self.lifetime):
            key = generate_key()
            if await self.accounts.add_signing_key(key):
                log.info("new token signing key %s", key.kid)
            stored = sorted(await self.accounts.signing_keys(), key=lambda k: k.created)
        for older, newer in itertools.pairwise(list(stored)):
            # ``older`` stopped signing when ``newer`` came; its last token ends ttl later
            # (a minute more for the clocks of other instances).
            if now - newer.created > self.token_ttl + 60:
                await self.accounts.remove_signing_key(older.kid)
                stored.remove(older)
        keys = {key.kid: _load(key.pem, key.created, f"signing key {key.kid}") for key in stored}
        if self._given is not None:
            keys[self._given.kid] = self._given
        self._keys = keys
        self._newest = self._given or keys[stored[-1].kid]
        self._loaded_at = time.monotonic()

    def jwks(self) -> dict[str, Any]:
        """The public keys, as ``/.well-known/jwks.json`` publishes them."""
        return {"keys": [key.jwk() for key in self._keys.values()]}

    async def sign(self, claims: dict[str, Any]) -> str:
        newest = self._newest
        if newest is None or (
            self._given is None and time.time() - newest.created >= self.lifetime
        ):
            await self.load()
            newest = self._newest
        assert newest is not None
        return jwt.encode(
            claims, newest.private, algorithm=newest.algorithm, headers={"kid": newest.kid}
        )

    async def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this server (or another instance) signed; raises
        ``InvalidCredentials`` when it is not one, is expired or its key is gone."""
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as exc:
            raise InvalidCredentials("malformed token") from exc
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None and time.monotonic() - self._loaded_at > RELOAD_INTERVAL:
            await self.load()
            key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidCredentials("token signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[key.algorithm],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": ["exp", "iat", "sub", "role"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidCredentials("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidCredentials("invalid token") from exc
        return claims
