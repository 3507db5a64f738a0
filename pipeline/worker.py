"""``abuse-pipeline worker``: the streaming worker on Kafka (faust-streaming + aiokafka).

Two stages run in every worker process, or one each with ``--stages`` (see
:mod:`pipeline.sequencing` for why there are two), and a third with ``--key-shards``
(:mod:`pipeline.shard_stage`: the lane's detectors split by key, combined by detect):

- **ingest**, in consumer group ``GROUP``, over the five ``events.*`` topics: validates, sends
  invalid messages to ``events.deadletter`` (raw bytes; ``source`` = topic:partition:offset and
  ``reason`` in headers), forwards valid events in chunks to ``GROUP.sequenced`` (one
  partition), then commits the source offsets (at-least-once: a crash re-sends, detection
  drops the re-sent events and dead letters by their source offsets).
- **detect**, a faust-streaming app (app id and consumer group ``GROUP.detect``): exactly one
  worker owns the sequenced partition at a time (the group moves it when that worker dies);
  the app's agent receives its chunks, thousands of events a message, so faust's per-message
  cost is small. The agent acks a chunk (and faust commits it) only once a checkpoint covers
  it. Workers started with ``--detectors`` form a detection *lane* of their own (app and group
  ``GROUP.detect.NAMES``, ``-`` between names, own checkpoint): lanes run different
  detectors side by side over the same sequenced events, and the topic is trimmed only up to
  what every lane has checkpointed. The owner restores the checkpoint (from a compacted Kafka
  topic, or ``--state-dir``: :mod:`pipeline.checkpoints`) and seeks to its offset, runs the
  engine, writes flags to ``abuse.flags`` (topic, key = account_id) and ClickHouse, dead
  letters to ``abuse.dead_letters``, and checkpoints: sinks are flushed *before* the
  checkpoint (which holds the offset to resume from) is written and the chunks acked, so a
  crash replays from the checkpoint and re-emits the same flag ids.

Batches everywhere on the hot path: ingest ``getmany``s thousands of messages (aiokafka, the
client faust runs on: a faust agent per event message tops out near 7k events/s here), one
Kafka message per source partition and batch on the sequenced topic, flags flushed in
batches.

Operations: JSON logs on stderr; Prometheus metrics on ``--metrics-host:--metrics-port``
(``/metrics``); SIGTERM or SIGINT stops gracefully (final flush, checkpoint, commit, leave the
group).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.checkpoints import (
    TOPIC_CONFIGS,
    CheckpointStore,
    FileCheckpoints,
    KafkaCheckpoints,
)
from pipeline.engine import Engine
from pipeline.kafka_settings import DEAD_LETTER_TOPIC, FLAGS_TOPIC, KafkaSettings
from pipeline.metrics import WorkerMetrics
from pipeline.sequencing import (
    DetectionStage,
    build_chunks,
    decode_chunk,
    encode_chunk,
    source_name,
)
from pipeline.sinks import BaseSink, ClickHouseDeadLetterSink, ClickHouseFlagSink, SinkError
from schemas.flags import DeadLetter, encode_flag

__all__ = ["STAGES", "WorkerConfig", "checkpoint_interval", "run_worker"]

log = logging.getLogger("abuse_pipeline.worker")

SEQUENCED_MAX_BYTES = 8 * 1024 * 1024
MAX_BUFFERED = 50_000  # events held for the watermark before detection stops reading
RELEASE_PER_STEP = 10_000  # events per detect step: short steps keep flushes and metrics fresh
HEARTBEAT_SECONDS = 1.0  # each ingested partition reports its watermark at least this often
PURGE_SECONDS = 60.0  # how often the sequenced topic is trimmed up to the checkpoint
SHARDS_WAIT_WARNING = 30.0  # s without progress from the key shards before a warning
STALL_WARNING = 60.0  # s without the next sequenced record, later ones there, before a warning
# s without the next sequenced record while later ones keep coming (dropped, out of turn)
# before detection seeks back to it: faust fetched it while the partition was between owners
# and will not deliver it again by itself
STALL_REWIND = 10.0
METADATA_MAX_AGE_MS = 10_000  # how often ingest looks for new partitions and topics
END_OFFSETS_TIMEOUT = 5.0  # s; ingest goes on without fresh end offsets meanwhile
STAGES = frozenset({"ingest", "detect", "shard"})


@dataclass
class WorkerConfig:
    kafka: KafkaSettings
    engine_factory: Callable[[], Engine]
    fingerprint: str  # of the detector configuration: a checkpoint only restores into its own
    clickhouse: str | None = None
    state_dir: Path = Path("worker-state")
    lateness: float = 300.0
    idle_flush: float = 2.0  # s of quiet, every source caught up: release what is held
    partitions: int = 6  # for event topics the worker has to create
    checkpoint_seconds: float = 5.0
    flush_seconds: float = 0.5
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9108  # 0: no endpoint
    session_timeout_ms: int = 10_000
    max_records: int = 20_000
    purge_seconds: float = PURGE_SECONDS
    # a detection lane: the detectors this worker runs ("" = all); lanes detect side by side
    lane: str = ""
    checkpoints: str = "kafka"  # or "file": in --state-dir (workers taking over must share it)
    hook: Callable[[], BaseSink] | None = None  # makes the restriction hook's sink
    # how long a ClickHouse write is retried in place before the worker stops (a server
    # restarting, a network blip: not a rebalance of the whole group)
    sink_retry_seconds: float = 60.0
    # a process may run one stage: ingest and detection then use a core each, and scale apart
    stages: frozenset[str] = frozenset({"ingest", "detect"})
    # the lane's splittable detectors split by key over this many shards (1: not split)
    key_shards: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sequenced_topic(self) -> str:
        return f"{self.kafka.topic_prefix}{self.kafka.group_id}.sequenced"

    @property
    def detect_group(self) -> str:
        """The lane's consumer group, also the faust app's id (so no ``+``: topic names hold
        it)."""
        lane = f".{self.lane.replace('+', '-')}" if self.lane else ""
        return f"{self.kafka.group_id}.detect{lane}"

    @property
    def checkpoint_path(self) -> Path:
        lane = f".{self.lane}" if self.lane else ""
        return self.state_dir / f"{self.sequenced_topic}-0{lane}.checkpoint"

    @property
    def checkpoint_topic(self) -> str:
        """One compacted topic per lane."""
        return f"{self.kafka.topic_prefix}{self.detect_group}.checkpoints"

    def checkpoint_store(self, producer: Any) -> CheckpointStore:
        if self.checkpoints == "file":
            return FileCheckpoints(self.checkpoint_path)
        return KafkaCheckpoints(self.kafka, self.checkpoint_topic, producer)

    # -- key shards (pipeline.shard_stage) --------------------------------------------------
    @property
    def split(self) -> bool:
        return self.key_shards > 1

    @property
    def parts_topic(self) -> str:
        """The lane's shards' parts; partition i is shard i (and its lease)."""
        return f"{self.kafka.topic_prefix}{self.detect_group}.parts"

    @property
    def shard_group(self) -> str:
        """The group that shares the shards out (not under ``.detect``: it commits nothing on
        the sequenced topic, and the topic's trimming reads the groups there)."""
        lane = self.detect_group[len(f"{self.kafka.group_id}.detect"):]
        return f"{self.kafka.group_id}.shards{lane}"

    def shard_checkpoint_store(self, index: int, producer: Any) -> CheckpointStore:
        if self.checkpoints == "file":
            lane = f".{self.lane}" if self.lane else ""
            return FileCheckpoints(
                self.state_dir / f"{self.sequenced_topic}-0{lane}.shard-{index}.checkpoint")
        return KafkaCheckpoints(self.kafka, self.shard_checkpoint_topic(index), producer)

    def shard_commit_group(self, index: int) -> str:
        """Where shard ``index`` commits the sequenced offset its checkpoint resumes from:
        under ``.detect``, so the topic is trimmed only up to there."""
        return f"{self.detect_group}.shard-{index}"

    def shard_checkpoint_topic(self, index: int) -> str:
        return f"{self.kafka.topic_prefix}{self.detect_group}.shard-{index}.checkpoints"

    def detect_engine(self) -> Engine:
        """The lane's engine; with key shards, the combiner of theirs."""
        engine = self.engine_factory()
        if not self.split:
            return engine
        from pipeline.keyshards import CombineEngine

        return CombineEngine.like(engine, count=self.key_shards, fingerprint=self.fingerprint)

    def shard_engine(self, index: int) -> Engine:
        from pipeline.keyshards import ShardEngine

        return ShardEngine.like(self.engine_factory(), index=index, count=self.key_shards)


CHECKPOINT_SHARE = 0.05  # of the detect stage's time, at most, spent writing checkpoints


def checkpoint_interval(configured: float, last_took: float) -> float:
    """Seconds between checkpoints: as configured, but long enough that full snapshots of a
    large state take at most CHECKPOINT_SHARE of the time (a crash then replays more).

    >>> checkpoint_interval(5.0, 0.05), checkpoint_interval(5.0, 2.0)
    (5.0, 40.0)
    """
    return max(configured, last_took / CHECKPOINT_SHARE)


def detector_fingerprint(engine: Engine) -> str:
    """The same for the same detectors and settings in any process (sets sorted)."""

    def canonical(value: Any) -> Any:
        if isinstance(value, set | frozenset):
            return sorted(map(str, value))
        return repr(value)

    settings = {d.name: d._settings() if hasattr(d, "_settings") else repr(d)
                for d in engine.detectors}
    text = json.dumps(settings, sort_keys=True, default=canonical)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


# -- stage 1 --------------------------------------------------------------------------------
class IngestStage:
    """Consume ``events.*``, validate, forward chunks to the sequenced topic, commit."""

    def __init__(self, config: WorkerConfig, producer, metrics: WorkerMetrics) -> None:
        self.config = config
        self.producer = producer
        self.metrics = metrics
        self.max_t: dict[Any, float] = {}
        self.reported: dict[Any, tuple[float, bool, float]] = {}  # max_t, caught_up, when
        self.end_offsets: dict[Any, int] = {}
        self.ends_checked = 0.0
        self.consumer = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self.consumer = AIOKafkaConsumer(
            group_id=self.config.kafka.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=self.config.session_timeout_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
            # added partitions and re-created topics are seen within seconds, not 5 minutes
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
            client_id=f"abuse-pipeline-ingest-{os.getpid()}",
            **self.config.kafka.aiokafka_kwargs())
        self.consumer.subscribe(self.config.kafka.event_topics())
        await self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

    def _expected(self) -> list[str]:
        return sorted(source_name(topic, p) for topic in self.config.kafka.event_topics()
                      for p in (self.consumer.partitions_for_topic(topic) or ()))

    async def _refresh_ends(self, assigned) -> None:
        from aiokafka.errors import KafkaError

        now = time.monotonic()
        if now - self.ends_checked >= 0.5 or any(tp not in self.end_offsets for tp in assigned):
            self.ends_checked = now
            try:
                # a deleted topic's partitions would block this for the request timeout
                self.end_offsets.update(await asyncio.wait_for(
                    self.consumer.end_offsets(list(assigned)), END_OFFSETS_TIMEOUT))
            except (TimeoutError, KafkaError) as error:
                log.warning("end offsets unavailable; caught-up state from the last fetch",
                            extra={"error": repr(error)})

    async def step(self) -> int:
        """One batch: returns how many messages were read."""
        from aiokafka.errors import CommitFailedError, IllegalStateError

        consumer = self.consumer
        batch = await consumer.getmany(timeout_ms=200, max_records=self.config.max_records)
        assigned = consumer.assignment()
        self.metrics.ingest_partitions.set(len(assigned))
        if not assigned:
            return 0
        started = time.perf_counter()
        await self._refresh_ends(assigned)
        expected = self._expected()
        sends, commits, read, lag = [], {}, 0, 0
        for tp in sorted(assigned):
            records = batch.get(tp, [])
            try:
                position = records[-1].offset + 1 if records else await consumer.position(tp)
            except IllegalStateError:  # revoked by a rebalance meanwhile: its new owner reads it
                continue
            end = max(self.end_offsets.get(tp, 0), consumer.highwater(tp) or 0)
            caught_up = position >= end
            lag += max(0, end - position)
            max_t = self.max_t.get(tp, float("-inf"))
            last = self.reported.get(tp)
            if not records and last and last[:2] == (max_t, caught_up) \
                    and time.monotonic() - last[2] < HEARTBEAT_SECONDS:
                continue  # nothing new to say (a heartbeat goes out every few seconds)
            source = source_name(tp.topic, tp.partition)
            # the log end that came with these records (not the cached one: a re-created
            # topic has the old one's partition names)
            log_end = (consumer.highwater(tp) or -1) if records else -1
            chunks, self.max_t[tp] = build_chunks(
                source, ((r.value, r.offset, r.timestamp) for r in records), max_t=max_t,
                caught_up=caught_up, expected=expected, end=log_end, sent_at=time.time())
            self.reported[tp] = (self.max_t[tp], caught_up, time.monotonic())
            raw = {r.offset: r for r in records} if any(c.dead for c in chunks) else {}
            for chunk in chunks:
                sends.append(await self.producer.send(
                    self.config.sequenced_topic, encode_chunk(chunk), key=b"chunk",
                    partition=0))
                for letter in chunk.dead:
                    sends.append(await self._dead_letter(letter, raw))
            if records:
                commits[tp] = records[-1].offset + 1
                read += len(records)
        if sends:
            await asyncio.gather(*sends)  # acknowledged by the broker before the commit
        if commits:
            try:
                await consumer.commit(commits)
            except (CommitFailedError, IllegalStateError) as error:
                # a rebalance took partitions away: their new owner re-sends what we sent
                # (detection drops the re-sent records by source offset)
                log.warning("commit after a rebalance failed", extra={"error": str(error)})
        self.metrics.ingest_messages.inc(read)
        self.metrics.lag.labels("ingest").set(lag)
        if read:
            self.metrics.batch_seconds.labels("ingest").observe(time.perf_counter() - started)
        return read

    async def _dead_letter(self, letter: DeadLetter, raw: dict) -> Any:
        offset = int(letter.source.rsplit(":", 1)[1])
        record = raw[offset]
        self.metrics.dead_letters.inc()
        log.warning("dead letter", extra={"source": letter.source, "reason": letter.reason})
        return await self.producer.send(
            self.config.kafka.topic(DEAD_LETTER_TOPIC), record.value, key=record.key,
            headers=[("source", letter.source.encode()), ("reason", letter.reason.encode())])


# -- stage 2 --------------------------------------------------------------------------------
async def replication_factor(admin: Any, settings: KafkaSettings) -> int:
    """The replication factor to give faust's own topics: ours, and for ``-1`` (the broker's
    default) the broker's ``default.replication.factor``, which faust cannot be told to use.

    A broker that will not say (no DescribeConfigs permission) is an error naming the setting
    to pass instead: quietly creating them with one replica would not survive a broker loss.
    """
    if settings.replication_factor > 0:
        return settings.replication_factor
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    name = "default.replication.factor"
    try:
        cluster = await admin.describe_cluster()
        broker = min(b["node_id"] for b in cluster["brokers"])
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, str(broker), {name: None})])
        (resource,) = response.to_object()["resources"]
        if resource["error_code"]:
            raise RuntimeError(resource["error_message"] or f"error {resource['error_code']}")
        (entry,) = resource["config_entries"]
        return int(entry["config_value"])
    except Exception as error:
        raise RuntimeError(
            f"cannot read the broker's {name} ({error}); set --replication-factor "
            "(ABUSE_REPLICATION_FACTOR) for the topics the worker creates") from error


