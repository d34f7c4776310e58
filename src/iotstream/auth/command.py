"""``iotstream users`` and ``iotstream apikeys``: manage who may use the API.

They change the same accounts the servers read: the file under ``--data-dir``, or Redis with
``--redis-url`` (every api instance of the distributed mode at once). A running server sees a
change at the next request; a removed user's tokens end with their lifetime (``--token-ttl``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from ..config import Settings, load_settings
from ..errors import AuthError
from . import accounts_path, create_accounts
from .base import Accounts
from .roles import Role, check_name
from .service import add_api_key, add_user, check_password, remove_user

T = TypeVar("T")
ROLES = [role.value for role in Role]


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        args.config,
        data_dir=args.data_dir,
        redis_url=args.redis_url,
        redis_prefix=args.redis_prefix,
    )


def _with_accounts(args: argparse.Namespace, work: Callable[[Accounts], Awaitable[T]]) -> T:
    async def run() -> T:
        async with create_accounts(_settings(args)) as accounts:
            return await work(accounts)

    return asyncio.run(run())


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _read_password(from_stdin: bool) -> str:
    """From stdin (one line) with ``--password-stdin`` or when stdin is not a terminal, else
    from a prompt, twice."""
    if from_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise AuthError("the passwords differ")
    return check_password(password)


def _users_add(args: argparse.Namespace) -> None:
    try:
        check_name(args.name)
    except ValueError as exc:
        raise AuthError(str(exc)) from exc
    password = _read_password(args.password_stdin)
    user = _with_accounts(args, lambda a: add_user(a, args.name, Role(args.role), password))
    print(f"added {user.role} {user.name} to {accounts_path(_settings(args))}")


def _users_list(args: argparse.Namespace) -> None:
    async def users(accounts: Accounts) -> None:
        for user in sorted(await accounts.users(), key=lambda u: u.name):
            print(f"{user.name}\t{user.role}\t{_when(user.created)}")

    _with_accounts(args, users)


def _users_remove(args: argparse.Namespace) -> None:
    if not _with_accounts(args, lambda a: remove_user(a, args.name)):
        raise AuthError(f"no user {args.name!r}")
    print(f"removed {args.name}; its tokens stop working when they expire")


def _apikeys_add(args: argparse.Namespace) -> None:
    key, secret = _with_accounts(args, lambda a: add_api_key(a, args.name, Role(args.role)))
    print(secret)
    print(
        f"API key {key.name} ({key.role}): send it as the X-API-Key header. It is shown this "
        "once and stored only as a hash.",
        file=sys.stderr,
    )


def _apikeys_list(args: argparse.Namespace) -> None:
    async def keys(accounts: Accounts) -> None:
        for key in sorted(await accounts.api_keys(), key=lambda k: k.name):
            print(f"{key.name}\t{key.role}\t{_when(key.created)}")

    _with_accounts(args, keys)


def _apikeys_remove(args: argparse.Namespace) -> None:
    if not _with_accounts(args, lambda a: a.remove_api_key(args.name)):
        raise AuthError(f"no API key {args.name!r}")
    print(f"revoked API key {args.name}")


def _where(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with settings (flags and env win)")
    parser.add_argument("--data-dir", help="the accounts live in <data-dir>/auth (default: data)")
    parser.add_argument("--redis-url", help="keep the accounts in this Redis (distributed mode)")
    parser.add_argument("--redis-prefix", help="prefix of the Redis keys (default: iotstream)")


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``users`` and ``apikeys`` sub-commands."""
    users = commands.add_parser(
        "users", help="add, list and remove users of the API", description=__doc__
    )
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user; the password comes from a prompt or stdin")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(handler=_users_add)
    listing = actions.add_parser("list", help="every user with its role")
    listing.set_defaults(handler=_users_list)
    remove = actions.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    remove.set_defaults(handler=_users_remove)
    for parser in (add, listing, remove):
        _where(parser)

    apikeys = commands.add_parser(
        "apikeys", help="add, list and revoke API keys for machines", description=__doc__
    )
    actions = apikeys.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="make an API key and print it, this once")
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.set_defaults(handler=_apikeys_add)
    listing = actions.add_parser("list", help="every API key with its role (not the keys)")
    listing.set_defaults(handler=_apikeys_list)
    remove = actions.add_parser("remove", help="revoke an API key")
    remove.add_argument("name")
    remove.set_defaults(handler=_apikeys_remove)
    for parser in (add, listing, remove):
        _where(parser)
