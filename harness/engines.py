"""Mosquitto, Redis, a single-node Kafka and an S3 server on 127.0.0.1, started for tests, the
bench and ``python -m harness up`` (``make services``) alike, without Docker::

    port, controller_port = free_ports(2)
    with start_kafka(port, controller_port, tmp_path / "kafka") as kafka:
        ...  # kafka.address == "127.0.0.1:<port>"; kafka.kill(); kafka.restart(); ...

``start_mosquitto``, ``start_redis`` and ``start_kafka`` return a running, ready ``Service``; its
``stop()`` (SIGTERM, then SIGKILL) also runs on leaving a ``with`` block. Each service runs in its
own process group and session, so Ctrl-C in a terminal reaches the caller, whose clean-up stops
it. ``restart()`` stops one and starts it again on the same ports and data: Kafka keeps its log,
and with ``persistent=True`` Mosquitto its sessions and queued messages and Redis its data, as
deployments run them.

Kafka's jars go to ``kafka-<version>-<pom hash>/libs`` under ``IOTSTREAM_KAFKA_CACHE`` (default
``${XDG_CACHE_HOME:-~/.cache}/iotstream``), fetched once by Maven from ``harness/kafka/pom.xml``.
The cache lives outside any state dir so that wiping the state does not refetch, and it is keyed
by the pom's hash so that editing the pom does.

The S3 server is s3proxy (a real S3 API over a local directory, from Maven Central with
``harness/s3/pom.xml``, cached like Kafka's jars under ``s3proxy-<version>-<pom hash>/libs``);
clients sign with ``S3_ACCESS_KEY`` / ``S3_SECRET_KEY``, and a bucket is a directory of its
data dir (``Service.workdir / "data"``), so ``s3_bucket`` makes one without a client.

The jars a pyspark session needs beyond the wheel's (Delta Lake, the Kafka source, S3A) are fetched
the same way from ``harness/spark/pom.xml`` into ``spark-<version>-<pom hash>/libs``
(``ensure_spark_jars``; ``python -m harness.spark`` prints the directory).

Needs ``mosquitto`` and ``redis-server`` (Debian: apt-get install -y mosquitto redis-server), and
for Kafka ``java`` 17+ (or $JAVA_HOME/bin/java) and ``mvn``. Linux only: liveness is read from
/proc.
"""

from __future__ import annotations

import base64
import fcntl
import getpass
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from .errors import HarnessError
from .processes import (
    HOST,
    POLL_SECONDS,
    kill_process_group,
    port_accepts,
    stop_process_group,
)

KAFKA_BUILD_DIR = Path(__file__).resolve().parent / "kafka"
KAFKA_POM = KAFKA_BUILD_DIR / "pom.xml"
KAFKA_LOG4J2 = KAFKA_BUILD_DIR / "log4j2.xml"
KAFKA_STARTED = b"Kafka Server started"
KAFKA_JVM_OPTS = ("-Xms256m", "-Xmx768m", "-XX:+UseG1GC", "-Djava.awt.headless=true")
# /usr/sbin holds mosquitto on Debian but is not on a non-root user's PATH.
SBIN_DIRS = ["/usr/local/sbin", "/usr/sbin", "/sbin"]


Probe = Callable[["Service"], bool]


