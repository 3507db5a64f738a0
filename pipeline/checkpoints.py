"""Where the detect stage keeps its checkpoints: a compacted Kafka topic, or a directory.

In Kafka (the default) any worker of the group can take detection over from any other, on any
machine: the checkpoint travels with the topics, as Kafka Streams' changelogs do. A directory
needs every worker that may take over to share it (one machine, or a shared volume).

A checkpoint can be larger than a Kafka message, so :class:`KafkaCheckpoints` writes it in
chunks, then a *manifest* naming the chunks' offsets and the whole blob's SHA-256. Chunks go to
two slots in turn (keys ``0:i`` and ``1:i``): compaction only ever drops the chunks of the slot
being rewritten, never those the latest manifest names, so a crash mid-write leaves the previous
checkpoint whole. Loading reads the manifest from the topic's tail and the chunks by offset.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any, Protocol

import orjson

from pipeline.kafka_settings import KafkaSettings

__all__ = [
    "TOPIC_CONFIGS",
    "CheckpointError",
    "CheckpointStore",
    "FileCheckpoints",
    "KafkaCheckpoints",
]

CHUNK_BYTES = 4 * 1024 * 1024
MANIFEST_KEY = b"manifest"
# compacted: the topic keeps about the last two checkpoints, whatever ran before, once its
# segments roll (at 64 MB or 10 min: the one being written is never compacted)
TOPIC_CONFIGS = {"cleanup.policy": "compact", "max.message.bytes": str(2 * CHUNK_BYTES),
                 "segment.bytes": str(64 * 1024 * 1024), "segment.ms": "600000",
                 "min.cleanable.dirty.ratio": "0.2"}
_PATIENCE = 10  # empty fetches of a second each before a read counts as stuck
# records read back from the end at first when looking for the latest manifest: it is the
# last record but for the chunks of a save cut short, and every chunk read costs up to 4 MB
_TAIL = 4


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be read back whole."""


class CheckpointStore(Protocol):
    where: str  # for logs and errors

    async def load(self) -> bytes | None: ...
    async def save(self, blob: bytes) -> None: ...


class FileCheckpoints:
    """One file, replaced atomically: a crash leaves the old checkpoint or the new."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    async def load(self) -> bytes | None:
        return self.path.read_bytes() if self.path.exists() else None

    async def save(self, blob: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(f".tmp{os.getpid()}")
        with open(temporary, "wb") as file:
            file.write(blob)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)


class KafkaCheckpoints:
    """Chunks and a manifest on a one-partition compacted topic (see the module docstring).

    ``producer`` is a started ``AIOKafkaProducer`` whose ``max_request_size`` admits a chunk.
    """

    def __init__(self, settings: KafkaSettings, topic: str, producer: Any, *,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        self.settings = settings
        self.topic = topic
        self.producer = producer
        self.chunk_bytes = chunk_bytes
        self.where = f"Kafka topic {topic}"
        self.slot = 1  # the slot the latest manifest names; the next save writes the other

    async def save(self, blob: bytes) -> None:
        slot = 1 - self.slot
        chunks = [blob[i:i + self.chunk_bytes] for i in range(0, len(blob), self.chunk_bytes)]
        sends = [await self.producer.send(self.topic, chunk, key=f"{slot}:{i}".encode(),
                                          partition=0) for i, chunk in enumerate(chunks or [b""])]
        written = await asyncio.gather(*sends)
        manifest = {"slot": slot, "offsets": [meta.offset for meta in written],
                    "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}
        await self.producer.send_and_wait(self.topic, orjson.dumps(manifest), key=MANIFEST_KEY,
                                          partition=0)
        self.slot = slot

    async def load(self) -> bytes | None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        partition = TopicPartition(self.topic, 0)
        consumer = AIOKafkaConsumer(
            enable_auto_commit=False, max_partition_fetch_bytes=2 * self.chunk_bytes + 4096,
            fetch_max_bytes=4 * self.chunk_bytes, **self.settings.aiokafka_kwargs())
        await consumer.start()
        try:
            consumer.assign([partition])
            begin = (await consumer.beginning_offsets([partition]))[partition]
            end = (await consumer.end_offsets([partition]))[partition]
            manifest = await _latest_manifest(consumer, partition, begin, end)
            if manifest is None:
                return None
            blob = b"".join([await _record_at(consumer, partition, offset, end)
                             for offset in manifest["offsets"]])
        finally:
            await consumer.stop()
        if len(blob) != manifest["bytes"] or \
                hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
            raise CheckpointError(
                f"the checkpoint in {self.where} does not match its manifest ({len(blob)} bytes "
                f"read, {manifest['bytes']} expected, or another SHA-256): it cannot be restored")
        self.slot = manifest["slot"]
        return blob


async def _read(consumer: Any, partition: Any, start: int, end: int):
    """The records of ``partition`` from ``start`` up to ``end`` (gaps left by compaction)."""
    consumer.seek(partition, start)
    position, empty = start, 0
    while position < end:
        batch = await consumer.getmany(partition, timeout_ms=1000)
        records = batch.get(partition, [])
        if not records:
            position = await consumer.position(partition)  # past a compacted gap, or stuck
            empty += 1
            if position < end and empty >= _PATIENCE:
                raise CheckpointError(f"cannot read {partition.topic} at offset {position} "
                                      f"(the topic ends at {end})")
            continue
        empty = 0
        for record in records:
            if record.offset >= end:
                return
            yield record
        position = records[-1].offset + 1


async def _latest_manifest(consumer: Any, partition: Any, begin: int,
                           end: int) -> dict[str, Any] | None:
    """The last manifest written: read back from the end, further each time it is not found."""
    stop, span = end, _TAIL
    while stop > begin:
        start = max(begin, stop - span)
        manifest = None
        async for record in _read(consumer, partition, start, stop):
            if record.key == MANIFEST_KEY:
                manifest = orjson.loads(record.value)
        if manifest is not None:
            return manifest
        stop, span = start, span * 4
    return None


async def _record_at(consumer: Any, partition: Any, offset: int, end: int) -> bytes:
    async for record in _read(consumer, partition, offset, end):
        if record.offset == offset:
            return record.value
        break
    raise CheckpointError(f"checkpoint chunk at offset {offset} of {partition.topic} is gone")
