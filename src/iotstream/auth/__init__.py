"""Authentication and authorization: users, roles, tokens, API keys and OpenID Connect.

``auth_required`` (in ``policy``) decides whether credentials are needed at all, for the API
and the broker alike. ``create_accounts`` picks where accounts live from the settings, as
``create_store`` does for the state: Redis when ``--redis-url`` is set, else a file under
the data dir.
"""

from __future__ import annotations

from ..config import Settings
from .base import Accounts, ApiKey, SigningKey, User
from .policy import auth_required, is_loopback, public_listeners
from .roles import ANONYMOUS, Principal, Role
from .service import Authenticator, Token, add_api_key, add_user, ensure_admin, remove_user

__all__ = [
    "ANONYMOUS",
    "Accounts",
    "ApiKey",
    "Authenticator",
    "Principal",
    "Role",
    "SigningKey",
    "Token",
    "User",
    "accounts_path",
    "add_api_key",
    "add_user",
    "auth_required",
    "create_accounts",
    "create_authenticator",
    "ensure_admin",
    "is_loopback",
    "public_listeners",
    "remove_user",
]


def accounts_path(settings: Settings) -> str:
    """Where the accounts of ``settings`` live, for messages."""
    if settings.redis.url is not None:
        return f"Redis (prefix {settings.redis.prefix!r})"
    return str(settings.data_dir / "auth" / "accounts.json")


def create_accounts(settings: Settings) -> Accounts:
    """Redis when ``redis_url`` is set (every api instance shares them), else a file."""
    if settings.redis.url is None:
        from .file import FileAccounts

        return FileAccounts(settings.data_dir / "auth" / "accounts.json")
    from .redis import RedisAccounts

    return RedisAccounts(settings.redis.url, prefix=settings.redis.prefix)


def create_authenticator(settings: Settings) -> Authenticator:
    return Authenticator(create_accounts(settings), settings.auth, required=auth_required(settings))
