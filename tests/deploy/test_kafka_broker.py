"""The local Apache Kafka broker (deploy/kafka.sh) really works: topics, keyed produce, groups."""

import time
import uuid
from collections import Counter, defaultdict

import pytest

pytestmark = pytest.mark.kafka


def test_100_keyed_messages_round_trip_through_a_6_partition_topic_and_a_group(
        kafka_bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    run = uuid.uuid4().hex[:8]
    topic, group = f"broker-test-{run}", f"broker-test-group-{run}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="broker-test")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
        (described,) = admin.describe_topics([topic])
        assert len(described["partitions"]) == 6

        keys = [f"acct{i % 20}" for i in range(100)]  # 20 keys, 5 messages each
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
        for i, key in enumerate(keys):
            producer.send(topic, key=key.encode(), value=str(i).encode())
        producer.flush(timeout=30)
        producer.close()

        consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        received = []
        deadline = time.monotonic() + 60
        while len(received) < 100 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                received.extend(batch)
        consumer.commit()
        committed = [consumer.committed(TopicPartition(topic, p)) for p in range(6)]
        consumer.close()

        assert len(received) == 100
        assert Counter(m.key.decode() for m in received) == Counter(keys)
        assert sorted(int(m.value) for m in received) == list(range(100))
        for m in received:
            assert keys[int(m.value)] == m.key.decode()
        partitions_of = defaultdict(set)
        for m in received:
            partitions_of[m.key].add(m.partition)
        assert all(len(p) == 1 for p in partitions_of.values())  # a key stays on one partition
        assert len({m.partition for m in received}) > 1  # and the keys spread over partitions
        assert sum(offset or 0 for offset in committed) == 100  # the group's offsets were stored
    finally:
        admin.delete_topics([topic])
        admin.close()
