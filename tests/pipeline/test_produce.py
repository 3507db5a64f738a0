"""``abuse-pipeline produce`` against a real Apache Kafka broker."""

import json
import time
import uuid
from collections import Counter

import pytest

from detectors.testing import make_event
from pipeline.cli import main
from schemas import encode_event

pytestmark = pytest.mark.kafka


def read_all(bootstrap, topics, *, expected, deadline_s=60.0):
    """Every message of ``topics`` from the start, with assigned partitions (no group join,
    which on a fresh broker can take longer than a consumer's idle timeout)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for topic in topics
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        received, started = [], time.monotonic()
        while len(received) < expected and time.monotonic() - started < deadline_s:
            for batch in consumer.poll(timeout_ms=500).values():
                received.extend(batch)
        return received
    finally:
        consumer.close()


def test_events_land_on_their_topics_keyed_by_account_and_invalid_lines_stay_out(
        kafka_bootstrap, tmp_path, capsys, monkeypatch):
    prefix = f"produce-test-{uuid.uuid4().hex[:8]}."  # a broker reused across runs keeps topics
    monkeypatch.setenv("ABUSE_TOPIC_PREFIX", prefix)
    kinds = ["signup", "login", "usage", "purchase", "refund"]
    extra = {"refund": {"order_id": "o-1"}}
    events = [make_event(kind, account_id=f"acct{i % 7}", t=float(i), **extra.get(kind, {}))
              for i, kind in enumerate(kinds * 20)]
    lines = [encode_event(e) for e in events]
    lines[10:10] = [b"{broken", b'{"type": "usage"}']
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")

    assert main(["produce", "--input", str(source), "--bootstrap", kafka_bootstrap]) == 0
    report = capsys.readouterr().err
    assert f"{source}:11: not sent: not valid JSON" in report
    assert f"{source}:12: not sent:" in report and "100 sent, 2 invalid" in report

    topics = [f"{prefix}events.{kind}" for kind in kinds]
    received = read_all(kafka_bootstrap, topics, expected=100)
    assert len(received) == 100
    assert Counter(m.topic for m in received) == {topic: 20 for topic in topics}
    for message in received:
        body = json.loads(message.value)
        assert message.key.decode() == body["account_id"]
        assert message.topic.endswith(body["type"])
    partitions = {m.partition for m in received}
    assert len(partitions) > 1  # six partitions were created, keys spread over them


def test_topics_are_created_with_the_brokers_default_replication_or_a_clear_error(
        kafka_bootstrap, tmp_path, capsys, monkeypatch):
    from kafka.admin import KafkaAdminClient

    prefix = f"produce-rf-{uuid.uuid4().hex[:8]}."
    monkeypatch.setenv("ABUSE_TOPIC_PREFIX", prefix)
    source = tmp_path / "events.jsonl"
    source.write_bytes(encode_event(make_event("usage", account_id="a1", t=0.0)) + b"\n")
    # more replicas than this one-broker cluster has: refused with the broker's reason
    assert main(["produce", "--input", str(source), "--bootstrap", kafka_bootstrap,
                 "--replication-factor", "2"]) == 2
    error = capsys.readouterr().err
    assert f"cannot create topic {prefix}events." in error
    assert "replication factor 2" in error and "broker" in error
    # the default: the broker's default.replication.factor (1 here)
    assert main(["produce", "--input", str(source), "--bootstrap", kafka_bootstrap]) == 0
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_topics([f"{prefix}events.usage"])
    finally:
        admin.close()
    assert [len(p["replica_nodes"]) for p in described[0]["partitions"]] == [1] * 6