@dataclass
class Service:
    """One server process; `start()` spawns it and returns once `probe` says it is ready."""

    name: str
    ports: tuple[int, ...]
    workdir: Path
    argv: list[str]
    probe: Probe
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    on_start: Callable[[Service], None] | None = field(default=None, repr=False)
    """Called after each start (the first and every restart) once the probe says ready."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise HarnessError(f"{self.name} is not started")
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_since_start(self) -> bytes:
        """What the process wrote to its log since the last `start()`."""
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return log.read()

    def start(self) -> None:
        if self.running():
            raise HarnessError(f"{self.name} already runs as pid {self.pid}")
        for port in self.ports:
            if port_accepts(port):
                raise HarnessError(f"{self.name}: port {port} on {HOST} is already in use")
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        if self.on_start is not None:
            self.on_start(self)

    def stop(self) -> None:
        """SIGTERM, wait up to `stop_timeout`, then SIGKILL. Safe to call when not running."""
        # poll() first: once a child is reaped its PID may belong to someone else.
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process.pid, self.stop_timeout)
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL without warning, as a crash would; `restart()` brings it back."""
        if self.process is not None and self.process.poll() is None:
            kill_process_group(self.process.pid)
            self.process.wait()

    def restart(self) -> None:
        """Stop (SIGTERM, as a service manager does) and start again on the same ports and
        working directory, so what the engine persists there survives."""
        self.stop()
        self.start()

    def _wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with code {self.process.returncode} while starting; "
                    f"its log ({self.log_path}) ends:\n{self._log_tail()}"
                )
            if self.probe(self):
                return
            time.sleep(POLL_SECONDS)
        raise HarnessError(
            f"{self.name} not ready after {self.start_timeout:.0f} s; "
            f"its log ({self.log_path}) ends:\n{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 20) -> str:
        text = self.log_since_start().decode(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- probes ---------------------------------------------------------------------------------------


def _exchange(port: int, request: bytes, reply_size: int, timeout: float = 1.0) -> bytes:
    """Send `request`, return the first `reply_size` bytes of the reply (b"" on any failure)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while len(reply) < reply_size:
                chunk = sock.recv(reply_size - len(reply))
                if not chunk:
                    break
                reply += chunk
            return reply
    except OSError:
        return b""


# MQTT 3.1.1 CONNECT with an empty client id and a clean session, then DISCONNECT.
_MQTT_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00" + b"\xe0\x00"
_MQTT_CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


def mqtt_probe(service: Service) -> bool:
    return _exchange(service.port, _MQTT_CONNECT, 4) == _MQTT_CONNACK_ACCEPTED


def mqtt_answers_probe(service: Service) -> bool:
    """Any CONNACK: a broker that refuses anonymous clients is up once it says so."""
    return _exchange(service.port, _MQTT_CONNECT, 4)[:3] == _MQTT_CONNACK_ACCEPTED[:3]


def redis_probe(service: Service) -> bool:
    return _exchange(service.port, b"PING\r\n", 7) == b"+PONG\r\n"


def kafka_probe(service: Service) -> bool:
    # The line is Kafka's own word that startup finished; the port, that clients get through.
    return KAFKA_STARTED in service.log_since_start() and port_accepts(service.port)


# --- Mosquitto and Redis --------------------------------------------------------------------


def find_program(name: str, install_hint: str) -> str:
    search_path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN_DIRS])
    program = shutil.which(name, path=search_path)
    if program is None:
        raise HarnessError(f"{name} not found; install it ({install_hint})")
    return program


MOSQUITTO_AUTOSAVE_SECONDS = 5
"""How often a persistent Mosquitto writes its sessions and queued messages to disk; a
stop (SIGTERM) writes them too."""


def mosquitto_config(port: int, persistence: Path | None = None) -> str:
    """A loopback listener for anyone, tuned for a bridge to Kafka. ``persistence``: a
    directory where the broker keeps its sessions, subscriptions and queued messages across
    restarts, as a deployment does (deploy/mosquitto/mosquitto.conf); else they live in
    memory only."""
    if persistence is None:
        stored = "persistence false\n"
    else:
        stored = (
            "persistence true\n"
            f"persistence_location {persistence.resolve()}/\n"
            f"autosave_interval {MOSQUITTO_AUTOSAVE_SECONDS}\n"
        )
    # A bridge acknowledges QoS 1 messages only once Kafka has them: let many be in flight,
    # and queue them for its persistent session while it restarts.
    queues = "max_inflight_messages 0\nmax_queued_messages 1000000\n"
    return (
        f"listener {port} {HOST}\nallow_anonymous true\n{stored}{queues}log_dest stderr\n"
        + _mosquitto_user()
    )


def _mosquitto_user() -> str:
    # Run as root, mosquitto would switch to the 'mosquitto' user, which may not read or write
    # the working directory (private to its owner): stay the owner.
    return f"user {getpass.getuser()}\n" if os.geteuid() == 0 else ""


# The accounts of a secured Mosquitto, laid out as the embedded server's
# (iotstream.broker.accounts) so that `iotstream devices add NAME --accounts-dir <workdir>`
# manages its robots and reloads it: `passwd`, `acl`, `mosquitto.pid` beside `mosquitto.conf`.
MQTT_SERVICE_ACCOUNT = "iotstream"
MQTT_URL_FILE = "mqtt-url"
_MQTT_ACL = f"""\
# The distributed roles' account: the bridge reads what robots send, the api commands them.
user {MQTT_SERVICE_ACCOUNT}
topic read sensors/#
topic read orin/+/command/ack
topic read orin/+/command/result
topic write orin/+/command

# Every robot, by its user name (`iotstream devices add NAME --accounts-dir ...`).
pattern write sensors/%u/#
pattern read orin/%u/command
pattern write orin/%u/command/ack
pattern write orin/%u/command/result
"""


def secured_mosquitto_config(port: int, workdir: Path, persistence: Path | None = None) -> str:
    """``mosquitto_config(port, persistence)`` refusing anonymous clients and checking the
    password and ACL files in ``workdir``."""
    return (
        mosquitto_config(port, persistence).replace(
            "allow_anonymous true\n", "allow_anonymous false\n"
        )
        + f"password_file {workdir.resolve() / 'passwd'}\n"
        + f"acl_file {workdir.resolve() / 'acl'}\n"
    )


def _make_accounts(workdir: Path, port: int) -> None:
    """The service account (a random password made the first time, kept in
    ``workdir/mqtt-password``) and the ACL file; the account's URL, for --mqtt-url, goes to
    ``workdir/mqtt-url``. Both files are readable by their owner only."""
    secret = workdir / "mqtt-password"
    passwd = workdir / "passwd"
    if not secret.exists() or not passwd.exists():
        secret.write_text(secrets.token_hex(16) + "\n")
        program = find_program("mosquitto_passwd", "apt-get install -y mosquitto")
        create = [] if passwd.exists() else ["-c"]
        argv = [program, *create, "-b", str(passwd), MQTT_SERVICE_ACCOUNT, _read(secret)]
        subprocess.run(argv, check=True, capture_output=True)
    url = f"mqtt://{MQTT_SERVICE_ACCOUNT}:{_read(secret)}@{HOST}:{port}\n"
    (workdir / MQTT_URL_FILE).write_text(url)
    for private in (secret, passwd, workdir / MQTT_URL_FILE):
        private.chmod(0o600)
    (workdir / "acl").write_text(_MQTT_ACL)


def _read(path: Path) -> str:
    return path.read_text().strip()


def mosquitto_url(service: Service) -> str:
    """The URL a client of ``service`` gives as --mqtt-url: the service account's, with its
    password, when the broker is secured."""
    url_file = service.workdir / MQTT_URL_FILE
    if url_file.exists():
        return _read(url_file)
    return f"mqtt://{service.address}"


def start_mosquitto(
    port: int,
    workdir: Path,
    config: str | None = None,
    *,
    secured: bool = False,
    persistent: bool = False,
) -> Service:
    """Mosquitto on ``port`` with ``config`` (the whole mosquitto.conf; default
    ``mosquitto_config(port)``), ready once it accepts an MQTT connection. ``secured``: with
    accounts and ACLs instead (``secured_mosquitto_config``); ``mosquitto_url`` has the
    credentials of the service account. ``persistent``: sessions and queued messages are kept
    in ``workdir`` across a ``restart()``."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = (workdir / "mosquitto.conf").resolve()
    probe = mqtt_probe
    persistence = workdir if persistent else None
    (workdir / MQTT_URL_FILE).unlink(missing_ok=True)
    if secured:
        _make_accounts(workdir, port)
        if config is None:
            config = secured_mosquitto_config(port, workdir, persistence)
        probe = mqtt_answers_probe
    path.write_text(mosquitto_config(port, persistence) if config is None else config)
    program = find_program("mosquitto", "apt-get install -y mosquitto")
    service = Service(
        "mosquitto",
        (port,),
        workdir,
        [program, "-c", str(path)],
        probe,
        on_start=_write_pid_file,
    )
    service.start()
    return service


def _write_pid_file(service: Service) -> None:
    # Where `iotstream devices` finds the broker to reload.
    (service.workdir / "mosquitto.pid").write_text(f"{service.pid}\n")


def start_redis(port: int, workdir: Path, *, persistent: bool = False) -> Service:
    """redis-server on ``port``, keeping nothing on disk; ``persistent``: with its append-only
    file in ``workdir`` (synced every second), as the deployment runs it (docker-compose.yml),
    so what it holds survives a ``restart()``."""
    program = find_program("redis-server", "apt-get install -y redis-server")
    argv = [
        program,
        "--port", str(port),
        "--bind", HOST,
        "--save", "",
        "--appendonly", "yes" if persistent else "no",
        "--appendfsync", "everysec",
        "--dir", str(workdir),
        "--daemonize", "no",
    ]  # fmt: skip
    service = Service("redis", (port,), workdir, argv, redis_probe)
    service.start()
    return service


# --- Kafka ----------------------------------------------------------------------------------


def pom_version(pom: Path, prop: str) -> str:
    """The release a pom's ``<prop>`` property names (the version of what it fetches)."""
    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    version = ET.parse(pom).getroot().findtext(f"m:properties/m:{prop}", None, namespace)
    if not version:
        raise HarnessError(f"no <{prop}> property in {pom}")
    return version


def jars_dir(pom: Path, name: str, version: str) -> Path:
    """Where the jars of ``pom`` are cached: keyed by its hash, so editing the pom refetches."""
    default_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iotstream"
    root = Path(os.environ.get("IOTSTREAM_KAFKA_CACHE") or default_root)
    pom_hash = hashlib.sha256(pom.read_bytes()).hexdigest()[:8]
    return root / f"{name}-{version}-{pom_hash}" / "libs"


def ensure_jars(pom: Path, libs: Path, what: str) -> Path:
    """``libs``, holding the runtime jars of ``pom``, fetched by Maven the first time."""
    if libs.is_dir():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    # Parallel test workers may all arrive here; one fetches, the others wait and reuse.
    with (libs.parent / "fetch.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not libs.is_dir():
            for interrupted in libs.parent.glob("libs-*"):
                shutil.rmtree(interrupted)
            _fetch_jars(pom, libs, what)
    return libs


def _fetch_jars(pom: Path, libs: Path, what: str) -> None:
    mvn = find_program("mvn", "apt-get install -y maven")
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=libs.parent))
    argv = [
        mvn, "-B", "-q", "-Dstyle.color=never", "-f", str(pom),
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(staging)
        raise HarnessError(f"fetching {what} jars failed:\n{result.stdout}{result.stderr}")
    # Renamed into place only when complete, so an interrupted fetch is never mistaken for a cache.
    staging.rename(libs)


def kafka_version() -> str:
    """The Kafka release harness/kafka/pom.xml names."""
    return pom_version(KAFKA_POM, "kafka.version")


def kafka_libs_dir() -> Path:
    return jars_dir(KAFKA_POM, "kafka", kafka_version())


def ensure_kafka_jars() -> Path:
    """The directory of the broker's jars, fetched by Maven the first time (about 45 MB)."""
    return ensure_jars(KAFKA_POM, kafka_libs_dir(), "Kafka")


def find_java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return find_program("java", "apt-get install -y openjdk-17-jre-headless")


def kafka_properties(port: int, controller_port: int, data_dir: Path) -> dict[str, str]:
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        # One broker: every internal topic has one replica.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # The default 50 partitions make the first consumer group on a new broker wait for 50
        # log creations.
        "offsets.topic.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a crash the restarted broker cannot register until its old session expires
        # (default 9 s); crash tests restart the broker, so expire sooner.
        "broker.heartbeat.interval.ms": "1000",
        "broker.session.timeout.ms": "4000",
    }


def _java_argv(libs: Path, main_class: str, *args: str, jvm_opts: Sequence[str] = ()) -> list[str]:
    return [
        find_java(),
        *jvm_opts,
        f"-Dlog4j2.configurationFile={KAFKA_LOG4J2}",
        "-cp", f"{libs}/*",
        main_class, *args,
    ]  # fmt: skip


def kafka_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A new KRaft cluster id (16 random bytes, URL-safe base64), never starting with ``-``:
    the storage tool would read such an id as an option (one id in 64 did), so Kafka's own
    generator draws again then, and so does this."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _format_kafka_storage(libs: Path, config: Path, data_dir: Path) -> None:
    if (data_dir / "meta.properties").is_file():
        return
    cluster_id = kafka_cluster_id()
    argv = _java_argv(
        libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)
    )
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HarnessError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def start_kafka(port: int, controller_port: int, workdir: Path) -> Service:
    """A combined broker+controller (KRaft). Data under `workdir/data` is kept across restarts."""
    libs = ensure_kafka_jars()
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    config = workdir / "server.properties"
    properties = kafka_properties(port, controller_port, data_dir)
    config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    _format_kafka_storage(libs, config, data_dir)
    argv = _java_argv(libs, "kafka.Kafka", str(config), jvm_opts=KAFKA_JVM_OPTS)
    service = Service(
        "kafka",
        (port, controller_port),
        workdir,
        argv,
        kafka_probe,
        start_timeout=120.0,
        stop_timeout=30.0,
    )
    service.start()
    return service


