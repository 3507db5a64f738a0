"""Shared fixtures. ``kafka_bootstrap`` gives a real Apache Kafka broker (deploy/kafka.sh).

A broker that already answers on the test port (``KAFKA_TEST_PORT``, default 19092) is used as
it is; otherwise one is started with its data in a temporary directory (never a developer's
``deploy/.kafka/data``) and stopped, data wiped, when the session ends. Under CI (``CI=true``)
a broker that cannot start fails the tests that need it; elsewhere they are skipped with the
reason.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "deploy" / "kafka.sh"


def _kafka_answers(bootstrap: str) -> bool:
    """A real metadata request, not just an open port; bounded, whatever listens there."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    probe = ("import sys; from kafka import KafkaAdminClient; "
             "c = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000); "
             "c.list_topics(); c.close()")
    try:
        return subprocess.run([sys.executable, "-c", probe, bootstrap], capture_output=True,
                              timeout=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _stop(command: list[str], env: dict[str, str]) -> None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(command, env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def kafka_bootstrap():
    port = int(os.environ.get("KAFKA_TEST_PORT", "19092"))
    bootstrap = f"127.0.0.1:{port}"
    if _kafka_answers(bootstrap):
        yield bootstrap  # someone else's broker: theirs to stop
        return
    env = {**os.environ,
           "KAFKA_PORT": str(port),
           "KAFKA_CONTROLLER_PORT": os.environ.get("KAFKA_TEST_CONTROLLER_PORT", str(port + 1)),
           # its own temporary directory, not pytest's basetemp: concurrent pytest sessions
           # prune each other's old basetemps, which must not take a running broker's data
           "KAFKA_DATA_DIR": tempfile.mkdtemp(prefix="abuse-pipeline-kafka-"),
           "PYTHON": sys.executable}
    up = ["bash", str(KAFKA_SH), "up"]
    down = ["bash", str(KAFKA_SH), "down", "--wipe"]
    try:
        started = subprocess.run(up, env=env, capture_output=True, text=True, timeout=900)
        failure = (None if started.returncode == 0 else
                   f"exit {started.returncode}:\n{started.stdout}{started.stderr}")
    except (OSError, subprocess.TimeoutExpired) as error:
        failure = str(error)
    if failure is not None:
        _stop(down, env)
        if _kafka_answers(bootstrap):  # another session's broker won the race for the port
            yield bootstrap
            return
        _unavailable(f"Kafka broker could not start ({KAFKA_SH} up): {failure}")
    try:
        yield bootstrap
    finally:
        _stop(down, env)
