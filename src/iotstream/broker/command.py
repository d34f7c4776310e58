"""``iotstream devices``: the MQTT accounts of the robots, in the embedded broker's files.

``add`` prints the new account's password once (only its hash is kept); ``add`` and ``remove``
then make a running broker reload its accounts (SIGHUP): a new robot may connect at once, a
removed one is disconnected, nobody else is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import Settings, load_settings
from ..errors import BrokerError, InvalidDeviceId
from . import broker_accounts
from .accounts import Accounts, account_name


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, data_dir=args.data_dir)


def _accounts(args: argparse.Namespace) -> tuple[Settings, Accounts]:
    settings = _settings(args)
    if args.accounts_dir is not None:
        return settings, Accounts(args.accounts_dir)
    return settings, broker_accounts(settings)


def _name(text: str) -> str:
    try:
        return account_name(text)
    except InvalidDeviceId as exc:
        raise BrokerError(f"{text!r} cannot be a device's MQTT user name: {exc}") from exc


def _reloaded(accounts: Accounts) -> str:
    pid = accounts.reload()
    if pid is None:
        return "no broker runs on these accounts now; it reads them when it starts"
    return f"the running broker (pid {pid}) reloaded its accounts"


def _add(args: argparse.Namespace) -> None:
    settings, accounts = _accounts(args)
    credentials = accounts.add_device(_name(args.name), replace=args.replace)
    name, password, mqtt = credentials.username, credentials.password, settings.mqtt
    print(f"MQTT account of {name} (the password is shown this once):")
    print(f"  username  {name}")
    print(f"  password  {password}")
    print(f"  may publish sensors/{name}/# and read orin/{name}/command")
    print(
        f"  e.g. mosquitto_pub -h <server> -p {mqtt.port} -u '{name}' -P '{password}' "
        f"""-t 'sensors/{name}/coordinates' -m '{{"x": 1.0, "y": 2.0}}'"""
    )
    if mqtt.tls_cert is not None:
        print(f"  over TLS: -p {mqtt.tls_port} --cafile <the CA of {mqtt.tls_cert}>")
    print(_reloaded(accounts))
    if accounts.broker_pid() is not None and not accounts.enforced():
        print(
            "note: the running broker checks no accounts (auth is off, every listener on "
            "loopback); they count once it runs with --auth on or a public --mqtt-host"
        )


def _remove(args: argparse.Namespace) -> None:
    _, accounts = _accounts(args)
    name = _name(args.name)
    if not accounts.remove_device(name):
        raise BrokerError(f"{name} has no MQTT account")
    print(f"removed the MQTT account of {name}; {_reloaded(accounts)}")


def _list(args: argparse.Namespace) -> None:
    _, accounts = _accounts(args)
    for name in accounts.devices():
        print(name)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    devices = commands.add_parser(
        "devices",
        help="MQTT accounts of the robots (the embedded broker's password file)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = devices.add_subparsers(dest="action", required=True)

    def action(name: str, summary: str) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=summary, description=summary)
        parser.add_argument(
            "--config", type=Path, help="TOML file with settings (flags and env win)"
        )
        parser.add_argument(
            "--data-dir", help="the server's data directory (default: data, env IOTSTREAM_DATA_DIR)"
        )
        parser.add_argument(
            "--accounts-dir",
            type=Path,
            help="the directory of the password file instead (default: <data-dir>/mosquitto), "
            "e.g. that of `make services`",
        )
        return parser

    add = action("add", "make a robot's MQTT account and print its password")
    add.add_argument("name", help="the robot's device id, its MQTT user name")
    add.add_argument(
        "--replace", action="store_true", help="give an existing account a new password"
    )
    add.set_defaults(handler=_add)
    remove = action("remove", "delete a robot's MQTT account and disconnect it")
    remove.add_argument("name", help="the robot's device id")
    remove.set_defaults(handler=_remove)
    listing = action("list", "the robots with an MQTT account")
    listing.set_defaults(handler=_list)