# --- S3 (s3proxy) ---------------------------------------------------------------------------

S3_BUILD_DIR = Path(__file__).resolve().parent / "s3"
S3_POM = S3_BUILD_DIR / "pom.xml"
S3_LOGBACK = S3_BUILD_DIR / "logback.xml"
S3_ACCESS_KEY = "iotstream"
S3_SECRET_KEY = "iotstream-secret"
S3_REGION = "us-east-1"
S3_JVM_OPTS = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")


def s3proxy_version() -> str:
    """The s3proxy release harness/s3/pom.xml names."""
    return pom_version(S3_POM, "s3proxy.version")


def s3_libs_dir() -> Path:
    return jars_dir(S3_POM, "s3proxy", s3proxy_version())


def ensure_s3_jars() -> Path:
    """The directory of s3proxy's jars, fetched by Maven the first time (about 60 MB)."""
    return ensure_jars(S3_POM, s3_libs_dir(), "s3proxy")


def s3_probe(service: Service) -> bool:
    # Any HTTP answer (an anonymous request gets 403) means the S3 API is up.
    return _exchange(service.port, b"HEAD / HTTP/1.0\r\n\r\n", 12).startswith(b"HTTP/1.")


def s3_endpoint(service: Service) -> str:
    return f"http://{service.address}"