class DetectStage:
    """Own the sequenced partition (or wait for it), detect, sink, checkpoint.

    A faust app: its consumer group hands the partition over (``_assigned`` / ``_revoked``),
    its agent feeds the chunks in (``receive``), and ``step`` releases held events, flushes and
    checkpoints on a clock of its own (events are held for the watermark even when no chunk
    comes).
    """

    def __init__(self, config: WorkerConfig, producer, metrics: WorkerMetrics) -> None:
        self.config = config
        self.producer = producer
        self.metrics = metrics
        self.stage: DetectionStage | None = None
        self.checkpoints = config.checkpoint_store(producer)
        self.sinks: list[BaseSink] = []
        self.dead_sink: BaseSink | None = None
        self.lock = asyncio.Lock()
        self.pending_sends: list[Any] = []
        self.pending_flags = 0
        self.last_flush = self.last_checkpoint = time.monotonic()
        self.checkpoint_took = 0.0
        self.app = None  # the faust app
        self.admin = None
        self.purged_at = time.monotonic()
        self.fatal: Exception | None = None  # stops the worker; no checkpoint follows it
        self.unacked: list[Any] = []  # faust events fed since the last checkpoint
        self.received_chunks = 0
        self.out_of_turn = 0  # sequenced records dropped to be read in turn (see receive)
        self.stall = (-1, time.monotonic())  # the next offset, and since when it is awaited
        self.ahead = 0  # sequenced records dropped for coming before the one awaited
        self.ahead_at_stall = 0  # ``ahead`` when the wait (or the last rewind) began
        self.parts_consumer = None  # with key shards: their parts topic
        self.shards_waited_since = time.monotonic()

    async def start(self) -> None:
        """Start the faust app: its group gives this worker the sequenced partition or not."""
        from aiokafka.admin import AIOKafkaAdminClient

        from pipeline.faust_app import detection_app

        config = self.config
        self.admin = AIOKafkaAdminClient(**config.kafka.aiokafka_kwargs())
        await self.admin.start()
        # faust keeps a data directory even for memory tables: ours, not the working dir's
        datadir = config.state_dir / f"{config.detect_group}.faust"
        datadir.mkdir(parents=True, exist_ok=True)
        app = detection_app(
            config.detect_group, config.sequenced_topic, self.receive,
            loop=asyncio.get_running_loop(),
            broker_session_timeout=config.session_timeout_ms / 1000,
            broker_commit_interval=1.0, stream_buffer_maxsize=8,  # chunks are large
            # what is not acked yet is covered by the next checkpoint, not by faust: a
            # rebalance or a stop must not wait for it
            stream_wait_empty=False,
            consumer_max_fetch_size=SEQUENCED_MAX_BYTES * 2,
            producer_max_request_size=SEQUENCED_MAX_BYTES,
            # faust's own topics (its group leader's) as redundant as ours
            topic_replication_factor=await replication_factor(self.admin, config.kafka),
            datadir=datadir,
            **config.kafka.faust_settings())
        app.on_partitions_assigned.connect(self._assigned)
        app.on_partitions_revoked.connect(self._revoked)
        self.app = app
        await app.start()

    async def _assigned(self, app, assigned, **_: Any) -> None:
        ours = [tp for tp in assigned if tp.topic == self.config.sequenced_topic]
        if ours and self.stage is None:  # (faust revokes everything before it assigns)
            try:
                await self.acquire(ours[0])
            except Exception as error:  # raised again by step(): the worker stops
                self.fatal = error

    async def _revoked(self, app, revoked, **_: Any) -> None:
        if any(tp.topic == self.config.sequenced_topic for tp in revoked):
            await self.release()

    async def acquire(self, tp) -> None:
        """The sequenced partition is ours: restore the checkpoint, open the sinks, seek."""
        async with self.lock:
            stage = DetectionStage(self.config.detect_engine(), lateness=self.config.lateness,
                                   idle_after=self.config.idle_flush)
            where = self.checkpoints.where
            start = (await self.app.consumer.earliest_offsets(tp))[tp]
            committed = (await self._lane_offsets(tp)).get(self.config.detect_group)
            blob = await self.checkpoints.load()
            if blob is None and self.config.checkpoints == "kafka" \
                    and self.config.checkpoint_path.exists():
                # a group moving its checkpoints from files to Kafka: the next one goes there
                blob = self.config.checkpoint_path.read_bytes()
                where = f"{self.config.checkpoint_path} (moving to {where})"
            if blob is not None:
                stage.restore(blob, self.config.fingerprint)
                if stage.next_offset < start:  # never skip silently over what is gone
                    raise RuntimeError(
                        f"the checkpoint in {where} resumes at offset {stage.next_offset}, but "
                        f"{tp.topic} starts at offset {start}: the events between were deleted "
                        "(by retention, or trimmed by a lane that did not see this one); "
                        "detection would miss them")
                log.info("detection resumed from checkpoint", extra={
                    "checkpoint": where, "offset": stage.next_offset,
                    "events": stage.received, "buffered": len(stage.buffer)})
            elif start > 0 and committed is not None:
                # this lane ran before and its checkpoint is gone: never start afresh on a
                # trimmed history, say what is wrong
                raise RuntimeError(
                    f"no checkpoint in {where}, but {tp.topic} starts at offset {start} "
                    "(trimmed after another worker's checkpoint, or by retention): "
                    + ("give this worker the --state-dir the group's other workers use"
                       if self.config.checkpoints == "file" else
                       "was the checkpoint topic deleted? A group whose checkpoints were "
                       "files needs its --state-dir once, to move them to Kafka"))
            elif start > 0:
                # a lane that never ran (new detectors): it learns from what is still there
                stage.next_offset = start
                log.warning("new detection lane starts where the sequenced topic starts; its "
                            "detectors see no earlier events", extra={
                                "detect_group": self.config.detect_group, "offset": start})
            else:
                log.info("detection starts afresh", extra={"checkpoint": where})
            self.sinks = await self._open_sinks()
            if self.config.split:
                await self._open_parts(stage.engine.state.inbox)
            if stage.next_offset < (start if committed is None else committed):
                # faust starts where its group committed (acked chunks: at most the
                # checkpoint, behind it by up to a commit interval), or at the start; what it
                # delivers before the checkpoint is dropped (receive). Seek only to go back:
                # seeking while faust's fetcher holds records can crash it (a takeover did,
                # in a test), and step() then stops the worker.
                await self.app.consumer.seek(tp, stage.next_offset)
            self.unacked = []
            self.stage = stage
            self.metrics.detect_active.set(1)

    async def _open_sinks(self) -> list[BaseSink]:
        sinks = []
        if self.config.hook is not None:
            hook = self.config.hook()
            hook.setup()
            sinks.append(hook)
        if not self.config.clickhouse:
            return sinks
        # chdb allows one process per path: a worker handing over may still hold it briefly
        deadline = time.monotonic() + 60
        while True:
            try:
                flags = ClickHouseFlagSink(self.config.clickhouse)
                flags.setup()
                self.dead_sink = ClickHouseDeadLetterSink(client=flags.client)
                return [flags, *sinks]
            except SinkError as error:
                if time.monotonic() > deadline:
                    raise
                log.warning("ClickHouse not available yet, retrying", extra={"error": str(error)})
                await asyncio.sleep(1.0)

    async def _open_parts(self, inbox) -> None:
        """Read every shard's partition of the parts topic from where the checkpoint left it
        (the start, without one)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.parts_consumer = consumer = AIOKafkaConsumer(
            enable_auto_commit=False, max_partition_fetch_bytes=SEQUENCED_MAX_BYTES,
            fetch_max_wait_ms=100,  # each event waits for its shards' parts: keep it short
            client_id=f"abuse-pipeline-combiner-{os.getpid()}",
            **self.config.kafka.aiokafka_kwargs())
        await consumer.start()
        partitions = [TopicPartition(self.config.parts_topic, i)
                      for i in range(self.config.key_shards)]
        consumer.assign(partitions)
        for tp in partitions:
            if inbox.positions[tp.partition] >= 0:
                consumer.seek(tp, inbox.positions[tp.partition])
            else:
                await consumer.seek_to_beginning(tp)

    async def _read_parts(self, stage: DetectionStage) -> int:
        """Take what the shards sent; return how many ready events they all covered."""
        from pipeline.keyshards import decode_batch

        inbox = stage.engine.state.inbox
        batches = await self.parts_consumer.getmany(timeout_ms=0, max_records=10_000)
        for tp, records in batches.items():
            for record in records:
                batch = decode_batch(record.value)  # a bad message stops detection, said why
                if batch.shard != tp.partition:
                    raise ValueError(f"{tp.topic}:{tp.partition}:{record.offset} holds parts "
                                     f"of shard {batch.shard}")
                inbox.add(batch, offset=record.offset)
        covered = max(0, min(len(stage.ready), inbox.through() - stage.released))
        self.metrics.waiting_for_shards.set(len(stage.ready) - covered)
        now = time.monotonic()
        if covered or not stage.ready:
            self.shards_waited_since = now
        elif now - self.shards_waited_since >= SHARDS_WAIT_WARNING:
            self.shards_waited_since = now
            log.warning("detection is waiting for key shards", extra={
                "events": len(stage.ready), "shard_progress": inbox.progress,
                "hint": "is a worker running the shard stage with the same --key-shards?"})
        return covered

    async def release(self) -> None:
        """Hand the partition over: flush, checkpoint, close the sinks (and chdb's lock)."""
        async with self.lock:
            if self.stage is None:
                return
            await self._flush()
            if self.fatal is None:
                await self._checkpoint()
            else:
                log.error("no checkpoint after a failure (detection may be part-way through "
                          "an event): a restart runs the events since the last checkpoint "
                          "again",
                          extra={"error": repr(self.fatal)})
            for sink in self.sinks:
                sink.close()
            if self.parts_consumer is not None:
                await self.parts_consumer.stop()
                self.parts_consumer = None
            self.sinks, self.dead_sink, self.stage = [], None, None
            self.metrics.detect_active.set(0)
            log.info("detection handed over")

    async def stop(self) -> None:
        try:
            if self.app is not None:
                await self.release()  # raises if a sink still fails: no checkpoint then
        finally:
            if self.app is not None:
                await self.app.stop()
            if self.admin is not None:
                await self.admin.close()

    async def receive(self, event) -> None:
        """One chunk from the agent; detection runs when ``step`` next comes round.

        An error here (a detector that raises, met in the backpressure loop) would kill only
        faust's agent: no more chunks, and detection stalled with the worker up. It is kept
        for ``step``, which raises it, and the worker stops with it.
        """
        try:
            await self._receive(event)
        except Exception as error:  # (step has kept it already if detection raised it)
            self.fatal = self.fatal or error

    async def _receive(self, event) -> None:
        async with self.lock:
            stage, record = self.stage, event.message
            if stage is None or record.offset != stage.next_offset:
                # Not ours (anymore), or out of turn: fetched before a rebalance or a seek,
                # and delivered after. A record past the next one must wait too: the agent
                # may still hold chunks fetched before the partition came back to us, with
                # the ones before them dropped while it was away; taking it would skip those
                # when the consumer, reset to the checkpoint, delivers them again.
                self.out_of_turn += 1
                if stage is not None and record.offset > stage.next_offset:
                    self.ahead += 1
                return
            self._feed(stage, record)
            stage.next_offset = record.offset + 1
            self.received_chunks += 1
            self.unacked.append(event)
        while self.stage is not None and self.stage.ready \
                and len(self.stage.buffer) + len(self.stage.ready) >= MAX_BUFFERED \
                and self.fatal is None:
            # backpressure: work off what is held before taking more (the rest waits in
            # Kafka, not in memory)
            await self.step()

    async def step(self) -> int:
        """Release what the watermarks allow, emit it, flush and checkpoint when due; returns
        how many chunks came in since the last step."""
        if self.fatal is not None:
            raise self.fatal
        if self.app is not None and self.app.crashed:  # e.g. its fetcher: nothing would come
            raise RuntimeError(f"the faust app crashed: {self.app.crash_reason!r}")
        await asyncio.sleep(0.02)  # the agent's chunks come in meanwhile
        async with self.lock:
            stage = self.stage
            if stage is None:
                return 0
            started = time.perf_counter()
            chunks, self.received_chunks = self.received_chunks, 0
            before = stage.released
            limit = RELEASE_PER_STEP
            if self.parts_consumer is not None:  # only what every key shard has covered
                limit = min(limit, await self._read_parts(stage))
            try:
                flags = stage.advance(limit=limit)
            except Exception as error:
                # The engine's state is part-way through an event: checkpointing it would skip
                # that event on restart. Without, a restart runs the same events again.
                self.fatal = error
                raise
            now = time.monotonic()
            self._emit(flags)
            self._observe(stage, stage.released - before)
            await self._rewind_if_stalled(stage)
            if self.pending_flags >= 5_000 or now - self.last_flush >= self.config.flush_seconds:
                await self._flush()
            if now - self.last_checkpoint >= checkpoint_interval(self.config.checkpoint_seconds,
                                                                 self.checkpoint_took):
                await self._flush()
                await self._checkpoint()
            if chunks:
                self.metrics.batch_seconds.labels("detect").observe(time.perf_counter() - started)
            return chunks

    def _feed(self, stage: DetectionStage, record) -> None:
        try:
            chunk = decode_chunk(record.value)
        except Exception as error:  # a foreign or corrupt message: keep it, keep going
            from pipeline.engine import utc_now

            letter = DeadLetter(
                source=f"{record.topic}:{record.partition}:{record.offset}",
                reason=f"undecodable sequenced message: {error}",
                raw=(record.value or b"").decode("utf-8", "backslashreplace"),
                received_at=utc_now())
            if self.dead_sink is not None:
                self.dead_sink.add(letter)
            self.metrics.dead_letters.inc()
            return
        restarts = stage.restarts
        chunk = stage.accept(chunk)  # re-sent dead letters are not recorded twice either
        if stage.restarts > restarts:
            self.metrics.source_restarts.inc(stage.restarts - restarts)
            log.warning("source log restarted below what detection accepted (topic deleted "
                        "and re-created, or truncated): reading its offsets afresh",
                        extra={"source": chunk.source, "end": chunk.end})
        if self.dead_sink is not None:
            for letter in chunk.dead:
                self.dead_sink.add(letter)
        stage.hold(chunk)

    def _emit(self, flags: list) -> None:
        if not flags:
            return
        now_ms = time.time() * 1000
        topic = self.config.kafka.topic(FLAGS_TOPIC)
        for flag, kafka_ts in flags:
            for sink in self.sinks:
                sink.add(flag)
            self.pending_sends.append(self.producer.send(
                topic, encode_flag(flag), key=flag.account_id.encode()))
            self.metrics.flags.labels(flag.detector, flag.severity, flag.mode).inc()
            if kafka_ts:
                self.metrics.event_to_flag.observe(max(0.0, (now_ms - kafka_ts) / 1000))
        self.pending_flags += len(flags)

    def _observe(self, stage: DetectionStage, released: int) -> None:
        m = self.metrics
        m.events_processed.inc(released)
        m.buffered.set(len(stage.buffer))
        m.duplicates.set(stage.duplicates)
        m.late.set(stage.buffer.late)
        m.watermark.set(max(0.0, stage.watermarks.low()))
        m.caught_up.set(int(stage.watermarks.all_caught_up() and not len(stage.buffer)
                            and not stage.ready))
        m.detect_received.set(stage.received)
        m.detect_dead.set(stage.dead_lettered)
        for tp in self.app.consumer.assignment():
            if tp.topic == self.config.sequenced_topic:
                end = self.app.consumer.highwater(tp)
                if end is not None:
                    m.lag.labels("detect").set(max(0, end - stage.next_offset))
                    self._watch_stall(stage.next_offset, end)

    def _watch_stall(self, offset: int, end: int) -> None:
        """Say so when the next record of the sequenced topic does not come for a minute
        while later ones exist (records out of turn are dropped until it comes)."""
        now = time.monotonic()
        if offset >= end or offset != self.stall[0]:
            self.stall = (offset, now)
            self.ahead_at_stall = self.ahead
        elif now - self.stall[1] >= STALL_WARNING:
            self.stall = (offset, now)
            log.warning("detection waits for a record of the sequenced topic", extra={
                "offset": offset, "end": end, "out_of_turn": self.out_of_turn})

    async def _rewind_if_stalled(self, stage: DetectionStage) -> None:
        """Seek back to the next record when later ones have kept coming without it.

        After a rebalance that hands the partition back to this worker, faust may have
        fetched the next record while no stage was there to take it (receive dropped it) and
        go on from the ones after: seen in CI, detection waited on it for good. A backward seek
        is the kind that is safe while faust's fetcher holds records (see acquire).
        """
        offset, since = self.stall
        if offset != stage.next_offset or self.ahead == self.ahead_at_stall \
                or time.monotonic() - since < STALL_REWIND:
            return
        ours = [tp for tp in self.app.consumer.assignment()
                if tp.topic == self.config.sequenced_topic]
        if not ours:
            return
        log.warning("detection seeks back to the record it waits for", extra={
            "offset": offset, "later_records_dropped": self.ahead - self.ahead_at_stall})
        self.ahead_at_stall = self.ahead
        self.stall = (offset, time.monotonic())
        await self.app.consumer.seek(ours[0], offset)

    async def _flush(self) -> None:
        """Sinks first, then the flags topic: everything before the offset we checkpoint."""
        sends, self.pending_sends = self.pending_sends, []
        for future in await asyncio.gather(*sends):
            await future
        for sink in self.sinks:
            await self._flush_sink(sink)
        if self.dead_sink is not None:
            await self._flush_sink(self.dead_sink)
        self.pending_flags = 0
        self.last_flush = time.monotonic()

    async def _flush_sink(self, sink: BaseSink) -> None:
        """Flush one sink; a sink that asks for it (ClickHouse) is retried with a growing pause
        for up to ``sink_retry_seconds`` (the batch stays buffered), then the error stops the
        worker before its checkpoint. The restriction hook retries on its own (``urllib3``)."""
        deadline = time.monotonic() + self.config.sink_retry_seconds
        pause = 0.5
        while True:
            try:
                sink.flush()
                return
            except Exception as error:
                if not sink.retry_in_place or time.monotonic() + pause > deadline:
                    raise
                self.metrics.sink_retries.inc()
                log.warning("sink write failed; retrying", extra={
                    "sink": type(sink).__name__, "error": repr(error),
                    "retry_in_seconds": pause})
            await asyncio.sleep(pause)  # heartbeats and the agent go on meanwhile
            pause = min(pause * 2, 10.0)

    async def _checkpoint(self) -> None:
        stage = self.stage
        if stage is None:
            return
        started = time.monotonic()
        await self.checkpoints.save(stage.snapshot(self.config.fingerprint))
        self.last_checkpoint = time.monotonic()
        self.checkpoint_took = self.last_checkpoint - started
        from aiokafka import TopicPartition

        partition = TopicPartition(self.config.sequenced_topic, 0)
        # faust commits what is acked: for lag dashboards and trimming; the checkpoint is the
        # truth (a restart seeks to it)
        acked, self.unacked = self.unacked, []
        for event in acked:
            with contextlib.suppress(Exception):
                event.ack()
        if time.monotonic() - self.purged_at >= self.config.purge_seconds:
            await self._purge(partition, stage.next_offset)
            if self.config.split:
                await self._purge_parts(stage.engine.state.inbox.positions)

    async def _purge(self, partition, offset: int) -> None:
        """Delete what every detection lane's checkpoint covers from the internal topic, as
        Kafka Streams purges its repartition topics: it is never read again."""
        from aiokafka.admin import RecordsToDelete

        self.purged_at = time.monotonic()
        try:
            lanes = await self._lane_offsets(partition)
            if any(committed is None for committed in lanes.values()):
                return  # a lane without a commit yet may still need the whole history
            offset = min([offset, *lanes.values()])
            await self.admin.delete_records({partition: RecordsToDelete(before_offset=offset)})
        except Exception as error:  # the topic keeps growing until retention: say so, go on
            log.warning("could not purge the sequenced topic", extra={"error": repr(error)})

    async def _purge_parts(self, positions: list[int]) -> None:
        """The parts before the checkpoint's positions are combined: never read again."""
        from aiokafka import TopicPartition
        from aiokafka.admin import RecordsToDelete

        done = {TopicPartition(self.config.parts_topic, shard): RecordsToDelete(offset)
                for shard, offset in enumerate(positions) if offset > 0}
        if done:
            try:
                await self.admin.delete_records(done)
            except Exception as error:
                log.warning("could not purge the parts topic", extra={"error": repr(error)})

    async def _lane_offsets(self, partition) -> dict[str, int | None]:
        """The committed offset of every detection lane of this worker group, and of every
        key shard (``GROUP.detect[.NAMES].shard-I``: where its checkpoint resumes) (None:
        none)."""
        from aiokafka import TopicPartition

        partition = TopicPartition(partition.topic, partition.partition)
        base = f"{self.config.kafka.group_id}.detect"
        groups = [g[0] for g in await self.admin.list_consumer_groups()
                  if g[0] == base or g[0].startswith(base + ".")]
        offsets: dict[str, int | None] = {}
        for group in groups:
            found = await self.admin.list_consumer_group_offsets(group, partitions=[partition])
            committed = found.get(partition)
            offsets[group] = committed.offset if committed and committed.offset >= 0 else None
        return offsets


# -- wiring ---------------------------------------------------------------------------------
def ensure_worker_topics(config: WorkerConfig) -> None:
    from pipeline.produce import ensure_topics

    kafka = config.kafka
    ensure_topics(kafka, kafka.event_topics(), config.partitions)
    ensure_topics(kafka, [kafka.topic(FLAGS_TOPIC), kafka.topic(DEAD_LETTER_TOPIC)],
                  config.partitions)
    ensure_topics(kafka, [config.sequenced_topic], 1,
                  configs={"max.message.bytes": str(SEQUENCED_MAX_BYTES)})
    if config.checkpoints == "kafka":
        ensure_topics(kafka, [config.checkpoint_topic], 1, configs=TOPIC_CONFIGS)
    if config.split:
        ensure_topics(kafka, [config.parts_topic], config.key_shards)
        _check_partitions(kafka, config.parts_topic, config.key_shards)
        if config.checkpoints == "kafka":
            ensure_topics(kafka, [config.shard_checkpoint_topic(i)
                                  for i in range(config.key_shards)], 1, configs=TOPIC_CONFIGS)


def _check_partitions(kafka: KafkaSettings, topic: str, expected: int) -> None:
    """A parts topic left by another --key-shards would split the keys another way."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**kafka.client_kwargs())
    try:
        deadline = time.monotonic() + 10  # a topic just created may not be known everywhere
        while not (found := consumer.partitions_for_topic(topic) or set()) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        consumer.close()
    if len(found) != expected:
        raise ValueError(
            f"{topic} has {len(found)} partitions, but --key-shards is {expected}: every "
            "worker of a lane needs the same --key-shards; to change it, delete the lane's "
            "parts topic and checkpoints (detection starts afresh)")


async def run_worker(config: WorkerConfig, stop: asyncio.Event | None = None) -> int:
    """Run both stages until ``stop`` is set (or SIGTERM/SIGINT); return an exit code."""
    from aiokafka import AIOKafkaProducer

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    await asyncio.to_thread(ensure_worker_topics, config)
    metrics = WorkerMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_host, config.metrics_port)
    producer = AIOKafkaProducer(
        acks="all", enable_idempotence=True, linger_ms=5, max_request_size=SEQUENCED_MAX_BYTES,
        client_id=f"abuse-pipeline-{os.getpid()}", **config.kafka.aiokafka_kwargs())
    await producer.start()
    from pipeline.shard_stage import ShardStage

    stages = {name: stage(config, producer, metrics) for name, stage in
              (("ingest", IngestStage), ("detect", DetectStage), ("shard", ShardStage))
              if name in config.stages}
    for stage in stages.values():
        await stage.start()
    log.info("worker started", extra={
        "stages": sorted(stages),
        "bootstrap": config.kafka.bootstrap, "group": config.kafka.group_id,
        "detect_group": config.detect_group, "detectors": config.lane or "all",
        "key_shards": config.key_shards,
        "sequenced_topic": config.sequenced_topic, "clickhouse": config.clickhouse,
        "metrics": f"http://{config.metrics_host}:{config.metrics_port}/metrics"
        if config.metrics_port else None})

    async def loop_until_stopped(step) -> None:
        while not stop.is_set():
            await step()

    tasks = [asyncio.create_task(loop_until_stopped(stage.step), name=name)
             for name, stage in stages.items()]
    tasks.append(asyncio.create_task(_report_status(metrics, stop), name="status"))
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stopped and t.exception() is not None]
        if failed:
            error = failed[0].exception()
            log.error("worker stage failed", exc_info=error,
                      extra={"stage": failed[0].get_name(), "error": repr(error)})
            stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        return 1 if failed else 0
    finally:
        for stage in reversed(stages.values()):  # detection first: its final flush and
            with contextlib.suppress(Exception):  # checkpoint use the producer
                await stage.stop()
        await producer.stop()
        log.info("worker stopped")


async def _report_status(metrics: WorkerMetrics, stop: asyncio.Event,
                         every: float = 10.0) -> None:
    before, then = metrics.events_processed_value(), time.monotonic()
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every)
        now, processed = time.monotonic(), metrics.events_processed_value()
        log.info("status", extra={**metrics.summary(),
                                  "events_per_s": round((processed - before) / (now - then))})
        before, then = processed, now
