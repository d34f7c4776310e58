# The front door: `make run` starts the embedded server, `make test` runs every test.
# The virtualenv's interpreter: Debian's python3.11 when its venv module is there (built with
# PGO and LTO, libpython linked in: the bridge's parsing and the consumers' decoding ran 16-19 %
# faster on it than on a build with --enable-shared and no PGO, see BENCHMARKS.md), else the
# first python3.
PYTHON ?= $(shell /usr/bin/python3.11 -c 'import ensurepip' >/dev/null 2>&1 && echo /usr/bin/python3.11 || echo python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run demo test lint typecheck pytest clean services services-down system-packages bench \
	spark-stream setup restart stop logs-embedded test-mqtt test-websocket-pipeline websocket-test \
	test-redis-pipeline prometheus bench-anchor

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamps re-install when pyproject.toml changes.
$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[device]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.run-installed $(VENV)/.spark-installed $(VENV)/.distributed-installed

$(VENV)/.distributed-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[kafka,redis,device]'
	touch $@ $(VENV)/.run-installed

$(VENV)/.spark-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[spark]'
	touch $@ $(VENV)/.run-installed

## run: start the embedded server (Mosquitto when it can be installed, else the in-process broker)
run: $(VENV)/.run-installed
	@scripts/system-packages.sh --optional mosquitto:mosquitto mosquitto-clients:mosquitto_pub
	@# iotstream run itself, with its PID in data/iotstream.pid for make restart and make stop.
	$(BIN)/python -m harness.embedded run $(ARGS)

## demo: the embedded server with 20 simulated robots
demo: $(VENV)/.run-installed
	@scripts/system-packages.sh --optional mosquitto:mosquitto mosquitto-clients:mosquitto_pub
	$(BIN)/python -m harness.embedded run --simulate 20 $(ARGS)

system-packages:
	scripts/system-packages.sh mosquitto:mosquitto mosquitto-clients:mosquitto_pub \
		redis-server:redis-server maven:mvn openjdk-17-jre-headless:java chromium:chromium \
		prometheus:prometheus

## services: Mosquitto, Redis, Kafka (KRaft) and s3proxy on loopback (jars from Maven Central)
services: system-packages
	$(PYTHON) -m harness up

services-down:
	$(PYTHON) -m harness down

## spark-stream: Spark Structured Streaming from `make services`' Kafka into the lake's device_minutes
spark-stream: $(VENV)/.spark-installed
	@scripts/system-packages.sh maven:mvn openjdk-17-jre-headless:java
	@# Delta Lake's, the Kafka source's and S3A's jars, fetched by Maven once (harness/spark/pom.xml).
	jars=$$($(BIN)/python -m harness.spark) && IOTSTREAM_SPARK_JARS="$$jars" \
		$(BIN)/iotstream spark stream --kafka-bootstrap 127.0.0.1:$${IOTSTREAM_KAFKA_PORT:-9092} $(ARGS)

## test: install what the tests need, then lint, type-check and run every test
test: system-packages $(VENV)/.dev-installed lint typecheck pytest

## bench: measure the server (embedded, and distributed when java and mvn are there); writes bench/results/
bench: $(VENV)/.dev-installed
	@scripts/system-packages.sh mosquitto:mosquitto
	@scripts/system-packages.sh --optional redis-server:redis-server maven:mvn openjdk-17-jre-headless:java
	$(BIN)/python -m bench --distributed $(ARGS)

## bench-anchor: the bridge alone beside Telegraf's (the reference system's, built with Go); writes bench/results/anchor.*
bench-anchor: $(VENV)/.dev-installed
	@scripts/system-packages.sh mosquitto:mosquitto maven:mvn openjdk-17-jre-headless:java
	$(BIN)/python -m bench.anchor --out bench/results $(ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src tests bench harness
	$(BIN)/ruff format --check src tests bench harness

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy

pytest: $(VENV)/.dev-installed
	$(BIN)/pytest $(ARGS)

clean: stop
	rm -rf $(VENV) data .pytest_cache .mypy_cache .ruff_cache
	@echo "PASS clean: removed $(VENV), data and the caches"

# --- the reference system's targets, on the embedded server -----------------------------------
# Each prints one PASS or FAIL line and fails on FAIL. Hosts and ports come from the server's own
# variables (IOTSTREAM_HTTP_PORT 8081, IOTSTREAM_MQTT_PORT 3123, ...; see harness/checks.py).

## setup: install what the server needs, start it in the background and wait until it is healthy
setup: $(VENV)/.run-installed
	@scripts/system-packages.sh --optional mosquitto:mosquitto mosquitto-clients:mosquitto_pub
	@$(BIN)/python -m harness.embedded start $(ARGS)

## restart: stop the server make setup or make run started, and start it again with its flags
restart: $(VENV)/.run-installed
	@$(BIN)/python -m harness.embedded restart

## stop: stop the server make setup or make run started (the standard library is enough)
stop:
	@$(PYTHON) -m harness.embedded stop

## logs-embedded: follow the log of the server make setup started
logs-embedded:
	tail -n 100 -F $${IOTSTREAM_DATA_DIR:-data}/iotstream.log

## test-mqtt: publish the reference system's examples, find them in the REST API
test-mqtt: $(VENV)/.run-installed
	@$(BIN)/python -m harness.checks test-mqtt

## test-websocket-pipeline: a WebSocket client on /coordinates receives a coordinate sent over MQTT
test-websocket-pipeline websocket-test: $(VENV)/.run-installed
	@$(BIN)/python -m harness.checks test-websocket-pipeline

## test-redis-pipeline: MQTT -> bridge -> Kafka -> processor -> Redis on make services' engines
## (a bridge or processor not answering on 9081/9082 is started for the check)
test-redis-pipeline: $(VENV)/.distributed-installed
	@$(BIN)/python -m harness.checks test-redis-pipeline

## prometheus: a Prometheus on 127.0.0.1:9090 scraping the roles of the quick start, with the alerts
prometheus:
	@scripts/system-packages.sh prometheus:prometheus
	$(PYTHON) -m harness.prometheus $(ARGS)

# --- the distributed stack in Docker (for machines with a Docker engine) ---------------------
COMPOSE ?= docker compose
.PHONY: up down logs list-topics consume-messages redis-cli

.env:
	cp .env.example .env

up: .env
	$(COMPOSE) up -d --build

down:
	$(COMPOSE) down

logs:
	$(COMPOSE) logs -f --tail=100

# logs-bridge, logs-kafka, logs-prometheus, ...: one service's log.
logs-%:
	$(COMPOSE) logs -f --tail=100 $*

list-topics:
	$(COMPOSE) exec kafka /opt/kafka/bin/kafka-topics.sh --bootstrap-server localhost:9092 --describe

consume-messages:
	$(COMPOSE) exec kafka /opt/kafka/bin/kafka-console-consumer.sh --bootstrap-server localhost:9092 \
		--topic mqtt-messages --from-beginning --property print.key=true

redis-cli:
	$(COMPOSE) exec redis redis-cli
