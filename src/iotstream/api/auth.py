"""Logging in and managing who may: ``POST /api/auth/token``, ``/.well-known/jwks.json``,
``GET /api/auth/me``, and the admin's ``/api/users`` and ``/api/apikeys``.

Three routers, one per role they need (``None``: open): ``router`` (open), ``session_router``
(viewer) and ``admin_router`` (admin); ``iotstream.api`` includes them only when credentials
are required.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection, Request

from ..auth import Authenticator, Principal, Role, add_api_key, add_user
from ..auth import remove_user as remove_account
from ..errors import AuthError, InvalidCredentials, LoginThrottled
from .dependencies import api_context
from .schemas import ERROR

router = APIRouter(tags=["auth"])
session_router = APIRouter(tags=["auth"])
admin_router = APIRouter(tags=["admin"])

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
RoleName = Literal["viewer", "operator", "admin"]


def _auth(connection: HTTPConnection) -> Authenticator:
    auth = api_context(connection).auth
    if auth is None:  # not included then; a guard for apps built by hand
        raise HTTPException(404, "authentication is off")
    return auth


AuthDep = Annotated[Authenticator, Depends(_auth)]


def _principal(connection: HTTPConnection) -> Principal:
    principal: Principal = connection.state.principal
    return principal


PrincipalDep = Annotated[Principal, Depends(_principal)]


class TokenAnswer(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds the token is valid")
    role: RoleName


class Me(BaseModel):
    name: str
    role: RoleName
    kind: str = Field(description="user, apikey or oidc")
    expires: float | None = Field(description="when the credentials expire (epoch seconds)")


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    role: RoleName
    password: str = Field(min_length=8, max_length=1024)


class UserInfo(BaseModel):
    name: str
    role: RoleName
    created: float


class NewApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    role: RoleName


class ApiKeyInfo(BaseModel):
    name: str
    role: RoleName
    created: float


class ApiKeyCreated(ApiKeyInfo):
    key: str = Field(description="the key, shown this once; send it as X-API-Key")


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


@router.post(
    "/api/auth/token",
    response_model=TokenAnswer,
    responses={400: ERROR, 401: ERROR, 422: ERROR, 429: ERROR, 503: ERROR},
)
async def token(
    request: Request,
    auth: AuthDep,
    username: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=1, max_length=1024)],
    grant_type: Annotated[str | None, Form(pattern="^password$")] = None,
) -> TokenAnswer | JSONResponse:
    """A short-lived token for a user (OAuth2 password flow); send it as
    ``Authorization: Bearer <token>``. Failed logins are limited per user and per client
    address (429 with ``Retry-After``)."""
    try:
        issued = await auth.login(username, password, _client(request))
    except LoginThrottled as exc:
        return JSONResponse(
            {"detail": str(exc)},
            status_code=429,
            headers={"Retry-After": str(max(1, round(exc.retry_after)))},
        )
    except InvalidCredentials as exc:
        raise HTTPException(
            401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="iotstream"'}
        ) from exc
    except AuthError as exc:
        raise HTTPException(503, "credentials cannot be checked now") from exc
    return TokenAnswer(
        access_token=issued.access_token, expires_in=issued.expires_in, role=issued.role.value
    )


@router.get("/.well-known/jwks.json")
async def jwks(auth: AuthDep) -> dict[str, Any]:
    """The public keys that check this server's tokens (RFC 7517)."""
    return auth.keys.jwks()


@session_router.get("/api/auth/me", response_model=Me)
async def me(principal: PrincipalDep) -> Me:
    """Who the credentials of this request belong to."""
    return Me(
        name=principal.name,
        role=principal.role.value,
        kind=principal.kind,
        expires=principal.expires,
    )


@admin_router.get("/api/users", response_model=list[UserInfo], responses={503: ERROR})
async def users(auth: AuthDep) -> list[UserInfo]:
    """Every user, without password hashes."""
    found = await auth.accounts.users()
    return [UserInfo(name=u.name, role=u.role.value, created=u.created) for u in found]


@admin_router.post(
    "/api/users",
    status_code=201,
    response_model=UserInfo,
    responses={400: ERROR, 409: ERROR, 422: ERROR},
)
async def create_user(new: NewUser, auth: AuthDep) -> UserInfo:
    """Add a user."""
    try:
        user = await add_user(auth.accounts, new.name, Role(new.role), new.password)
    except AuthError as exc:
        raise HTTPException(409, str(exc)) from exc
    return UserInfo(name=user.name, role=user.role.value, created=user.created)


@admin_router.delete("/api/users/{name}", status_code=204, responses={404: ERROR, 409: ERROR})
async def remove_user(name: str, auth: AuthDep) -> Response:
    """Remove a user; its tokens stop working when they expire (``--token-ttl``). The last
    admin cannot be removed."""
    try:
        removed = await remove_account(auth.accounts, name)
    except AuthError as exc:
        raise HTTPException(409, str(exc)) from exc
    if not removed:
        raise HTTPException(404, "no such user")
    return Response(status_code=204)


@admin_router.get("/api/apikeys", response_model=list[ApiKeyInfo])
async def api_keys(auth: AuthDep) -> list[ApiKeyInfo]:
    """Every API key, without the keys."""
    found = await auth.accounts.api_keys()
    return [ApiKeyInfo(name=k.name, role=k.role.value, created=k.created) for k in found]


@admin_router.post(
    "/api/apikeys",
    status_code=201,
    response_model=ApiKeyCreated,
    responses={400: ERROR, 409: ERROR, 422: ERROR},
)
async def create_api_key(new: NewApiKey, auth: AuthDep) -> ApiKeyCreated:
    """Make an API key; the answer is the only time the key is shown."""
    try:
        key, secret = await add_api_key(auth.accounts, new.name, Role(new.role))
    except AuthError as exc:
        raise HTTPException(409, str(exc)) from exc
    return ApiKeyCreated(name=key.name, role=key.role.value, created=key.created, key=secret)


@admin_router.delete("/api/apikeys/{name}", status_code=204, responses={404: ERROR})
async def remove_api_key(name: str, auth: AuthDep) -> Response:
    """Revoke an API key."""
    if not await auth.accounts.remove_api_key(name):
        raise HTTPException(404, "no such API key")
    return Response(status_code=204)
