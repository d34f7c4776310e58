"""TLS for MQTT (a listener beside the plain one) and for HTTP and WebSocket, with
certificates the tests make; and the whole secured path end to end: a server with auth on,
a robot added with ``iotstream devices add``, publishing over TLS and commanded."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from gmqtt.mqtt.handler import MQTTConnectError
from websockets.sync.client import connect as ws_connect

from harness import free_port, stop_process
from iotstream.broker import Accounts, MosquittoBroker, TlsListener, create_broker
from iotstream.broker.accounts import INGEST
from iotstream.config import MqttEndpoint, load_settings
from iotstream.errors import ConfigError

from ..broker.client import MqttClient
from ..conftest import require
from .certs import Certificates, make_certificates

SLAM = {"command": "slam"}


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
async def broker(tmp_path: Path, certificates: Certificates) -> AsyncIterator[MosquittoBroker]:
    workdir = tmp_path / "mosquitto"
    tls = TlsListener(free_port(), certificates.cert, certificates.key)
    broker = MosquittoBroker(
        "127.0.0.1",
        free_port(),
        workdir,
        require("mosquitto"),
        accounts=Accounts(workdir),
        tls=tls,
    )
    async with broker:
        yield broker


def _handshake(port: int, context: ssl.SSLContext) -> str | None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        return tls.version()


async def test_a_device_publishes_over_tls_and_the_server_reads_on_loopback(
    broker: MosquittoBroker, certificates: Certificates
) -> None:
    assert broker.tls is not None
    robot = Accounts(broker.workdir).add_device("robot7")
    Accounts(broker.workdir).reload()
    ingest = broker.client_endpoint(INGEST)
    assert (ingest.port, ingest.tls) == (broker.port, False)  # the plain listener
    secure = certificates.client_context()
    async with MqttClient(
        broker.port, username=ingest.username, password=ingest.password
    ) as server:
        await server.subscribe("sensors/#", 1)
        async with MqttClient(
            broker.tls.port, username=robot.username, password=robot.password, tls=secure
        ) as device:
            device.publish("sensors/robot7/coordinates", '{"x": 1, "y": 2}', qos=1)
            await device.drain()
            [message] = await server.receive(1)
    assert message.payload == b'{"x": 1, "y": 2}'
    assert _handshake(broker.tls.port, secure) in ("TLSv1.2", "TLSv1.3")
    # The TLS listener checks accounts too.
    with pytest.raises(MQTTConnectError, match=r"bad user name or password|not authori"):
        await MqttClient(broker.tls.port, tls=secure).connect()
    # And it is TLS only: a plain MQTT CONNECT gets no CONNACK.
    with socket.create_connection(("127.0.0.1", broker.tls.port), timeout=5) as plain:
        plain.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        try:
            reply = plain.recv(4)
        except (ConnectionResetError, TimeoutError):
            reply = b""
        assert reply[:1] != b"\x20"


def test_tls_settings_go_in_pairs(certificates: Certificates) -> None:
    with pytest.raises(ConfigError, match="--mqtt-tls-cert and --mqtt-tls-key go together"):
        load_settings(mqtt_tls_cert=str(certificates.cert))
    with pytest.raises(ConfigError, match="--http-tls-cert and --http-tls-key go together"):
        load_settings(http_tls_key=str(certificates.key))
    with pytest.raises(ConfigError, match="is not a file"):
        load_settings(http_tls_cert="/nonexistent.pem", http_tls_key=str(certificates.key))


def _iotstream(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "iotstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def secured_server(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[tuple[dict[str, int], Path]]:
    """``iotstream run`` with auth and TLS on both protocols, as open to the network."""
    require("mosquitto")
    tmp = tmp_path_factory.mktemp("secured")
    ports = {name: free_port() for name in ("http", "mqtt", "mqtts")}
    log = tmp / "server.log"
    args = [
        sys.executable, "-m", "iotstream", "run",
        "--data-dir", str(tmp / "data"),
        # --auth on as a public --mqtt-host/--http-host would set it; tests stay on loopback.
        "--auth", "on",
        "--http-port", str(ports["http"]),
        "--mqtt-port", str(ports["mqtt"]),
        "--mqtt-tls-port", str(ports["mqtts"]),
        "--mqtt-tls-cert", str(certificates.cert), "--mqtt-tls-key", str(certificates.key),
        "--http-tls-cert", str(certificates.cert), "--http-tls-key", str(certificates.key),
        "--lake", "off",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "iotstream is running" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield ports, tmp
    finally:
        stop_process(process)


@pytest.mark.e2e
def test_a_robot_added_with_the_cli_publishes_over_tls_and_is_commanded(
    secured_server: tuple[dict[str, int], Path], certificates: Certificates
) -> None:
    ports, tmp = secured_server
    banner = (tmp / "server.log").read_text()
    assert f"https://127.0.0.1:{ports['http']}/" in banner
    assert f"wss://127.0.0.1:{ports['http']}/coordinates" in banner
    assert f"mqtts://127.0.0.1:{ports['mqtts']}" in banner
    assert "iotstream devices add" in banner
    admin = re.search(r"the user admin with the password (\S+)", banner)
    assert admin is not None, banner

    added = _iotstream("devices", "add", "robot7", "--data-dir", str(tmp / "data"))
    assert "reloaded its accounts" in added
    password = re.search(r"password  (\S+)", added)
    assert password is not None
    publish = [
        require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(ports["mqtts"]),
        "--cafile", str(certificates.ca), "-q", "1", "-u", "robot7",
        "-t", "sensors/robot7/coordinates", "-m", '{"x": 4.5, "y": 6.5}',
    ]  # fmt: skip
    # Without credentials, and with another robot's topic, nothing gets in.
    refused = subprocess.run(publish, capture_output=True, timeout=20, check=False)
    assert refused.returncode != 0
    subprocess.run([*publish, "-P", password.group(1)], check=True, timeout=20)

    https = f"https://127.0.0.1:{ports['http']}"
    verify = certificates.client_context()
    with httpx.Client(base_url=https, verify=verify, timeout=10) as client:
        assert client.get("/api/devices/robot7").status_code == 401
        token = client.post(
            "/api/auth/token", data={"username": "admin", "password": admin.group(1)}
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 10
        while (response := client.get("/api/devices/robot7", headers=headers)).status_code != 200:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.05)
        assert (response.json()["x"], response.json()["y"]) == (4.5, 6.5)
        assert _handshake(ports["http"], verify) in ("TLSv1.2", "TLSv1.3")
        wss = f"wss://127.0.0.1:{ports['http']}/coordinates"
        with ws_connect(wss, ssl=verify, additional_headers=headers) as ws:
            snapshot = json.loads(ws.recv(timeout=10))
        assert snapshot["type"] == "snapshot"
        assert [d["deviceId"] for d in snapshot["devices"]] == ["robot7"]
        # A command reaches the robot over TLS, as its own account reads it.
        subscribe = [
            require("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(ports["mqtts"]),
            "--cafile", str(certificates.ca), "-q", "1", "-C", "1", "-W", "20",
            "-u", "robot7", "-P", password.group(1), "-t", "orin/robot7/command",
        ]  # fmt: skip
        with subprocess.Popen(subscribe, stdout=subprocess.PIPE) as device:
            deadline = time.monotonic() + 20
            while device.poll() is None:  # until its subscription is in and a command arrived
                sent = client.post("/api/commands/robot7", json=SLAM, headers=headers)
                assert sent.status_code == 202, sent.text
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert device.stdout is not None and device.stdout.read().strip() == b"slam"

    removed = _iotstream("devices", "remove", "robot7", "--data-dir", str(tmp / "data"))
    assert "reloaded its accounts" in removed
    again = subprocess.run(
        [*publish, "-P", password.group(1)], capture_output=True, timeout=20, check=False
    )
    assert again.returncode != 0


def test_a_broker_open_to_the_network_checks_accounts(tmp_path: Path) -> None:
    """``--auth auto`` (the default) closes the broker once it listens beyond loopback, and
    the in-process broker, which cannot check accounts, refuses to start then."""

    def broker(**flags: str) -> MosquittoBroker | None:
        made = create_broker(load_settings(data_dir=str(tmp_path), **flags))
        assert made is None or isinstance(made, MosquittoBroker)
        return made

    require("mosquitto")
    loopback, public = broker(broker="mosquitto"), broker(mqtt_host="0.0.0.0", broker="mosquitto")
    assert loopback is not None and loopback.accounts is None
    assert public is not None and public.accounts is not None
    with pytest.raises(ConfigError, match="install mosquitto"):
        create_broker(load_settings(mqtt_host="0.0.0.0", broker="amqtt"))
    with pytest.raises(ConfigError, match="install mosquitto"):
        create_broker(load_settings(auth="on", broker="amqtt"))


def test_mqtt_credentials_and_tls_of_an_existing_broker() -> None:
    given = load_settings(mqtt_url="mqtt://h:1", mqtt_username="bridge", mqtt_password="s3")
    assert given.mqtt.endpoint() == MqttEndpoint("h", 1, "bridge", "s3")
    in_url = load_settings(mqtt_url="mqtt://u:p@h:1", mqtt_username="other")
    assert in_url.mqtt.endpoint() == MqttEndpoint("h", 1, "u", "p")  # the URL's win
    secure = MqttEndpoint.parse("mqtts://u:p@broker.lan")
    assert (secure.port, secure.tls, str(secure)) == (8883, True, "mqtts://broker.lan:8883")
    assert "secret" not in repr(MqttEndpoint("h", 1, "u", "secret"))
