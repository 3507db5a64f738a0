"""``abuse-pipeline hook``: the restriction hook as a consumer of its own on ``abuse.flags``.

The worker's ``--hook`` calls the endpoint before each checkpoint: the strongest coupling (no
checkpoint passes a flag the endpoint did not take), but an endpoint that is down then stops
detection, and with it the flags analysts and dashboards read. This process decouples them,
as webhook deliveries are decoupled in Stripe or Sift: it reads the flags topic in its own
consumer group (``GROUP.hook``), POSTs each batch of enforced flags at or above the severity
(:class:`~pipeline.sinks.RestrictionHookSink`: HMAC signature, 429/5xx retried), and commits
the batch's offsets only after the endpoint took it. An endpoint that still refuses is tried
again, with a growing pause (up to ``max_pause`` seconds), for as long as it takes: nothing is
skipped, detection goes on, and the lag shows on ``/metrics``. Delivery is at least once
(a restart re-sends the batch in flight); receivers drop repeats by ``flag_id``.

A message on the topic that is not a flag is logged with its position and counted, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from pipeline.kafka_settings import FLAGS_TOPIC, KafkaSettings
from pipeline.sinks import RestrictionHookSink, SinkError
from schemas.flags import decode_flag

__all__ = ["HookConfig", "HookMetrics", "run_hook"]

log = logging.getLogger("abuse_pipeline.hook")

BATCH_MESSAGES = 500  # flags per POST at most


@dataclass(frozen=True)
class HookConfig:
    kafka: KafkaSettings
    make_sink: Callable[[], RestrictionHookSink]
    start: str = "earliest"  # where a group without committed offsets begins
    max_pause: float = 60.0  # seconds between attempts on an endpoint that keeps refusing
    # an outage longer than this makes the group move on without us (see ``_commit``)
    max_poll_seconds: float = 300.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no endpoint

    @property
    def group(self) -> str:
        return f"{self.kafka.group_id}.hook"


class HookMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.delivered = Counter("abuse_hook_flags_delivered",
                                 "Flags the restriction hook endpoint took", registry=registry)
        self.failures = Counter("abuse_hook_delivery_failures",
                                "Attempts the endpoint refused (after retries)",
                                registry=registry)
        self.invalid = Counter("abuse_hook_invalid_messages",
                               "Messages on the flags topic that are not flags (logged)",
                               registry=registry)
        self.undelivered = Gauge("abuse_hook_undelivered_flags",
                                 "Flags of the batch in flight the endpoint has not taken yet",
                                 registry=registry)
        self.lag = Gauge("abuse_hook_lag_messages", "Flags topic messages not yet consumed",
                         registry=registry)


async def run_hook(config: HookConfig, stop: asyncio.Event | None = None,
                   metrics: HookMetrics | None = None) -> int:
    """Deliver flags until ``stop`` (or SIGTERM/SIGINT); return the exit code."""
    from aiokafka import AIOKafkaConsumer

    stop = stop or _stop_on_signals()
    metrics = metrics or HookMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_host,
                          registry=metrics.registry)
    sink = config.make_sink()
    sink.setup()
    consumer = AIOKafkaConsumer(
        config.kafka.topic(FLAGS_TOPIC), group_id=config.group, enable_auto_commit=False,
        auto_offset_reset=config.start, max_poll_records=BATCH_MESSAGES,
        max_poll_interval_ms=int(config.max_poll_seconds * 1000),
        **config.kafka.aiokafka_kwargs())
    await consumer.start()
    log.info("restriction hook delivering", extra={"topic": config.kafka.topic(FLAGS_TOPIC),
                                                  "group": config.group, "url": sink.url})
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH_MESSAGES)
            flags = [flag for tp, records in batches.items() for record in records
                     if (flag := _flag(tp, record, metrics)) is not None and sink.acts_on(flag)]
            if flags and not await _deliver(sink, flags, config.max_pause, stop, metrics):
                break  # stopping with the batch undelivered: not committed, sent on restart
            if batches:
                await _commit(consumer)
            await _record_lag(consumer, metrics)
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
        sink.close()
    return 0


async def _commit(consumer: Any) -> None:
    """Commit what was consumed. Should the group have given our partitions to another hook
    process meanwhile (an outage longer than ``max_poll_seconds``), the commit fails and that
    process sends the flags since the last commit again: the receiver drops the repeats by
    ``flag_id``."""
    from aiokafka.errors import CommitFailedError

    try:
        await consumer.commit()
    except CommitFailedError as error:
        log.warning("offsets not committed; the flags since the last commit will be sent "
                    "again", extra={"reason": str(error)})


def _flag(tp: Any, record: Any, metrics: HookMetrics):
    try:
        return decode_flag(record.value)
    except (msgspec.ValidationError, msgspec.DecodeError, TypeError) as error:
        metrics.invalid.inc()
        log.error("not a flag: not sent to the hook", extra={
            "source": f"{tp.topic}:{tp.partition}:{record.offset}", "reason": str(error)})
        return None


async def _deliver(sink: RestrictionHookSink, flags: list, max_pause: float,
                   stop: asyncio.Event, metrics: HookMetrics) -> bool:
    """POST ``flags`` until the endpoint takes them (True) or we are told to stop (False)."""
    pause = min(1.0, max_pause)
    metrics.undelivered.set(len(flags))
    while True:
        try:
            await asyncio.to_thread(sink.write, flags)  # blocking HTTP, off the event loop
        except SinkError as error:
            metrics.failures.inc()
            log.error("restriction hook refused; trying again", extra={
                "reason": str(error), "retry_in_seconds": pause})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if stop.is_set():
                return False
            pause = min(max_pause, pause * 2)
            continue
        metrics.delivered.inc(len(flags))
        metrics.undelivered.set(0)
        return True


async def _record_lag(consumer: Any, metrics: HookMetrics) -> None:
    lag = 0
    for tp in consumer.assignment():
        end = consumer.highwater(tp)  # known once a fetch for tp returned
        if end is not None:
            lag += max(0, end - await consumer.position(tp))
    metrics.lag.set(lag)


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop
