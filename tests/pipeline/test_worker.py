"""The streaming worker against a real Apache Kafka broker: the flags of replay, exactly.

Each test uses its own topic prefix, consumer group, ClickHouse (chdb) file and state
directory, runs ``abuse-pipeline worker`` as real processes, and reads the results back from
ClickHouse and the ``abuse.flags`` / ``events.deadletter`` topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.kafka_settings import KafkaSettings
from pipeline.produce import produce_file
from pipeline.sinks import ClickHouseFlagSink
from tests.pipeline.endpoint import Endpoint

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


# -- helpers --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Run:
    """One isolated deployment: topics, group, ClickHouse file, state dir."""

    def __init__(self, bootstrap: str, tmp_path: Path) -> None:
        tag = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.prefix = f"wt-{tag}."
        self.group = f"wt-{tag}"
        self.tmp = tmp_path
        self.dsn = f"chdb://{tmp_path / 'flags.chdb'}"
        self.state = tmp_path / "state"
        self.workers: list[tuple[subprocess.Popen, int]] = []

    @property
    def settings(self) -> KafkaSettings:
        return KafkaSettings(bootstrap=self.bootstrap, topic_prefix=self.prefix,
                             group_id=self.group)

    def start_worker(self, *extra: str, env: dict[str, str] | None = None,
                     ) -> tuple[subprocess.Popen, int]:
        port = free_port()
        log = open(self.tmp / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker", "--bootstrap", self.bootstrap,
             "--clickhouse", self.dsn, "--group-id", self.group, "--topic-prefix", self.prefix,
             "--state-dir", str(self.state), "--metrics-port", str(port),
             "--idle-flush", "1", *extra],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})})
        self.workers.append((process, port))
        return process, port

    def stop_all(self) -> None:
        running = [(process, port) for process, port in self.workers if process.poll() is None]
        for process, _ in running:
            process.send_signal(signal.SIGTERM)
        for process, _ in running:
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:  # its log goes with tmp_path: keep it here
                raise AssertionError(
                    f"worker not stopped 60 s after SIGTERM\n{self.logs()}") from None
            finally:
                if process.poll() is None:
                    process.kill()
            assert code == 0, f"worker exit {code}\n{self.logs()}"

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:]
                         for p in sorted(self.tmp.glob("worker-*.log")))


def metrics(port: int) -> dict[str, float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def wait_caught_up(run: Run, expected: int, *, timeout: float = 180.0) -> dict[str, float]:
    """Until the worker that owns detection has every message and holds nothing back."""
    deadline = time.monotonic() + timeout
    seen: dict[str, float] = {}
    while time.monotonic() < deadline:
        for process, port in run.workers:
            if process.poll() is not None:
                continue
            try:
                seen = metrics(port)
            except OSError:
                continue
            done = seen.get("abuse_detect_received_events", 0) + seen.get(
                "abuse_detect_dead_letters", 0)
            if seen.get("abuse_detect_active") == 1 and seen.get("abuse_caught_up") == 1 \
                    and done >= expected:
                time.sleep(1.5)  # one more flush/checkpoint round
                return seen
        time.sleep(0.2)
    raise AssertionError(f"worker not caught up in {timeout} s: {seen}\n{run.logs()}")


def wait_until(condition, run: Run, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting\n{run.logs()}")


def clickhouse_rows(dsn: str, query: str) -> list[tuple]:
    script = ("import json, sys, clickhouse_connect; "
              "c = clickhouse_connect.get_client(dsn=sys.argv[1]); "
              "print(json.dumps(c.query(sys.argv[2]).result_rows, default=str)); c.close()")
    out = subprocess.run([sys.executable, "-c", script, dsn, query], capture_output=True,
                         text=True, timeout=120, check=True)
    return [tuple(row) for row in json.loads(out.stdout)]


def read_topic(bootstrap: str, topic: str, *, expected: int, timeout: float = 30.0) -> list:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        received, deadline = [], time.monotonic() + timeout
        while len(received) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                received.extend(batch)
        for _ in range(3):  # and nothing more
            for batch in consumer.poll(timeout_ms=300).values():
                received.extend(batch)
        return received
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory):
    """Generated events and the flag ids replay gives for them."""
    folder = tmp_path_factory.mktemp("traffic")
    events, flags = folder / "events.jsonl", folder / "flags.jsonl"
    assert main(["generate", "--accounts", "1500", "--days", "4", "--seed", "11",
                 "--output", str(events)]) == 0
    assert main(["replay", "--input", str(events), "--output", str(flags),
                 "--no-progress"]) == 0
    ids = {json.loads(line)["flag_id"] for line in flags.read_text().splitlines()}
    lines = sum(1 for line in events.read_text().splitlines() if line.strip())
    assert len(ids) > 50  # every detector fires on this traffic
    return events, ids, lines


async def describe_group(bootstrap: str, group: str):
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
        (described,) = response.to_object()["groups"]
        return described
    finally:
        await admin.close()


def flag_ids_in_clickhouse(run: Run) -> set[str]:
    return {row[0] for row in clickhouse_rows(run.dsn, "SELECT flag_id FROM abuse.flags FINAL")}


def assert_no_duplicates_in_final(run: Run) -> None:
    assert clickhouse_rows(
        run.dsn, "SELECT count() = uniqExact(flag_id) FROM abuse.flags FINAL") == [(1,)]


# -- the tests ------------------------------------------------------------------------------
def test_one_worker_gives_the_flags_of_replay(kafka_bootstrap, tmp_path, traffic):
    events, replay_ids, lines = traffic
    replayed = [json.loads(line) for line in (events.parent / "flags.jsonl").open()]
    acting = {f["flag_id"] for f in replayed if f["severity"] in ("medium", "high")}
    run = Run(kafka_bootstrap, tmp_path)
    produce_file(str(events), run.settings, partitions=6, progress=False)
    hook = Endpoint()
    run.start_worker("--hook", hook.url, "--hook-min-severity", "medium")
    try:
        seen = wait_caught_up(run, lines)
        detection = asyncio.run(describe_group(kafka_bootstrap, f"{run.group}.detect"))
    finally:
        run.stop_all()
        hook.close()
    assert detection["protocol"] == "faust"  # detection is the faust app's consumer group
    # faust's data directory is in the state dir, not left in the working directory
    assert (run.state / f"{run.group}.detect.faust").is_dir()
    assert not list(REPO.glob(f"{run.group}*-data"))
    # the restriction hook got exactly the flags replay gives at its severity
    assert acting and {f["flag_id"] for f in hook.flags()} == acting
    assert seen["abuse_detect_received_events"] == lines
    assert seen["abuse_late_events"] == 0
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)
    on_topic = read_topic(kafka_bootstrap, f"{run.prefix}abuse.flags", expected=len(replay_ids))
    assert {json.loads(m.value)["flag_id"] for m in on_topic} == replay_ids
    assert all(m.key.decode() == json.loads(m.value)["account_id"] for m in on_topic)


def test_a_hook_that_refuses_stops_the_worker_and_a_restart_loses_no_flag(
        kafka_bootstrap, tmp_path, traffic):
    """The worker stops on the hook's refusal without checkpointing past the flags it
    refused, so the restarted worker sends them."""
    events, replay_ids, lines = traffic
    replayed = [json.loads(line) for line in (events.parent / "flags.jsonl").open()]
    acting = {f["flag_id"] for f in replayed if f["severity"] in ("medium", "high")}
    run = Run(kafka_bootstrap, tmp_path)
    produce_file(str(events), run.settings, partitions=6, progress=False)
    refusing, taking = Endpoint(statuses=[400] * 100_000), Endpoint()
    try:
        first, _ = run.start_worker("--hook", refusing.url, "--hook-min-severity", "medium")
        assert first.wait(timeout=180) != 0
        assert refusing.requests and not refusing.accepted
        run.start_worker("--hook", taking.url, "--hook-min-severity", "medium")
        try:
            wait_caught_up(run, lines)
        finally:
            run.stop_all()
    finally:
        refusing.close()
        taking.close()
    assert "restriction hook" in run.logs() and "HTTP 400" in run.logs()
    assert {f["flag_id"] for f in taking.taken()} == acting
    assert flag_ids_in_clickhouse(run) == replay_ids


def test_two_workers_over_six_partitions_give_the_flags_of_replay(kafka_bootstrap, tmp_path,
                                                                  traffic):
    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    # Both workers join first, then the traffic arrives while they run. The generated traffic
    # is 4 days played in seconds, so the producer's batching skew between partitions is
    # worth many minutes of event time: a partition counts as idle (not holding the watermark
    # back) only after 10 s without new events, longer than the whole produce takes.
    run.start_worker("--idle-flush", "10")
    run.start_worker("--idle-flush", "10")
    try:
        wait_until(lambda: all(metrics(port).get("abuse_ingest_assigned_partitions", 0) > 0
                               for _, port in run.workers), run)  # the group split the work
        produce_file(str(events), run.settings, partitions=6, progress=False)  # while running
        seen = wait_caught_up(run, lines)
        ingested = [metrics(port)["abuse_ingest_messages_total"] for _, port in run.workers]
    finally:
        run.stop_all()
    assert seen["abuse_late_events"] == 0
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)
    assert sum(ingested) >= lines
    assert all(count > 0 for count in ingested), f"one worker ingested nothing: {ingested}"


def test_a_worker_joining_mid_stream_changes_no_flag(kafka_bootstrap, tmp_path, traffic):
    """A rebalance while events flow (faust revokes and reassigns detection: it is released
    with a checkpoint and acquired again, here or on the new worker): still replay's flags."""
    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    rows = events.read_bytes().splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"".join(rows[: len(rows) // 2]))
    second.write_bytes(b"".join(rows[len(rows) // 2:]))
    produce_file(str(first), run.settings, partitions=6, progress=False)
    run.start_worker("--idle-flush", "10")
    try:
        wait_until(lambda: any(metrics(port).get("abuse_detect_received_events", 0) > 0
                               for _, port in run.workers), run)
        run.start_worker("--idle-flush", "10")  # joins while detection runs
        produce_file(str(second), run.settings, partitions=6, progress=False)
        seen = wait_caught_up(run, lines)
    finally:
        run.stop_all()
    assert seen["abuse_late_events"] == 0
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)


def test_ingest_and_detection_in_separate_processes_give_the_flags_of_replay(
        kafka_bootstrap, tmp_path, traffic):
    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    produce_file(str(events), run.settings, partitions=6, progress=False)
    _, ingest_port = run.start_worker("--stages", "ingest")
    run.start_worker("--stages", "detect")
    try:
        seen = wait_caught_up(run, lines)
        ingester = metrics(ingest_port)
    finally:
        run.stop_all()
    assert ingester["abuse_ingest_messages_total"] >= lines
    assert ingester.get("abuse_detect_active", 0) == 0
    assert seen.get("abuse_ingest_messages_total", 0) == 0
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)


def kill_mid_stream(process: subprocess.Popen, port: int, lines: int) -> None:
    """kill -9 the worker once it has processed 30 % of the events, before it is done."""
    processed, deadline = 0.0, time.monotonic() + 120
    while processed < lines * 0.3 and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            processed = metrics(port).get("abuse_events_processed_total", 0.0)
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert lines * 0.3 <= processed < lines, f"not killed mid-stream: {processed} of {lines}"


def shard_counts(run: Run) -> list[float]:
    return [metrics(port).get("abuse_key_shards", 0.0) for process, port in run.workers
            if process.poll() is None]


def test_key_shards_shared_by_two_workers_give_the_flags_of_replay(kafka_bootstrap, tmp_path,
                                                                   traffic):
    """login_frequency and refund_abuse split by key over 3 shards, which the two workers'
    group shares out; one worker also combines them with trial_cycling: replay's flags."""
    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    for _ in range(2):
        run.start_worker("--key-shards", "3", "--idle-flush", "10", "--checkpoint-seconds",
                         "0.5", env={"ABUSE_PURGE_SECONDS": "0.5"})
    try:
        wait_until(lambda: sorted(shard_counts(run)) == [1.0, 2.0], run, timeout=90)
        produce_file(str(events), run.settings, partitions=6, progress=False)
        seen = wait_caught_up(run, lines)
        scored = [metrics(port)["abuse_shard_events_processed_total"]
                  for _, port in run.workers]
        time.sleep(2.0)  # a few more checkpoint and purge rounds
    finally:
        run.stop_all()
    # the sequenced topic was trimmed, but never past where a shard's checkpoint resumes
    commits, start = sequenced_commits(run, [f"{run.group}.detect.shard-{i}" for i in range(3)])
    assert 0 < start <= min(commits.values()), (start, commits)
    assert seen["abuse_late_events"] == 0 and seen["abuse_detect_waiting_for_shards"] == 0
    # each shard reads every event; three shards, spread over both workers
    assert sorted(scored) == [lines, 2 * lines]
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)
    on_topic = read_topic(kafka_bootstrap, f"{run.prefix}abuse.flags", expected=len(replay_ids))
    assert {json.loads(m.value)["flag_id"] for m in on_topic} == replay_ids


def test_detection_waits_for_key_shards_that_another_process_runs(kafka_bootstrap, tmp_path,
                                                                  traffic):
    """Stages apart: detection alone processes nothing (its events wait for their parts, and
    say so); a process running only the shards lets it through, with replay's flags."""
    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    produce_file(str(events), run.settings, partitions=6, progress=False)
    _, port = run.start_worker("--key-shards", "2", "--stages", "ingest,detect")
    try:
        wait_until(lambda: metrics(port).get("abuse_detect_waiting_for_shards", 0) > 0, run,
                   timeout=90)
        assert metrics(port).get("abuse_events_processed_total", 0) == 0
        _, shards = run.start_worker("--key-shards", "2", "--stages", "shard")
        seen = wait_caught_up(run, lines)
        assert metrics(shards)["abuse_key_shards"] == 2 and seen["abuse_key_shards"] == 0
    finally:
        run.stop_all()
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)


def test_a_worker_with_key_shards_killed_mid_stream_loses_and_repeats_nothing(
        kafka_bootstrap, tmp_path, traffic):
    """kill -9 the worker that combines (and runs shards) mid-stream: the other worker takes
    over detection and every shard from their checkpoints, and the flags are replay's."""
    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    for _ in range(2):
        run.start_worker("--key-shards", "3", "--checkpoint-seconds", "0.2", "--idle-flush",
                         "10")
    wait_until(lambda: sorted(shard_counts(run)) == [1.0, 2.0], run, timeout=90)
    produce_file(str(events), run.settings, partitions=6, progress=False)
    try:
        [(victim, port)] = [(p, port) for p, port in run.workers
                            if metrics(port).get("abuse_detect_active") == 1]
        kill_mid_stream(victim, port, lines)
        wait_until(lambda: shard_counts(run) == [3.0], run, timeout=90)  # all moved over
        wait_caught_up(run, lines)
    finally:
        run.stop_all()
    assert "detection resumed from checkpoint" in run.logs()
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)


