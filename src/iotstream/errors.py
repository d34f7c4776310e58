"""Exceptions raised by iotstream.

Every error the package raises on purpose derives from ``IotstreamError``;
library errors are wrapped where they cross a seam::

    IotstreamError
    ├── ConfigError         invalid settings or a missing optional extra
    ├── InvalidDeviceId     a text that cannot name a device (also a ValueError)
    ├── BrokerError         the embedded MQTT broker could not start or died
    ├── BusError            the event bus refused or lost a batch
    ├── StoreError          the state store is unreachable or refused a write
    └── CommandError        a command could not be published to a device
        └── InvalidCommand  the command text failed validation
"""

from __future__ import annotations


class IotstreamError(Exception):
    """Root of every error iotstream raises on purpose."""


class ConfigError(IotstreamError):
    """Settings that cannot work, or an optional extra that is not installed."""


class InvalidDeviceId(IotstreamError, ValueError):
    """A text that cannot name a device; the message says why."""


class BrokerError(IotstreamError):
    """The embedded MQTT broker could not start or stopped unexpectedly."""


class BusError(IotstreamError):
    """The event bus refused or lost a batch."""


class StoreError(IotstreamError):
    """The state store is unreachable or refused a write."""


class CommandError(IotstreamError):
    """A command could not be published to a device."""


class InvalidCommand(CommandError):
    """The command text failed validation."""


def missing_extra(extra: str, module: str) -> ConfigError:
    """The error for an optional engine whose pip extra is not installed."""
    return ConfigError(
        f"the {module!r} module is needed for this backend: pip install 'iotstream[{extra}]'"
    )
