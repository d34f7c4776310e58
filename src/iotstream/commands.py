"""Commands to devices: validated, then published to ``orin/{device_id}/command`` with QoS 1."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from .errors import CommandError, InvalidCommand
from .health import Health
from .models import DeviceId
from .mqtt import MqttConnection

PREDEFINED = ("tracking", "slam", "none")
MAX_COMMAND = 256
COMMAND_QOS = 1


def command_topic(device_id: DeviceId) -> str:
    return f"orin/{device_id}/command"


def validate(command: str) -> None:
    """Raise ``InvalidCommand`` with the reason when the command text cannot be sent."""
    if not command:
        raise InvalidCommand("command is empty")
    if len(command) > MAX_COMMAND:
        raise InvalidCommand(f"command is longer than {MAX_COMMAND} characters")
    if not command.isprintable():
        raise InvalidCommand("command contains characters that are not printable")


@dataclass(slots=True, frozen=True)
class CommandReceipt:
    id: str
    device_id: DeviceId
    command: str
    topic: str
    sent_at: float


class CommandService:
    """Sends commands over its own MQTT connection."""

    def __init__(self, connection: MqttConnection) -> None:
        self.connection = connection
        self.sent = 0

    def send(self, device_id: DeviceId, command: str) -> CommandReceipt:
        """Publish ``command`` to the device; ``device_id`` was checked where it came in."""
        validate(command)
        if not self.connection.connected.is_set():
            raise CommandError(f"the MQTT broker at {self.connection.endpoint} is not reachable")
        topic = command_topic(device_id)
        self.connection.publish(topic, command.encode(), qos=COMMAND_QOS)
        self.sent += 1
        return CommandReceipt(uuid.uuid4().hex, device_id, command, topic, time.time())

    def health(self) -> Health:
        return self.connection.health()
