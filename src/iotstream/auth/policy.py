"""When credentials are needed: the one decision the API and the broker both follow.

``--auth on`` and ``--auth off`` say so; ``--auth auto`` (the default) keeps the loopback
quick start open and closes the server as soon as a listener faces the network.
"""

from __future__ import annotations

import ipaddress

from ..config import Settings

__all__ = ["auth_required", "is_loopback", "public_listeners"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only. A name other than
    ``localhost`` may resolve anywhere, so it counts as public."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def public_listeners(settings: Settings) -> list[str]:
    """The listeners of ``settings`` that are not on loopback, as ``what host`` texts.

    The HTTP host also carries the health listener; the MQTT host counts only when this
    process would start the embedded broker (no ``--mqtt-url``).
    """
    public = []
    if not is_loopback(settings.http.host):
        public.append(f"HTTP {settings.http.host}")
    if settings.mqtt.url is None and not is_loopback(settings.mqtt.host):
        public.append(f"MQTT {settings.mqtt.host}")
    return public


def auth_required(settings: Settings) -> bool:
    """Whether clients of the API, the WebSocket and the embedded broker must authenticate."""
    mode = settings.auth.mode
    if mode == "auto":
        return bool(public_listeners(settings))
    return mode == "on"
