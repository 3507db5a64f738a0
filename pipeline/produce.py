"""``abuse-pipeline produce``: publish a file of events to their ``events.<type>`` topics.

The message key is the account id (so one account's events stay in order on one partition) and
the value is the line exactly as read. Lines that break the contract are reported with their
line number and reason and not sent.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from pipeline.kafka_settings import KafkaSettings
from pipeline.sources import open_input, read_lines
from schemas.events import decode_event

__all__ = ["ProduceSummary", "ensure_topics", "produce_file"]


@dataclass
class ProduceSummary:
    read: int = 0
    sent: int = 0
    invalid: int = 0
    per_topic: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def render(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        topics = ", ".join(f"{t}={n}" for t, n in sorted(self.per_topic.items()))
        return (f"read {self.read} events: {self.sent} sent, {self.invalid} invalid (not sent) "
                f"in {self.seconds:.1f} s ({rate:,.0f}/s); {topics}")


def ensure_topics(settings: KafkaSettings, names: list[str], partitions: int,
                  configs: dict[str, str] | None = None) -> list[str]:
    """Create the topics that do not exist yet; return the ones created."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    try:
        admin = KafkaAdminClient(**settings.client_kwargs())
    except KafkaError as error:
        raise ValueError(f"cannot reach Kafka at {settings.bootstrap}: {error}") from error
    try:
        missing = [name for name in names if name not in set(admin.list_topics())]
        for name in missing:
            try:
                admin.create_topics([NewTopic(name, partitions, settings.replication_factor,
                                              topic_configs=configs or {})])
            except TopicAlreadyExistsError:
                pass  # another process made it
            except KafkaError as error:  # the broker refused (not a connection problem)
                raise ValueError(
                    f"cannot create topic {name} ({partitions} partitions, replication factor "
                    f"{settings.replication_factor}): {_broker_message(error)}") from error
        return missing
    finally:
        admin.close()


def produce_file(path: str, settings: KafkaSettings, *, partitions: int = 6,
                 progress: bool | None = None, report=None) -> ProduceSummary:
    """Publish a file's valid events; create missing topics with ``partitions`` partitions."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    report = report or sys.stderr  # looked up now: stderr may have been replaced
    summary = ProduceSummary()
    started = time.perf_counter()
    stream = open_input(path)
    ensure_topics(settings, settings.event_topics(), partitions)
    lines = read_lines(stream, "stdin" if path == "-" else path)
    if progress if progress is not None else sys.stderr.isatty():
        from tqdm import tqdm

        lines = tqdm(lines, desc="produce", unit=" events", unit_scale=True, file=sys.stderr)
    try:
        producer = KafkaProducer(linger_ms=20, batch_size=512 * 1024, acks="all",
                                 **settings.client_kwargs())
    except KafkaError as error:
        raise ValueError(f"cannot reach Kafka at {settings.bootstrap}: {error}") from error
    try:
        for raw, where in lines:
            if not raw.strip():
                continue
            summary.read += 1
            event, reason = decode_event(raw)
            if event is None:
                summary.invalid += 1
                print(f"{where}: not sent: {reason}", file=report)
                continue
            topic = settings.topic(f"events.{event.kind}")
            producer.send(topic, key=event.account_id.encode(), value=raw)
            summary.per_topic[topic] += 1
            summary.sent += 1
        producer.flush()
    finally:
        producer.close()
        if path != "-":
            stream.close()
    summary.seconds = time.perf_counter() - started
    return summary


def _broker_message(error: Exception) -> str:
    """The broker's own words (``error_message='...'``) when the error carries them."""
    found = re.search(r"error_message='([^']*)'", str(error))
    return found.group(1) if found else str(error)
