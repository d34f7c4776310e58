"""Users log in for short-lived tokens, signed with a key the JWKS publishes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from iotstream.auth import Authenticator, Role, add_user
from iotstream.auth.file import FileAccounts
from iotstream.config import AuthSettings
from iotstream.errors import ConfigError, InvalidCredentials

PASSWORD = "correct horse battery"


async def login(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/auth/token", data={"username": name, "password": password})


async def test_a_user_logs_in_and_the_token_opens_the_api(
    authenticator: Authenticator, secured_client: httpx.AsyncClient
) -> None:
    await add_user(authenticator.accounts, "otto", Role.OPERATOR, PASSWORD)
    response = await login(secured_client, "otto")
    assert response.status_code == 200
    answer = response.json()
    assert answer["token_type"] == "bearer"
    assert (answer["expires_in"], answer["role"]) == (60, "operator")
    headers = {"Authorization": f"Bearer {answer['access_token']}"}
    me = (await secured_client.get("/api/auth/me", headers=headers)).json()
    assert (me["name"], me["role"], me["kind"]) == ("otto", "operator", "user")
    assert me["expires"] == pytest.approx(time.time() + 60, abs=5)
    assert (await secured_client.get("/api/coordinates", headers=headers)).status_code == 200


async def test_the_token_is_signed_with_a_key_of_the_jwks(
    authenticator: Authenticator, secured_client: httpx.AsyncClient
) -> None:
    await add_user(authenticator.accounts, "vera", Role.VIEWER, PASSWORD)
    token = (await login(secured_client, "vera")).json()["access_token"]
    jwks = (await secured_client.get("/.well-known/jwks.json")).json()
    [key] = jwks["keys"]
    assert (key["kty"], key["alg"], key["use"]) == ("OKP", "EdDSA", "sig")
    assert "d" not in key  # the public half only
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    claims = jwt.decode(
        token, jwt.PyJWK(key).key, algorithms=["EdDSA"], audience="iotstream", issuer="iotstream"
    )
    assert (claims["sub"], claims["role"]) == ("vera", "viewer")
    assert claims["exp"] - claims["iat"] in (60, 61)


async def test_a_wrong_password_and_an_unknown_user_get_the_same_401(
    authenticator: Authenticator, secured_client: httpx.AsyncClient
) -> None:
    await add_user(authenticator.accounts, "vera", Role.VIEWER, PASSWORD)
    wrong = await login(secured_client, "vera", "not the password")
    unknown = await login(secured_client, "nobody")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert response.json() == {"detail": "wrong user name or password"}


async def test_failed_logins_are_limited_per_user(
    authenticator: Authenticator, secured_client: httpx.AsyncClient
) -> None:
    await add_user(authenticator.accounts, "vera", Role.VIEWER, PASSWORD)
    for _ in range(3):  # login_attempts=3
        assert (await login(secured_client, "vera", "guess-guess")).status_code == 401
    refused = await login(secured_client, "vera")  # even the right password, for now
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_failed_logins_are_limited_per_client_address(
    authenticator: Authenticator, secured_client: httpx.AsyncClient
) -> None:
    for name in ("a1", "a2", "a3"):
        assert (await login(secured_client, name, "guess-guess")).status_code == 401
    assert (await login(secured_client, "someone-else", "guess-guess")).status_code == 429


async def test_bad_or_foreign_tokens_get_401_with_a_challenge(
    secured_client: httpx.AsyncClient,
) -> None:
    foreign = jwt.encode({"sub": "x", "role": "admin", "exp": time.time() + 60}, "s" * 32)
    for token in ("not-a-token", foreign):
        response = await secured_client.get(
            "/api/coordinates", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
    response = await secured_client.get("/api/coordinates")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="iotstream"'


async def test_a_removed_users_token_ends_with_its_lifetime(tmp_path: Path) -> None:
    auth = Authenticator(
        FileAccounts(tmp_path / "accounts.json"), AuthSettings(token_ttl=1), required=True
    )
    async with auth:
        await add_user(auth.accounts, "otto", Role.OPERATOR, PASSWORD)
        token = (await auth.login("otto", PASSWORD, "127.0.0.1")).access_token
        assert await auth.accounts.remove_user("otto")
        assert (await auth.bearer(token)).name == "otto"  # still within its lifetime
        await asyncio.sleep(2.1)
        with pytest.raises(InvalidCredentials, match="token expired"):
            await auth.bearer(token)
        with pytest.raises(InvalidCredentials, match="wrong user name or password"):
            await auth.login("otto", PASSWORD, "127.0.0.1")


async def test_instances_sharing_the_accounts_check_each_others_tokens(tmp_path: Path) -> None:
    path = tmp_path / "accounts.json"
    settings = AuthSettings(token_ttl=60)
    async with (
        Authenticator(FileAccounts(path), settings, required=True) as first,
        Authenticator(FileAccounts(path), settings, required=True) as second,
    ):
        assert first.initial_password is not None and second.initial_password is None
        token = (await first.login("admin", first.initial_password, "127.0.0.1")).access_token
        assert (await second.bearer(token)).role is Role.ADMIN
        assert first.keys.jwks() == second.keys.jwks()


async def test_rotation_signs_with_a_new_key_and_keeps_the_old_until_its_tokens_expire(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.json"
    # A key lifetime of 1 s (in days), tokens of 4 s.
    settings = AuthSettings(token_ttl=4, key_lifetime=1 / 86_400)
    async with Authenticator(FileAccounts(path), settings, required=True) as auth:
        assert auth.initial_password is not None
        old = (await auth.login("admin", auth.initial_password, "127.0.0.1")).access_token
        await asyncio.sleep(1.1)
        new = (await auth.login("admin", auth.initial_password, "127.0.0.1")).access_token
        old_kid = jwt.get_unverified_header(old)["kid"]
        assert jwt.get_unverified_header(new)["kid"] != old_kid
        assert {key["kid"] for key in auth.keys.jwks()["keys"]} >= {old_kid}
        assert (await auth.bearer(old)).name == "admin"


async def test_a_key_given_by_path_signs_with_es256(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "jwt.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    settings = AuthSettings(jwt_key=path)
    async with Authenticator(
        FileAccounts(tmp_path / "accounts.json"), settings, required=True
    ) as auth:
        assert auth.initial_password is not None
        token = (await auth.login("admin", auth.initial_password, "::1")).access_token
        [jwk] = auth.keys.jwks()["keys"]
        assert (jwk["kty"], jwk["crv"], jwk["alg"]) == ("EC", "P-256", "ES256")
        claims = jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="iotstream")
        assert claims["sub"] == "admin"
        assert await auth.accounts.signing_keys() == []  # nothing generated


def test_a_key_that_cannot_sign_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "jwt.pem"
    path.write_text("not a key")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        Authenticator(
            FileAccounts(tmp_path / "accounts.json"), AuthSettings(jwt_key=path), required=True
        )
