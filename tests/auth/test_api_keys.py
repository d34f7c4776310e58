"""API keys for machines: made by an admin (REST or ``iotstream apikeys add``), shown once,
stored as a hash, sent as X-API-Key, revoked at once."""

from __future__ import annotations

import httpx

from iotstream.auth import Authenticator, Role


async def test_an_admin_makes_a_key_that_opens_the_api_with_its_role(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str], authenticator: Authenticator
) -> None:
    admin = {"X-API-Key": api_keys[Role.ADMIN]}
    made = await secured_client.post(
        "/api/apikeys", json={"name": "tracker", "role": "operator"}, headers=admin
    )
    assert made.status_code == 201
    key = made.json()["key"]
    listed = (await secured_client.get("/api/apikeys", headers=admin)).json()
    assert {"name": "tracker", "role": "operator"}.items() <= listed[-1].items()
    assert all("key" not in item and "digest" not in item for item in listed)
    assert key not in authenticator.accounts.path.read_text()  # type: ignore[attr-defined]

    me = (await secured_client.get("/api/auth/me", headers={"X-API-Key": key})).json()
    assert me == {"name": "tracker", "role": "operator", "kind": "apikey", "expires": None}

    removed = await secured_client.delete("/api/apikeys/tracker", headers=admin)
    assert removed.status_code == 204
    after = await secured_client.get("/api/coordinates", headers={"X-API-Key": key})
    assert after.status_code == 401


async def test_a_taken_name_is_409_and_an_unknown_key_401(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str]
) -> None:
    admin = {"X-API-Key": api_keys[Role.ADMIN]}
    again = await secured_client.post(
        "/api/apikeys", json={"name": "viewer-key", "role": "viewer"}, headers=admin
    )
    assert again.status_code == 409
    unknown = await secured_client.get("/api/coordinates", headers={"X-API-Key": "iots_nope"})
    assert unknown.status_code == 401


async def test_the_last_admin_cannot_be_removed(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str], authenticator: Authenticator
) -> None:
    admin = {"X-API-Key": api_keys[Role.ADMIN]}
    assert [u.name for u in await authenticator.accounts.users()] == ["admin"]
    refused = await secured_client.delete("/api/users/admin", headers=admin)
    assert refused.status_code == 409
    made = await secured_client.post(
        "/api/users",
        json={"name": "ada", "role": "admin", "password": "a long password"},
        headers=admin,
    )
    assert made.status_code == 201
    assert (await secured_client.delete("/api/users/admin", headers=admin)).status_code == 204
    assert [u.name for u in await authenticator.accounts.users()] == ["ada"]