def test_a_worker_refuses_a_parts_topic_split_another_way(kafka_bootstrap, tmp_path):
    """A lane's parts topic has one partition per shard: another --key-shards would put the
    keys on other shards than their checkpoints hold."""
    from pipeline.produce import ensure_topics
    from pipeline.worker import WorkerConfig, ensure_worker_topics

    run = Run(kafka_bootstrap, tmp_path)
    config = WorkerConfig(kafka=run.settings, engine_factory=lambda: None, fingerprint="",
                          key_shards=2)
    ensure_topics(run.settings, [config.parts_topic], 3)
    with pytest.raises(ValueError, match="has 3 partitions, but --key-shards is 2"):
        ensure_worker_topics(config)


def sequenced_commits(run: Run, groups: list[str]) -> tuple[dict[str, int], int]:
    """The offsets ``groups`` committed on the sequenced topic, and where the topic starts."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from kafka import KafkaConsumer

    sequenced = TopicPartition(f"{run.prefix}{run.group}.sequenced", 0)

    async def committed() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap)
        await admin.start()
        try:
            return {group: (await admin.list_consumer_group_offsets(
                group, partitions=[sequenced]))[sequenced].offset for group in groups}
        finally:
            await admin.close()

    consumer = KafkaConsumer(bootstrap_servers=run.bootstrap)
    try:
        start = consumer.beginning_offsets([sequenced])[sequenced]
    finally:
        consumer.close()
    return asyncio.run(committed()), start


def lane_caught_up(seen: dict[str, float], lines: int) -> bool:
    return (seen.get("abuse_detect_active") == 1 and seen.get("abuse_caught_up") == 1
            and seen.get("abuse_detect_received_events", 0) >= lines)


def test_detection_lanes_side_by_side_give_the_flags_of_replay(kafka_bootstrap, tmp_path,
                                                                traffic):
    """Two workers, each its own lane of detectors (and its own chdb file: chdb is one process
    per path): together they give replay's flags, and the sequenced topic is trimmed only up
    to what both lanes have checkpointed."""


    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    lanes = {"trial_cycling": f"chdb://{tmp_path / 'trial.chdb'}",
             "login_frequency,refund_abuse": f"chdb://{tmp_path / 'others.chdb'}"}
    for detectors, dsn in lanes.items():  # both lanes run before the events arrive
        run.start_worker("--detectors", detectors, "--clickhouse", dsn, "--idle-flush", "10",
                         "--checkpoint-seconds", "0.5", env={"ABUSE_PURGE_SECONDS": "0.5"})
    try:
        wait_until(lambda: all(metrics(port).get("abuse_detect_active") == 1
                               for _, port in run.workers), run)
        produce_file(str(events), run.settings, partitions=6, progress=False)
        for _, port in run.workers:  # each lane has every event and holds nothing back
            wait_until(lambda port=port: lane_caught_up(metrics(port), lines), run, timeout=180)
        time.sleep(2.0)  # a few more checkpoint and purge rounds
    finally:
        run.stop_all()
    per_lane = {detectors: {row[0]: row[1] for row in clickhouse_rows(
        dsn, "SELECT flag_id, detector FROM abuse.flags FINAL")}
        for detectors, dsn in lanes.items()}
    assert set(per_lane["trial_cycling"].values()) == {"trial_cycling"}
    assert set(per_lane["login_frequency,refund_abuse"].values()) == {
        "login_frequency", "refund_abuse"}
    assert set(per_lane["trial_cycling"]) | set(per_lane["login_frequency,refund_abuse"]) \
        == replay_ids
    on_topic = read_topic(kafka_bootstrap, f"{run.prefix}abuse.flags", expected=len(replay_ids))
    assert {json.loads(m.value)["flag_id"] for m in on_topic} == replay_ids

    commits, start = sequenced_commits(run, [f"{run.group}.detect.trial_cycling",
                                             f"{run.group}.detect.login_frequency-refund_abuse"])
    assert 0 < start <= min(commits.values()), (start, commits)


@pytest.mark.parametrize(("checkpoints", "restart_with"),
                         [("kafka", "kafka"), ("file", "file"), ("file", "kafka")])
def test_a_worker_killed_mid_stream_and_restarted_loses_and_repeats_nothing(
        kafka_bootstrap, tmp_path, traffic, checkpoints, restart_with):
    """With checkpoints in Kafka the worker that takes over needs nothing of the dead one's
    disk: it starts with a state directory of its own, as on another machine. A group moving
    from files to Kafka restores the file once."""
    events, replay_ids, lines = traffic
    run = Run(kafka_bootstrap, tmp_path)
    produce_file(str(events), run.settings, partitions=6, progress=False)
    process, port = run.start_worker("--checkpoint-seconds", "0.2", "--checkpoints", checkpoints)
    kill_mid_stream(process, port, lines)
    # (faust's data directory is there either way: nothing of it is needed to take over)
    assert any(run.state.glob("*.checkpoint")) == (checkpoints == "file")

    elsewhere = tmp_path / "another-machine"
    run.start_worker("--checkpoints", restart_with,
                     *(["--state-dir", str(elsewhere)] if checkpoints == "kafka" else []))
    try:
        wait_caught_up(run, lines)
    finally:
        run.stop_all()
    assert "detection resumed from checkpoint" in run.logs()
    assert ("moving to Kafka topic" in run.logs()) == (checkpoints != restart_with)
    assert flag_ids_in_clickhouse(run) == replay_ids
    assert_no_duplicates_in_final(run)


def test_malformed_messages_are_dead_lettered_with_reasons_and_the_worker_goes_on(
        kafka_bootstrap, tmp_path):
    from kafka import KafkaProducer

    from detectors.testing import make_event
    from schemas import encode_event

    run = Run(kafka_bootstrap, tmp_path)
    from pipeline.worker import WorkerConfig, ensure_worker_topics

    ensure_worker_topics(WorkerConfig(kafka=run.settings, engine_factory=lambda: None,
                                      fingerprint=""))
    # a brute force on one account, with the malformed messages in the middle of it
    good = [encode_event(make_event("login", account_id="a0", t=60.0 * i, success=False,
                                    event_id=f"e{i}")) for i in range(40)]
    valid_ts = '"ts": "2026-11-01T08:00:00.000Z"'
    bad = {
        b"{broken": "not valid JSON",
        b'{"type": "login", "event_id": "x1", ' + valid_ts.encode() + b"}": "missing",
        (b'{"type": "login", "event_id": "x2", "account_id": "a1", ' + valid_ts.encode()
         + b', "ip": "1.2.3.4", "device_id": "d", "success": "yes"}'): "Expected `bool`",
        (b'{"type": "teleport", "event_id": "x3", "account_id": "a1", '
         + valid_ts.encode() + b"}"): "teleport",
        (b'{"type": "usage", "event_id": "x4", "account_id": "a1", '
         b'"ts": "2026-11-01T08:00:00", "feature": "f", "units": 1}'): "",
        b'{"type": "usage", "account_id": "a1\xff\xfe"}': "",
        None: "null value",
    }
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    topic = f"{run.prefix}events.login"
    for i, value in enumerate(good):
        producer.send(topic, key=b"a0", value=value)
        if i == 20:
            for raw in bad:
                producer.send(topic, key=b"a1", value=raw)
    producer.flush()
    producer.close()
    produced = len(good) + len(bad)

    run.start_worker()
    try:
        seen = wait_caught_up(run, produced)
    finally:
        run.stop_all()
    assert seen["abuse_detect_received_events"] == len(good)
    assert seen["abuse_detect_dead_letters"] == len(bad)
    assert seen["abuse_detect_received_events"] + seen["abuse_detect_dead_letters"] == produced

    letters = read_topic(kafka_bootstrap, f"{run.prefix}events.deadletter", expected=len(bad))
    assert len(letters) == len(bad)
    assert {m.value for m in letters} == set(bad)  # the raw bytes, unchanged
    for message in letters:
        headers = dict(message.headers)
        assert headers["source"].decode().startswith(f"{topic}:")
        assert headers["source"].decode().rsplit(":", 1)[1].isdigit()  # the offset
        reason = headers["reason"].decode()
        assert reason and bad[message.value] in reason
    rows = clickhouse_rows(run.dsn, "SELECT source, reason FROM abuse.dead_letters")
    assert len(rows) == len(bad)
    assert all(source.startswith(f"{topic}:") and reason for source, reason in rows)
    # the valid events around the bad ones were processed: one account's brute force flagged
    assert clickhouse_rows(run.dsn, "SELECT count() > 0 FROM abuse.flags FINAL") == [(1,)]


def test_a_worker_without_the_checkpoint_refuses_a_trimmed_history(kafka_bootstrap, tmp_path):
    """Detection never starts afresh on a sequenced topic whose start was purged: that would
    silently forget the events before it. Only a lane that never ran (new detectors) starts
    there."""
    import asyncio

    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from kafka import KafkaProducer

    from pipeline.worker import WorkerConfig, ensure_worker_topics

    run = Run(kafka_bootstrap, tmp_path)
    config = WorkerConfig(kafka=run.settings, engine_factory=lambda: None, fingerprint="")
    ensure_worker_topics(config)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for _ in range(3):
        producer.send(config.sequenced_topic, b"x", partition=0)
    producer.flush()
    producer.close()

    async def trim() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records(
                {TopicPartition(config.sequenced_topic, 0): RecordsToDelete(before_offset=2)})
        finally:
            await admin.close()

    asyncio.run(trim())
    # a brand-new lane (its group never committed) starts where the topic starts
    process, port = run.start_worker("--checkpoints", "file")
    wait_until(lambda: metrics(port).get("abuse_detect_active") == 1, run)
    run.stop_all()
    assert "new detection lane starts where the sequenced topic starts" in run.logs()
    # now the lane has committed; without its checkpoint it must not start afresh
    checkpoints = list(run.state.glob("*.checkpoint"))
    assert checkpoints
    for checkpoint in checkpoints:
        checkpoint.unlink()
    process, _ = run.start_worker("--checkpoints", "file")
    assert process.wait(timeout=60) == 1
    assert "no checkpoint in" in run.logs() and "starts at offset 2" in run.logs()
    assert "--state-dir the group's other workers use" in run.logs()


def test_a_worker_whose_checkpoint_is_behind_the_topic_start_refuses_to_skip(kafka_bootstrap,
                                                                           tmp_path):
    """Events deleted between the checkpoint and the topic's start (retention, a bad trim)
    stop detection with an error saying so, rather than being skipped silently."""
    import asyncio

    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
    from kafka import KafkaProducer

    from pipeline.worker import WorkerConfig, ensure_worker_topics

    run = Run(kafka_bootstrap, tmp_path)
    config = WorkerConfig(kafka=run.settings, engine_factory=lambda: None, fingerprint="")
    ensure_worker_topics(config)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)

    def send_garbage(n: int) -> None:  # undecodable chunks: dead letters, but they advance it
        for _ in range(n):
            producer.send(config.sequenced_topic, b"x", partition=0)
        producer.flush()

    send_garbage(3)
    process, port = run.start_worker()
    wait_until(lambda: metrics(port).get("abuse_dead_letters_total", 0) >= 3, run)
    run.stop_all()  # a graceful stop checkpoints (past the garbage and ingest's heartbeats)
    send_garbage(3)
    partition = TopicPartition(config.sequenced_topic, 0)
    end = asyncio.run(end_offset(kafka_bootstrap, partition))

    async def trim() -> None:  # everything, the events after the checkpoint included
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records({partition: RecordsToDelete(before_offset=end)})
        finally:
            await admin.close()

    asyncio.run(trim())
    producer.close()
    process, _ = run.start_worker()
    assert process.wait(timeout=60) == 1
    assert "resumes at offset" in run.logs() and f"starts at offset {end}" in run.logs()


async def end_offset(bootstrap: str, partition) -> int:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return (await consumer.end_offsets([partition]))[partition]
    finally:
        await consumer.stop()


def test_a_topic_deleted_and_re_created_under_a_running_worker_is_read_afresh(
        kafka_bootstrap, tmp_path):
    """Its offsets start again at 0: the new events must not be taken for re-sends."""
    from kafka import KafkaAdminClient, KafkaProducer

    from detectors.testing import make_event
    from pipeline.produce import ensure_topics
    from pipeline.worker import WorkerConfig, ensure_worker_topics
    from schemas import encode_event

    run = Run(kafka_bootstrap, tmp_path)
    ensure_worker_topics(WorkerConfig(kafka=run.settings, engine_factory=lambda: None,
                                      fingerprint=""))
    topic = f"{run.prefix}events.login"

    def produce(events) -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        for event in events:
            producer.send(topic, key=b"a0", value=encode_event(event)).get(timeout=30)
        producer.close()

    before = [make_event("login", account_id="a0", t=60.0 * i, event_id=f"old{i}")
              for i in range(30)]
    after = [make_event("login", account_id="a0", t=3600.0 + 60.0 * i, event_id=f"new{i}")
             for i in range(10)]
    produce(before)
    _, port = run.start_worker()
    try:
        wait_caught_up(run, len(before))
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.delete_topics([topic])
            wait_until(lambda: topic not in admin.list_topics(), run)
        finally:
            admin.close()
        ensure_topics(run.settings, [topic], 6)
        produce(after)  # offsets 0-9 of the new topic, below the old mark of 29
        wait_until(lambda: metrics(port).get("abuse_events_processed_total", 0)
                   >= len(before) + len(after), run, timeout=120)
        seen = metrics(port)
    finally:
        run.stop_all()
    assert seen["abuse_events_processed_total"] == len(before) + len(after)
    assert seen["abuse_duplicate_events"] == 0
    assert seen["abuse_source_restarts_total"] == 1
    assert "source log restarted" in run.logs()


def test_a_crashed_faust_app_stops_detection_with_its_reason():
    """faust marks its app crashed when a service of its dies (its fetcher, say); detection
    must not then wait for chunks that never come."""
    from types import SimpleNamespace

    from pipeline.metrics import WorkerMetrics
    from pipeline.worker import DetectStage, WorkerConfig

    config = WorkerConfig(kafka=KafkaSettings(bootstrap="127.0.0.1:1"),
                          engine_factory=lambda: None, fingerprint="", checkpoints="file")
    stage = DetectStage(config, producer=None, metrics=WorkerMetrics())
    stage.app = SimpleNamespace(crashed=True, crash_reason=KeyError("sequenced-0"))
    with pytest.raises(RuntimeError, match=r"the faust app crashed: KeyError\('sequenced-0'\)"):
        asyncio.run(stage.step())


def test_a_detector_that_raises_stops_the_worker_without_a_checkpoint(monkeypatch):
    """A detector that raises (a bug, or input it cannot take) stops the worker with the
    error. Met in the agent's backpressure loop, it killed only faust's agent: no more chunks,
    and detection stalled with the worker up. Nothing is checkpointed past it: a restart runs
    the same events again (and stops again, loudly, until the detector is fixed)."""
    import pipeline.worker as worker
    from detectors import build
    from detectors.testing import make_event
    from pipeline.engine import Engine
    from pipeline.sequencing import DetectionStage, build_chunk, encode_chunk
    from schemas import encode_event

    def broken(*_):
        raise ValueError("a detector bug")

    detectors = build(["login_frequency"])
    monkeypatch.setattr(detectors[0], "score_one", broken)
    monkeypatch.setattr(worker, "MAX_BUFFERED", 1)  # the agent itself runs detection
    detect = detect_stage(0.0)
    detect.stage = DetectionStage(Engine(detectors), lateness=0.0)
    detect.stage.next_offset = 0
    logins = [(encode_event(make_event("login", account_id=f"a{n}", t=float(n),
                                       event_id=f"e{n}")), n, 0) for n in range(3)]
    chunk = encode_chunk(build_chunk("events.login:0", logins, max_t=10.0, caught_up=True,
                                     expected=["events.login:0"]))
    asyncio.run(detect.receive(_Event(0, chunk)))  # the agent lives on, and takes no more
    with pytest.raises(ValueError, match="a detector bug"):
        asyncio.run(detect.step())  # the worker's own loop: the worker stops with it
    checkpoints = []

    async def checkpoint() -> None:
        checkpoints.append(detect.stage.released)

    monkeypatch.setattr(detect, "_checkpoint", checkpoint)
    asyncio.run(detect.release())
    assert checkpoints == [] and detect.stage is None


def test_detection_seeks_back_to_a_record_faust_went_past():
    """Handed the partition back after a rebalance, faust may have fetched the next record
    while no stage was there to take it, and go on from the ones after (seen in CI: detection
    waited on offset 60 for good, 4,757 later records dropped). When later records keep coming
    for STALL_REWIND seconds without it, detection seeks back to it, and then takes it."""
    from types import SimpleNamespace

    from detectors import build
    from detectors.testing import make_event
    from pipeline.engine import Engine
    from pipeline.sequencing import DetectionStage, build_chunk, encode_chunk
    from pipeline.worker import STALL_REWIND
    from schemas import encode_event

    seeks = []

    async def seek(tp, offset: int) -> None:
        seeks.append((tp, offset))

    detect = detect_stage(0.0)
    sequenced = SimpleNamespace(topic=detect.config.sequenced_topic, partition=0)
    detect.app = SimpleNamespace(crashed=False, consumer=SimpleNamespace(
        assignment=lambda: [sequenced], highwater=lambda tp: 80, seek=seek))
    detect.stage = DetectionStage(Engine(build()), lateness=0.0)
    detect.stage.next_offset = 60
    detect.last_flush = detect.last_checkpoint = float("inf")  # no sinks here
    chunks = {n: encode_chunk(build_chunk(
        "events.login:0", [(encode_event(make_event("login", account_id=f"a{n}", t=float(n),
                                                    event_id=f"e{n}")), n, 0)],
        max_t=float("-inf"), caught_up=False, expected=["events.login:0"]))
        for n in range(60, 64)}

    async def run() -> None:
        await detect.step()  # the wait for offset 60 begins
        for offset in (61, 62, 63):  # faust went past it
            await detect.receive(_Event(offset, chunks[offset]))
        await detect.step()
        assert seeks == []  # later records alone, for a moment, are a rebalance's leftovers
        detect.stall = (60, detect.stall[1] - STALL_REWIND)
        await detect.step()
        assert seeks == [(sequenced, 60)]
        for offset in (60, 61, 62, 63):  # what faust delivers after the seek
            await detect.receive(_Event(offset, chunks[offset]))

    asyncio.run(run())
    assert detect.stage.next_offset == 64 and detect.stage.received == 4


def test_faust_topics_get_the_brokers_default_replication_factor(kafka_bootstrap):
    """faust cannot be told "the broker's default" (-1): the worker asks the broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    from pipeline.worker import replication_factor

    async def ask(settings: KafkaSettings) -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            return await replication_factor(admin, settings)
        finally:
            await admin.close()

    # the test broker is one node whose default.replication.factor is 1
    assert asyncio.run(ask(KafkaSettings(bootstrap=kafka_bootstrap))) == 1
    assert asyncio.run(ask(KafkaSettings(bootstrap=kafka_bootstrap, replication_factor=3))) == 3


class _Admin:
    """A cluster of three brokers whose default.replication.factor is 3, or that refuses."""

    def __init__(self, error: int = 0) -> None:
        self.error = error
        self.asked: list = []

    async def describe_cluster(self):
        return {"brokers": [{"node_id": 3}, {"node_id": 1}, {"node_id": 2}]}

    async def describe_configs(self, resources):
        from types import SimpleNamespace

        self.asked.extend((r.name, r.configs) for r in resources)
        resource = {"error_code": self.error, "error_message": "denied" if self.error else "",
                    "config_entries": [] if self.error else [
                        {"config_names": "default.replication.factor", "config_value": "3"}]}
        return [SimpleNamespace(to_object=lambda: {"resources": [resource]})]


def test_the_brokers_default_is_read_from_a_broker_and_a_refusal_names_the_setting():
    from pipeline.worker import replication_factor

    admin = _Admin()
    assert asyncio.run(replication_factor(admin, KafkaSettings(bootstrap="b:9092"))) == 3
    assert admin.asked == [("1", {"default.replication.factor": None})]
    refusing = _Admin(error=29)  # CLUSTER_AUTHORIZATION_FAILED
    with pytest.raises(RuntimeError, match=r"denied.*set --replication-factor"):
        asyncio.run(replication_factor(refusing, KafkaSettings(bootstrap="b:9092")))
    # an explicit factor is used as it is, without asking
    assert asyncio.run(replication_factor(refusing, KafkaSettings(
        bootstrap="b:9092", replication_factor=2))) == 2


