"""``abuse-pipeline hook`` against a real Apache Kafka broker and a real HTTP endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.hook import REFUSED_TOPIC, HookConfig, HookMetrics, run_hook
from pipeline.kafka_settings import KafkaSettings
from pipeline.sinks import RestrictionHookSink
from schemas.flags import Flag, decode_flag, encode_flag
from tests.pipeline.endpoint import Endpoint
from tests.pipeline.test_worker import free_port, metrics, wait_until

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def flag(n: int, severity: str, mode: str = "enforce") -> Flag:
    return Flag(flag_id=f"f{n:03d}", account_id=f"acct-{n}", detector="login_frequency",
                score=0.9, severity=severity, ts="2026-11-01T00:00:00.000Z",
                detected_at="2026-11-01T00:00:01.000Z", reasons=("why",), evidence={},
                related_accounts=(), mode=mode)


def publish(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for value in values:
            producer.send(topic, value=value, key=b"k")
        producer.flush()
    finally:
        producer.close()


def create_topic(bootstrap: str, topic: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, 3, 1)])
    finally:
        admin.close()


def start_hook(bootstrap: str, prefix: str, group: str, url: str, log: Path):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "hook", "--bootstrap", bootstrap, "--url", url,
         "--min-severity", "medium", "--group-id", group, "--topic-prefix", prefix,
         "--metrics-port", str(port)],
        cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=dict(os.environ))
    return process, port


class HookLog:
    """The hook process's log, for :func:`wait_until`'s message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def logs(self) -> str:
        return self.path.read_text(errors="replace")[-3000:]


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


def test_the_hook_consumer_rides_out_an_outage_and_resumes_where_it_stopped(kafka_bootstrap,
                                                                           tmp_path):
    tag = uuid.uuid4().hex[:8]
    prefix, group = f"hk-{tag}.", f"hk-{tag}"
    topic = f"{prefix}abuse.flags"
    create_topic(kafka_bootstrap, topic)
    first = [flag(1, "high"), flag(2, "medium"), flag(3, "low"), flag(4, "high", "shadow"),
             flag(5, "high")]
    publish(kafka_bootstrap, topic, [encode_flag(f) for f in first] + [b"{not a flag"])
    # down for the first request and its five retries: the hook must wait, not skip
    endpoint = Endpoint(statuses=[503] * 6)
    log = tmp_path / "hook.log"
    process, port = start_hook(kafka_bootstrap, prefix, group, endpoint.url, log)
    try:
        wait_until(lambda: metrics(port).get("abuse_hook_flags_delivered_total", 0) >= 3,
                   HookLog(log), timeout=90)
        seen = metrics(port)
        assert stop(process) == 0
        # enforced medium and high flags only, none lost in the outage
        assert sorted(f["flag_id"] for f in endpoint.taken()) == ["f001", "f002", "f005"]
        assert seen["abuse_hook_delivery_failures_total"] >= 1
        assert seen["abuse_hook_invalid_messages_total"] == 1
        assert "not a flag" in log.read_text()
        # a restart sends what came since, not what was delivered before it stopped
        publish(kafka_bootstrap, topic, [encode_flag(flag(6, "high"))])
        before = len(endpoint.accepted)
        process, port = start_hook(kafka_bootstrap, prefix, group, endpoint.url, log)
        wait_until(lambda: metrics(port).get("abuse_hook_flags_delivered_total", 0) >= 1,
                   HookLog(log), timeout=90)
        assert stop(process) == 0
        assert [f["flag_id"] for f in endpoint.taken()[3:]] == ["f006"]
        assert len(endpoint.accepted) == before + 1
    finally:
        if process.poll() is None:
            process.kill()
        endpoint.close()


def flags_topic(bootstrap: str, *flags: Flag) -> KafkaSettings:
    """A deployment of its own (topic prefix and group) whose flags topic holds ``flags``."""
    tag = uuid.uuid4().hex[:8]
    settings = KafkaSettings(bootstrap=bootstrap, topic_prefix=f"hk-{tag}.",
                             group_id=f"hk-{tag}")
    create_topic(bootstrap, settings.topic("abuse.flags"))
    publish(bootstrap, settings.topic("abuse.flags"), [encode_flag(f) for f in flags])
    return settings


async def run_until(config: HookConfig, condition, *, settle: float = 0.0,
                    timeout: float = 60.0) -> HookMetrics:
    """Run the hook in this process until ``condition(metrics)`` (and ``settle`` s more)."""
    stop, seen = asyncio.Event(), HookMetrics()
    task = asyncio.create_task(run_hook(config, stop, seen))
    deadline = time.monotonic() + timeout
    while not condition(seen) and not task.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await asyncio.sleep(settle)
    stop.set()
    assert await task == 0
    return seen


def test_stopping_during_an_outage_commits_nothing_it_did_not_deliver(kafka_bootstrap):
    """Stopped while the endpoint refuses: the batch is not committed, so the next run
    delivers it."""
    settings = flags_topic(kafka_bootstrap, flag(7, "high"))
    down, up = Endpoint(statuses=[503] * 1000), Endpoint()

    def config(url: str) -> HookConfig:
        return HookConfig(kafka=settings, make_sink=lambda: RestrictionHookSink(
            url, retries=0), max_pause=0.2)

    try:
        refused = asyncio.run(run_until(config(down.url),
                                        lambda m: m.failures._value.get() >= 3))
        assert refused.delivered._value.get() == 0
        assert refused.undelivered._value.get() == 1
        taken = asyncio.run(run_until(config(up.url), lambda m: m.delivered._value.get() >= 1))
        assert taken.delivered._value.get() == 1
        assert [f["flag_id"] for f in up.taken()] == ["f007"]
    finally:
        down.close()
        up.close()


