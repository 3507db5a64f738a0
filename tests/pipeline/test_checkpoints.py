"""Checkpoint stores: a file, and chunks plus a manifest on a compacted Kafka topic."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import orjson
import pytest

from pipeline.checkpoints import TOPIC_CONFIGS, CheckpointError, FileCheckpoints, KafkaCheckpoints
from pipeline.kafka_settings import KafkaSettings
from pipeline.produce import ensure_topics


def test_a_file_checkpoint_reads_back_what_was_saved_and_none_before(tmp_path):
    store = FileCheckpoints(tmp_path / "state" / "lane.checkpoint")
    assert asyncio.run(store.load()) is None
    asyncio.run(store.save(b"first"))
    asyncio.run(store.save(b"second"))
    assert asyncio.run(store.load()) == b"second"
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["lane.checkpoint"]


async def _with_store(bootstrap: str, action, *, chunk_bytes: int = 1000):
    from aiokafka import AIOKafkaProducer

    settings = KafkaSettings(bootstrap=bootstrap)
    topic = f"ck-{uuid.uuid4().hex[:8]}.checkpoints"
    await asyncio.to_thread(ensure_topics, settings, [topic], 1, TOPIC_CONFIGS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                enable_idempotence=True)
    await producer.start()
    try:
        def store() -> KafkaCheckpoints:  # a fresh one: another worker taking over
            return KafkaCheckpoints(settings, topic, producer, chunk_bytes=chunk_bytes)
        return await action(store, producer, topic)
    finally:
        await producer.stop()


@pytest.mark.kafka
def test_a_kafka_checkpoint_in_chunks_reads_back_the_latest_from_another_store(kafka_bootstrap):
    blobs = [bytes(range(256)) * 9, b"short", bytes(reversed(range(256))) * 20]  # 3, 1, 6 chunks

    async def action(store, producer, topic):
        assert await store().load() is None  # nothing written yet
        writer = store()
        loaded = []
        for blob in blobs:
            await writer.save(blob)
            loaded.append(await store().load())
        return loaded

    assert asyncio.run(_with_store(kafka_bootstrap, action)) == blobs


@pytest.mark.kafka
def test_a_crash_in_the_middle_of_a_kafka_checkpoint_leaves_the_previous_one_whole(
        kafka_bootstrap):
    async def action(store, producer, topic):
        writer = store()
        await writer.save(b"a" * 2500)
        await writer.save(b"b" * 2500)  # the other slot
        # the next, larger save rewrites the first slot's chunks, then dies before its
        # manifest: more chunks than the first look back from the end reads
        for i in range(6):
            await producer.send_and_wait(topic, b"c" * 1000, key=f"0:{i}".encode(),
                                         partition=0)
        return await store().load()

    assert asyncio.run(_with_store(kafka_bootstrap, action)) == b"b" * 2500


@pytest.mark.kafka
def test_a_kafka_checkpoint_that_does_not_match_its_manifest_is_refused(kafka_bootstrap):
    async def action(store, producer, topic):
        await store().save(b"x" * 1500)
        # a manifest whose chunks are not what it says (another writer's, a broken copy)
        manifest = {"slot": 1, "offsets": [0, 1], "bytes": 1500,
                    "sha256": hashlib.sha256(b"y" * 1500).hexdigest()}
        await producer.send_and_wait(topic, orjson.dumps(manifest), key=b"manifest",
                                     partition=0)
        with pytest.raises(CheckpointError, match="does not match its manifest"):
            await store().load()

    asyncio.run(_with_store(kafka_bootstrap, action))