class _FlakyTable(ClickHouseFlagSink):
    """Stands in for ClickHouse's flags table: refuses the first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        super().__init__("http://clickhouse:8123")
        self.failures = failures
        self.written: list[list] = []

    def write(self, batch) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("ClickHouse is restarting")
        self.written.append(list(batch))


def detect_stage(retry_seconds: float):
    from pipeline.metrics import WorkerMetrics
    from pipeline.worker import DetectStage, WorkerConfig

    config = WorkerConfig(kafka=KafkaSettings(bootstrap="127.0.0.1:1"),
                          engine_factory=lambda: None, fingerprint="", checkpoints="file",
                          sink_retry_seconds=retry_seconds)
    return DetectStage(config, producer=None, metrics=WorkerMetrics())


def test_a_clickhouse_write_that_fails_is_retried_in_place_with_the_same_flags():
    table, stage = _FlakyTable(failures=2), detect_stage(retry_seconds=30)
    stage.sinks = [table]
    for n in range(3):
        table.add(f"flag-{n}")
    asyncio.run(stage._flush())
    assert table.written == [["flag-0", "flag-1", "flag-2"]]
    assert stage.metrics.sink_retries._value.get() == 2


def test_a_clickhouse_outage_past_the_retries_stops_with_the_flags_kept_for_the_next_flush():
    """The batch is not dropped with the error: the flush on the way out (before any
    checkpoint) writes it if ClickHouse is back, and raises again, checkpointing nothing,
    if not."""
    table, stage = _FlakyTable(failures=1000), detect_stage(retry_seconds=0.6)
    stage.sinks = [table]
    table.add("flag-0")
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(stage._flush())
    assert table.written == []
    table.failures = 0
    asyncio.run(stage._flush())
    assert table.written == [["flag-0"]]


def test_the_restriction_hook_is_not_retried_in_place():
    """Its own retries (urllib3) are over when it raises: the worker stops, as documented."""
    from pipeline.sinks import RestrictionHookSink, SinkError

    endpoint = Endpoint(statuses=[400, 400])
    try:
        stage = detect_stage(retry_seconds=30)
        hook = RestrictionHookSink(endpoint.url, min_severity="low", retries=0)
        hook.setup()
        stage.sinks = [hook]
        from schemas.flags import Flag

        hook.add(Flag(flag_id="f1", account_id="a", detector="login_frequency", score=0.9,
                      severity="high", ts="2026-11-01T00:00:00.000Z",
                      detected_at="2026-11-01T00:00:01.000Z", reasons=("why",), evidence={},
                      related_accounts=(), mode="enforce"))
        with pytest.raises(SinkError, match="HTTP 400"):
            asyncio.run(stage._flush())
        assert len(endpoint.requests) == 1
        assert stage.metrics.sink_retries._value.get() == 0
    finally:
        endpoint.close()


class _Message:  # what faust's event.message carries
    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = "wt.sequenced", 0, offset, value


class _Event:
    def __init__(self, offset: int, value: bytes) -> None:
        self.message = _Message(offset, value)


def test_detection_takes_sequenced_records_only_in_turn():
    """After a rebalance the agent may still deliver chunks fetched before it, the ones
    before them dropped while the partition was away: a record past the next one waits for
    its turn (the consumer, reset to the checkpoint, delivers it again). Taking it skipped
    the ones between: an event went missing in a two-worker run."""
    from detectors import build
    from detectors.testing import make_event
    from pipeline.engine import Engine
    from pipeline.sequencing import DetectionStage, build_chunk, encode_chunk
    from schemas import encode_event

    detect = detect_stage(0.0)
    detect.stage = DetectionStage(Engine(build()), lateness=0.0)
    detect.stage.next_offset = 10
    chunks = {n: encode_chunk(build_chunk(
        "events.login:0", [(encode_event(make_event("login", account_id=f"a{n}", t=float(n),
                                                    event_id=f"e{n}")), n, 0)],
        max_t=float("-inf"), caught_up=False, expected=["events.login:0"]))
        for n in range(9, 13)}

    async def deliver(*offsets: int) -> None:
        for offset in offsets:
            await detect.receive(_Event(offset, chunks[offset]))

    asyncio.run(deliver(11, 12, 10, 11, 12, 9))
    assert detect.stage.next_offset == 13
    assert detect.stage.received == 3 and detect.stage.redelivered == 0
    assert detect.out_of_turn == 3
