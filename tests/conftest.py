"""Shared fixtures. ``kafka_bootstrap`` starts a real Apache Kafka broker (deploy/kafka.sh).

Under CI (``CI=true``) a broker that cannot start fails the tests that need it; elsewhere
they are skipped with the reason.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    port = os.environ.get("KAFKA_TEST_PORT", "19092")
    env = {**os.environ, "KAFKA_PORT": port,
           "KAFKA_CONTROLLER_PORT": str(int(port) + 1),
           "KAFKA_DATA_DIR": str(tmp_path_factory.mktemp("kafka")),
           "PYTHON": str(REPO / ".venv" / "bin" / "python")}
    script = str(REPO / "deploy" / "kafka.sh")
    started = subprocess.run(["bash", script, "up"], env=env, capture_output=True, text=True,
                             timeout=600)
    if started.returncode != 0:
        message = f"Kafka broker could not start:\n{started.stdout}\n{started.stderr}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield f"127.0.0.1:{port}"
    subprocess.run(["bash", script, "down", "--wipe"], env=env, capture_output=True, timeout=120)