def s3_bucket(service: Service, bucket: str) -> None:
    """Create ``bucket`` (s3proxy's filesystem store keeps a bucket as a directory)."""
    (service.workdir / "data" / bucket).mkdir(parents=True, exist_ok=True)


def start_s3(port: int, workdir: Path) -> Service:
    """s3proxy on ``port``, storing buckets under ``workdir/data``, signed with the fixed
    ``S3_ACCESS_KEY`` / ``S3_SECRET_KEY`` (AWS signature v2 or v4)."""
    libs = ensure_s3_jars()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    config = workdir / "s3proxy.properties"
    properties = {
        "s3proxy.endpoint": f"http://{HOST}:{port}",
        "s3proxy.authorization": "aws-v2-or-v4",
        "s3proxy.identity": S3_ACCESS_KEY,
        "s3proxy.credential": S3_SECRET_KEY,
        "jclouds.provider": "filesystem",
        "jclouds.filesystem.basedir": str(workdir / "data"),
    }
    config.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    argv = [
        find_java(), *S3_JVM_OPTS,
        f"-Dlogback.configurationFile={S3_LOGBACK}",
        "-cp", f"{libs}/*",
        "org.gaul.s3proxy.Main", "--properties", str(config),
    ]  # fmt: skip
    service = Service("s3proxy", (port,), workdir, argv, s3_probe, start_timeout=60.0)
    service.start()
    return service


# --- Spark (jars for pyspark sessions; no server) ------------------------------------------

SPARK_POM = Path(__file__).resolve().parent / "spark" / "pom.xml"


def spark_version() -> str:
    """The Spark release harness/spark/pom.xml is for (the pyspark version of the extra)."""
    return pom_version(SPARK_POM, "spark.version")


def spark_libs_dir() -> Path:
    return jars_dir(SPARK_POM, "spark", spark_version())


def ensure_spark_jars() -> Path:
    """The directory of the jars a pyspark session needs beyond the wheel's own (Delta Lake, the
    Kafka source and S3A, about 36 MB), fetched by Maven the first time; give it to the session
    as ``IOTSTREAM_SPARK_JARS``."""
    return ensure_jars(SPARK_POM, spark_libs_dir(), "Spark")
