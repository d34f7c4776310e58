"""Exceptions raised by iotstream.

Every error the package raises on purpose derives from ``IotstreamError``;
library errors are wrapped where they cross a seam::

    IotstreamError
    ├── ConfigError         invalid settings or a missing optional extra
    ├── InvalidDeviceId     a text that cannot name a device (also a ValueError)
    ├── InvalidMessage      an MQTT message the broker would refuse (also a ValueError)
    ├── BrokerError         the embedded MQTT broker could not start or died
    ├── BusError            the event bus refused or lost a batch
    ├── StoreError          the state store is unreachable or refused a write
    ├── CommandError        a command could not be published to a device
    │   ├── InvalidCommand  the command text failed validation
    │   └── IdempotencyConflict  an idempotency key already used for another request
    └── AuthError           the accounts store failed, or an account cannot be made
        ├── InvalidCredentials  a password, token or API key that is not (or no longer) valid
        └── LoginThrottled  too many failed logins for a user or a client address
"""

from __future__ import annotations


class IotstreamError(Exception):
    """Root of every error iotstream raises on purpose."""


class ConfigError(IotstreamError):
    """Settings that cannot work, or an optional extra that is not installed."""


class InvalidDeviceId(IotstreamError, ValueError):
    """A text that cannot name a device; the message says why."""


class InvalidMessage(IotstreamError, ValueError):
    """An MQTT message the broker would refuse (a topic that is not valid MQTT UTF-8 or
    holds a wildcard); nothing was sent."""


class BrokerError(IotstreamError):
    """The embedded MQTT broker could not start or stopped unexpectedly."""


class BusError(IotstreamError):
    """The event bus refused or lost a batch."""


class ConsumerLost(BusError):
    """A consumer can take nothing more (Kafka fenced it, or it is closed): its member must
    join the group again with a new one."""


class StoreError(IotstreamError):
    """The state store is unreachable or refused a write."""


class CommandError(IotstreamError):
    """A command could not be published to a device."""


class InvalidCommand(CommandError):
    """The command text failed validation."""


class IdempotencyConflict(CommandError):
    """An idempotency key already used for a request with another body."""


class AuthError(IotstreamError):
    """The accounts store failed, or an account cannot be made as asked."""


class InvalidCredentials(AuthError):
    """A password, token or API key that is not, or no longer, valid; the message says
    what is wrong without saying which part."""


class LoginThrottled(AuthError):
    """Too many failed logins; ``retry_after`` is the seconds until the next may be tried."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many failed logins; try again later")
        self.retry_after = retry_after


def missing_extra(extra: str, module: str) -> ConfigError:
    """The error for an optional engine whose pip extra is not installed."""
    return ConfigError(
        f"the {module!r} module is needed for this backend: pip install 'iotstream[{extra}]'"
    )