def test_an_outage_longer_than_the_poll_interval_still_delivers(kafka_bootstrap):
    """The group rebalances around a consumer that does not poll for ``max_poll_seconds``
    (here the endpoint's whole outage); the hook must still deliver, and not crash on it."""
    settings = flags_topic(kafka_bootstrap, flag(8, "high"))
    endpoint = Endpoint(statuses=[503] * 40)  # about 8 s at one attempt per 0.2 s
    config = HookConfig(kafka=settings, max_pause=0.2, max_poll_seconds=2.0,
                        make_sink=lambda: RestrictionHookSink(endpoint.url, retries=0))
    try:
        # then 3 s more: the commit, and any re-delivery after it
        seen = asyncio.run(run_until(config, lambda m: m.delivered._value.get() >= 1,
                                     settle=3.0))
        assert seen.failures._value.get() >= 30
        assert {f["flag_id"] for f in endpoint.taken()} == {"f008"}
    finally:
        endpoint.close()


def refused_on_topic(settings: KafkaSettings) -> list[tuple[str, dict[str, bytes]]]:
    """(flag id, headers) of every flag on the refused topic."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(settings.topic(REFUSED_TOPIC), bootstrap_servers=settings.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        return [(decode_flag(record.value).flag_id, dict(record.headers)) for record in consumer]
    finally:
        consumer.close()


def test_a_flag_refused_for_good_is_set_aside_and_the_others_are_delivered(kafka_bootstrap):
    """The endpoint answers 422 to any request holding f003: the batch is sent one flag at a
    time, f003 is given up after ``give_up_after`` and written to the refused topic, the
    hook goes on past it, and ``--from-topic abuse.hook.refused`` sends it again later."""
    settings = flags_topic(kafka_bootstrap, *(flag(n, "high") for n in range(1, 6)))
    picky = Endpoint(refuse_ids={"f003"})

    def config(url: str, **kwargs) -> HookConfig:
        return HookConfig(kafka=settings, max_pause=0.2, give_up_after=1.0,
                          make_sink=lambda: RestrictionHookSink(url, retries=0), **kwargs)

    fixed = Endpoint()
    try:
        seen = asyncio.run(run_until(config(picky.url), lambda m: m.refused._value.get() >= 1,
                                     settle=1.0))
        assert sorted(f["flag_id"] for f in picky.taken()) == ["f001", "f002", "f004", "f005"]
        assert seen.refused._value.get() == 1
        assert seen.delivered._value.get() == 4
        [(refused, headers)] = refused_on_topic(settings)
        assert refused == "f003"
        assert headers["status"] == b"422" and headers["url"] == picky.url.encode()
        # committed past it: a restart sends only what is new
        publish(kafka_bootstrap, settings.topic("abuse.flags"), [encode_flag(flag(6, "high"))])
        asyncio.run(run_until(config(picky.url), lambda m: m.delivered._value.get() >= 1,
                              settle=1.0))
        assert [f["flag_id"] for f in picky.taken()[4:]] == ["f006"]
        # once the endpoint is fixed, the refused flags are sent again from their topic
        again = replace(settings, group_id=settings.group_id + "-again")
        resent = asyncio.run(run_until(
            replace(config(fixed.url), kafka=again, from_topic=REFUSED_TOPIC),
            lambda m: m.delivered._value.get() >= 1, settle=1.0))
        assert [f["flag_id"] for f in fixed.taken()] == ["f003"]
        assert resent.refused._value.get() == 0
    finally:
        picky.close()
        fixed.close()


@pytest.mark.parametrize("status", [401, 503])
def test_an_endpoint_in_trouble_is_waited_out_and_nothing_is_given_up(kafka_bootstrap, status):
    """401 (credentials) and 503 are the endpoint's, not the flags': even with
    ``give_up_after=0`` the hook waits until it takes them."""
    settings = flags_topic(kafka_bootstrap, flag(9, "high"), flag(10, "high"))
    endpoint = Endpoint(statuses=[status] * 8)
    config = HookConfig(kafka=settings, max_pause=0.1, give_up_after=0.0,
                        make_sink=lambda: RestrictionHookSink(endpoint.url, retries=0))
    try:
        seen = asyncio.run(run_until(config, lambda m: m.delivered._value.get() >= 2))
        assert seen.failures._value.get() == 8
        assert seen.refused._value.get() == 0
        assert sorted(f["flag_id"] for f in endpoint.taken()) == ["f009", "f010"]
    finally:
        endpoint.close()


def test_the_hook_refuses_settings_it_cannot_honour():
    settings = KafkaSettings(bootstrap="127.0.0.1:9")
    with pytest.raises(ValueError, match="give-up-after"):
        HookConfig(kafka=settings, make_sink=lambda: None, give_up_after=-1.0)
    with pytest.raises(ValueError, match=r"abuse\.hook\.refused"):
        HookConfig(kafka=settings, make_sink=lambda: None, from_topic="events.login")
