"""The worker's Prometheus metrics (text format on ``/metrics``).

Events per second is ``rate(abuse_events_processed_total[1m])``; lag is per stage in messages.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["WorkerMetrics"]

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900)


class WorkerMetrics:
    """One registry per worker (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.ingest_messages = Counter(
            "abuse_ingest_messages", "Messages read from the events.* topics", registry=registry)
        self.dead_letters = Counter(
            "abuse_dead_letters", "Invalid messages sent to the dead letters", registry=registry)
        self.events_processed = Counter(
            "abuse_events_processed", "Events released to the detection engine",
            registry=registry)
        self.flags = Counter("abuse_flags", "Flags emitted", ["detector", "severity", "mode"],
                             registry=registry)
        self.lag = Gauge("abuse_consumer_lag_messages", "Messages not yet consumed", ["stage"],
                         registry=registry)
        self.batch_seconds = Histogram("abuse_batch_seconds", "Time to process one batch",
                                       ["stage"], registry=registry)
        self.event_to_flag = Histogram(
            "abuse_event_to_flag_seconds",
            "From the triggering event's Kafka timestamp to its flag being emitted",
            buckets=LATENCY_BUCKETS, registry=registry)
        self.buffered = Gauge("abuse_reorder_buffered_events",
                              "Events held for the event-time watermark", registry=registry)
        self.watermark = Gauge("abuse_watermark_timestamp_seconds",
                               "Event time every source partition has passed", registry=registry)
        self.duplicates = Gauge("abuse_duplicate_events",
                                "Re-delivered events dropped (since detection began)",
                                registry=registry)
        self.source_restarts = Counter(
            "abuse_source_restarts",
            "Source partitions whose log restarted below what detection had accepted "
            "(topic deleted and re-created, or truncated): read afresh", registry=registry)
        self.late = Gauge("abuse_late_events",
                          "Events older than the watermark, processed at once",
                          registry=registry)
        self.detect_received = Gauge(
            "abuse_detect_received_events",
            "Valid events received by detection since it began (re-deliveries included)",
            registry=registry)
        self.detect_dead = Gauge(
            "abuse_detect_dead_letters", "Dead letters recorded by detection since it began",
            registry=registry)
        self.caught_up = Gauge(
            "abuse_caught_up",
            "1 when every source partition is read to its end and nothing is held",
            registry=registry)
        self.ingest_partitions = Gauge(
            "abuse_ingest_assigned_partitions", "events.* partitions this worker ingests",
            registry=registry)
        self.sink_retries = Counter(
            "abuse_sink_retries", "ClickHouse writes retried after a failure", registry=registry)
        self.detect_active = Gauge("abuse_detect_active",
                                   "1 on the worker that owns detection", registry=registry)
        self.key_shards = Gauge("abuse_key_shards", "Key shards this worker runs (--key-shards)",
                                registry=registry)
        self.shard_events = Counter("abuse_shard_events_processed",
                                    "Events this worker's key shards scored their keys of",
                                    registry=registry)
        self.waiting_for_shards = Gauge(
            "abuse_detect_waiting_for_shards",
            "Events ready for detection whose key shards have not reported yet",
            registry=registry)

    def serve(self, host: str, port: int) -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def events_processed_value(self) -> float:
        return self.events_processed._value.get()

    def summary(self) -> dict[str, Any]:
        """The figures the periodic status log line carries."""
        flags = sum(sample.value for metric in self.flags.collect()
                    for sample in metric.samples if sample.name.endswith("_total"))
        return {
            "ingested": int(self.ingest_messages._value.get()),
            "processed": int(self.events_processed_value()),
            "dead_letters": int(self.dead_letters._value.get()),
            "flags": int(flags),
            "buffered": int(self.buffered._value.get()),
            "detect_active": bool(self.detect_active._value.get()),
            "caught_up": bool(self.caught_up._value.get()),
            "key_shards": int(self.key_shards._value.get()),
            "waiting_for_shards": int(self.waiting_for_shards._value.get()),
        }
