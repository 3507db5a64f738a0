"""The worker's third stage, with ``--key-shards N``: one detection lane's keys split over N
shards (:mod:`pipeline.keyshards`), which the worker group shares out as it shares partitions.

The shards are the N partitions of the lane's *parts* topic (``GROUP.detect[.NAMES].parts``).
Every worker running this stage joins the consumer group ``GROUP.shards[.NAMES]`` on that
topic, without reading it: the partitions the group gives a worker are the shards it runs, so
shards spread over the workers and move when one dies or joins, as Kafka Streams' tasks do.

Running shard ``i`` (:class:`ShardRunner`): restore its checkpoint (state and sequenced
offset), read the sequenced topic from there in the order the log decides
(:class:`~pipeline.sequencing.DetectionStage`), score and learn the keys it owns, and send
what it found, batch by batch, to partition ``i`` of the parts topic, where the lane's
detection (the combiner) takes it. Its checkpoints are written only after the parts they cover
are on the topic; after a crash the shard sends the parts since its checkpoint again, and the
combiner drops what it already has.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from pipeline.keyshards import PartsBatch, encode_batch
from pipeline.sequencing import DetectionStage, decode_chunk
from pipeline.worker import SEQUENCED_MAX_BYTES, checkpoint_interval

if TYPE_CHECKING:
    from pipeline.metrics import WorkerMetrics
    from pipeline.worker import WorkerConfig

__all__ = ["ShardRunner", "ShardStage"]

log = logging.getLogger("abuse_pipeline.worker")

EVENTS_PER_STEP = 10_000  # events a shard processes before it sends what it found


class ShardRunner:
    """Shard ``index`` of the lane, while this worker owns it."""

    def __init__(self, config: WorkerConfig, index: int, producer: Any,
                 metrics: WorkerMetrics) -> None:
        self.config, self.index = config, index
        self.producer, self.metrics = producer, metrics
        self.checkpoints = config.shard_checkpoint_store(index, producer)
        self.fingerprint = f"{config.fingerprint}.shard{index}"
        self.stage: DetectionStage | None = None
        self.consumer = None
        self.task: asyncio.Task | None = None
        self.stopping = False
        self.sent_through = 0  # the last seq a batch on the topic covers
        self.pending_sends: list[Any] = []
        self.last_checkpoint = time.monotonic()
        self.checkpoint_took = 0.0  # s: snapshots of a large state are taken less often

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        config = self.config
        stage = DetectionStage(config.shard_engine(self.index), lateness=config.lateness,
                               idle_after=config.idle_flush)
        tp = TopicPartition(config.sequenced_topic, 0)
        self.consumer = consumer = AIOKafkaConsumer(
            group_id=config.shard_commit_group(self.index), enable_auto_commit=False,
            max_partition_fetch_bytes=SEQUENCED_MAX_BYTES * 2,
            fetch_max_bytes=SEQUENCED_MAX_BYTES * 4, fetch_max_wait_ms=100,
            client_id=f"abuse-pipeline-shard{self.index}-{os.getpid()}",
            **config.kafka.aiokafka_kwargs())
        await consumer.start()
        consumer.assign([tp])
        start = (await consumer.beginning_offsets([tp]))[tp]
        blob = await self.checkpoints.load()
        if blob is not None:
            stage.restore(blob, self.fingerprint)
            if stage.next_offset < start:
                raise RuntimeError(
                    f"key shard {self.index}'s checkpoint resumes at offset {stage.next_offset}"
                    f", but {tp.topic} starts at offset {start}: the events between were "
                    "deleted; the shard cannot catch up")
        else:
            stage.next_offset = start  # where the lane's detection starts afresh too
        self.sent_through = stage.released
        consumer.seek(tp, stage.next_offset)
        self.stage, self.tp = stage, tp
        self.metrics.key_shards.inc()
        log.info("key shard started", extra={
            "shard": self.index, "of": config.key_shards, "offset": stage.next_offset,
            "resumed": blob is not None})
        self.task = asyncio.create_task(self._run(), name=f"shard-{self.index}")

    async def _run(self) -> None:
        # stopped between steps, never inside one: parts computed must reach the topic
        # before a checkpoint passes them
        while not self.stopping:
            await self.step()

    async def step(self) -> None:
        stage = self.stage
        batch = await self.consumer.getmany(self.tp, timeout_ms=200, max_records=50)
        for record in batch.get(self.tp, []):
            try:
                chunk = decode_chunk(record.value)
            except Exception:  # undecodable: the combiner dead-letters it, and skips it too
                chunk = None
            if chunk is not None:
                stage.feed(chunk)  # anything wrong here stops the shard, and says why
            stage.next_offset = record.offset + 1
        while stage.ready:
            since = stage.released
            parts = [part for part, _ in stage.advance(limit=EVENTS_PER_STEP)]
            self.metrics.shard_events.inc(stage.released - since)
            await self._send(parts)
            await asyncio.sleep(0)  # the rest of the worker goes on meanwhile
        if time.monotonic() - self.last_checkpoint >= checkpoint_interval(
                self.config.checkpoint_seconds, self.checkpoint_took):
            await self.checkpoint()

    async def _send(self, parts: list) -> None:
        stage = self.stage
        if stage.released == self.sent_through:
            return
        batch = PartsBatch(shard=self.index, count=self.config.key_shards,
                           fingerprint=self.config.fingerprint, since=self.sent_through,
                           through=stage.released, parts=parts)
        self.pending_sends.append(await self.producer.send(
            self.config.parts_topic, encode_batch(batch), partition=self.index))
        self.sent_through = stage.released

    async def checkpoint(self) -> None:
        """Parts on the topic first, then the checkpoint that covers them; then the offset it
        resumes from, committed, so that the sequenced topic is trimmed only up to there."""
        sends, self.pending_sends = self.pending_sends, []
        await asyncio.gather(*sends)
        started = time.monotonic()
        await self.checkpoints.save(self.stage.snapshot(self.fingerprint))
        self.last_checkpoint = time.monotonic()
        self.checkpoint_took = self.last_checkpoint - started
        await self.consumer.commit({self.tp: self.stage.next_offset})

    async def stop(self) -> None:
        """Hand the shard over: finish the step under way, checkpoint what was processed (not
        after a failure: the next owner resumes from the last good checkpoint)."""
        self.stopping = True
        if self.task is not None:
            await asyncio.wait([self.task])
        failed = self.failure()
        try:
            if failed is not None:
                log.error("key shard failed", extra={"shard": self.index,
                                                     "error": repr(failed)})
            elif self.stage is not None:
                await self.checkpoint()
        finally:
            if self.consumer is not None:
                await self.consumer.stop()
            self.metrics.key_shards.dec()
            log.info("key shard handed over", extra={"shard": self.index})

    def failure(self) -> BaseException | None:
        task = self.task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()


class ShardStage:
    """Run the key shards the group gives this worker (see the module docstring)."""

    def __init__(self, config: WorkerConfig, producer: Any, metrics: WorkerMetrics) -> None:
        self.config, self.producer, self.metrics = config, producer, metrics
        self.runners: dict[int, ShardRunner] = {}
        self.consumer = None
        self.fatal: BaseException | None = None  # a shard that could not start

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        stage = self

        class Handover(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked) -> None:
                for tp in revoked:
                    if (runner := stage.runners.pop(tp.partition, None)) is not None:
                        await runner.stop()

            async def on_partitions_assigned(self, assigned) -> None:
                stage.consumer.pause(*assigned)  # the lease is all we want of the topic
                for tp in sorted(assigned):
                    runner = ShardRunner(stage.config, tp.partition, stage.producer,
                                         stage.metrics)
                    try:
                        await runner.start()
                    except Exception as error:  # holding a lease it cannot run would stall
                        stage.fatal = error     # detection: stop, and the group moves it
                        return
                    stage.runners[tp.partition] = runner

        self.consumer = AIOKafkaConsumer(
            group_id=self.config.shard_group, enable_auto_commit=False,
            session_timeout_ms=self.config.session_timeout_ms,
            metadata_max_age_ms=10_000,
            client_id=f"abuse-pipeline-shards-{os.getpid()}", **self.config.kafka.aiokafka_kwargs())
        self.consumer.subscribe([self.config.parts_topic], listener=Handover())
        await self.consumer.start()

    async def step(self) -> int:
        if self.fatal is not None:
            raise RuntimeError(f"a key shard could not start: {self.fatal}") from self.fatal
        for runner in self.runners.values():
            if (error := runner.failure()) is not None:
                raise RuntimeError(f"key shard {runner.index} failed: {error!r}") from error
        await self.consumer.getmany(timeout_ms=200)  # group membership; nothing to read
        return 0

    async def stop(self) -> None:
        try:
            for index in sorted(self.runners):
                await self.runners.pop(index).stop()
        finally:
            if self.consumer is not None:
                await self.consumer.stop()
