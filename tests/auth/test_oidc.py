"""Tokens of an external OpenID Connect provider: the test serves the provider's discovery
document and JWKS on a free loopback port and signs tokens with its keys."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI

from harness import free_port
from iotstream.api import ApiContext, create_app
from iotstream.auth import Authenticator, oidc
from iotstream.auth.file import FileAccounts
from iotstream.config import AuthSettings

AUDIENCE = "iotstream-fleet"


class Provider:
    """A discovery document and a JWKS over HTTP; ``fetches`` counts JWKS downloads."""

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/realms/robots"
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        self.add_key("k1")
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/.well-known/openid-configuration"):
                    body: dict[str, Any] = {
                        "issuer": provider.issuer,
                        "jwks_uri": f"{provider.issuer}/certs",
                    }
                elif self.path.endswith("/certs"):
                    provider.fetches += 1
                    body = {"keys": [provider.jwk(kid) for kid in provider.keys]}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self, kid: str) -> dict[str, Any]:
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
        return {**public, "kid": kid, "alg": "RS256", "use": "sig"}

    def token(self, kid: str = "k1", **claims: Any) -> str:
        body = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-42",
            "exp": time.time() + 60,
            "realm_access": {"roles": ["offline_access", "operator"]},
            **claims,
        }
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    provider = Provider()
    provider.thread.start()
    yield provider
    provider.server.shutdown()
    provider.server.server_close()
    provider.thread.join()


@pytest.fixture
async def oidc_app(
    context: ApiContext, provider: Provider, tmp_path: Path
) -> AsyncIterator[FastAPI]:
    settings = AuthSettings(
        oidc_issuer=provider.issuer,
        oidc_audience=AUDIENCE,
        oidc_role_claim="realm_access.roles",
    )
    auth = Authenticator(FileAccounts(tmp_path / "accounts.json"), settings, required=True)
    async with auth:
        context.auth = auth
        yield create_app(context, ["*"])


async def call(app: FastAPI, token: str, path: str = "/api/auth/me") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers={"Authorization": f"Bearer {token}"})


async def test_a_providers_token_opens_the_api_with_the_role_of_its_claim(
    oidc_app: FastAPI, provider: Provider
) -> None:
    response = await call(oidc_app, provider.token())
    assert response.status_code == 200
    assert response.json()["name"] == "user-42"
    assert (response.json()["role"], response.json()["kind"]) == ("operator", "oidc")
    docs = (await call(oidc_app, "", "/openapi.json")).json()
    assert docs["components"]["securitySchemes"]["OpenIDConnect"]["openIdConnectUrl"] == (
        f"{provider.issuer}/.well-known/openid-configuration"
    )


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "another-service"},
        {"exp": time.time() - 10},
        {"realm_access": {"roles": ["offline_access"]}},
    ],
)
async def test_a_wrong_audience_an_expired_token_or_no_role_is_401(
    oidc_app: FastAPI, provider: Provider, claims: dict[str, Any]
) -> None:
    assert (await call(oidc_app, provider.token(**claims))).status_code == 401


async def test_algorithms_outside_the_allow_list_are_refused(
    oidc_app: FastAPI, provider: Provider
) -> None:
    body = {"iss": provider.issuer, "aud": AUDIENCE, "sub": "x", "exp": time.time() + 60}
    # HS256 with the provider's public key as the secret: the classic confusion attack.
    public = provider.jwk("k1")["n"]
    forged = jwt.encode(body, public, algorithm="HS256", headers={"kid": "k1"})
    assert (await call(oidc_app, forged)).status_code == 401
    ec_key = ec.generate_private_key(ec.SECP384R1())
    es384 = jwt.encode(body, ec_key, algorithm="ES384", headers={"kid": "k1"})
    assert (await call(oidc_app, es384)).status_code == 401


async def test_an_unknown_kid_refreshes_the_keys_at_most_once_a_minute(
    oidc_app: FastAPI, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await call(oidc_app, provider.token())).status_code == 200
    assert provider.fetches == 1
    for kid in ("ghost1", "ghost2", "ghost3"):
        token = jwt.encode(
            {"iss": provider.issuer, "aud": AUDIENCE, "sub": "x", "exp": time.time() + 60},
            provider.keys["k1"],
            algorithm="RS256",
            headers={"kid": kid},
        )
        assert (await call(oidc_app, token)).status_code == 401
    assert provider.fetches == 1  # within the minute: no download for made-up key ids

    # The provider rotates; once the interval has passed, its new key is fetched.
    monkeypatch.setattr(oidc, "REFRESH_INTERVAL", 0.2)
    provider.add_key("k2")
    await asyncio.sleep(0.3)
    assert (await call(oidc_app, provider.token("k2"))).status_code == 200
    assert provider.fetches == 2
