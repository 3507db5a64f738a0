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

An endpoint that refuses *a request* for good (400, 404, 409, 410, 413, 415, 422: the flags,
not the endpoint) must not hold every later flag back. The batch is then sent one flag at a
time, and the flags it takes are delivered; a flag it still refuses on its own is tried again
with the same pauses for ``give_up_after`` seconds (an hour by default), and then written,
unchanged, to ``abuse.hook.refused`` (headers: ``status``, ``reason``, ``url``), logged and
counted, and the hook goes on. Anything else (no answer, 401/403, 408, 429, 5xx) is the
endpoint's trouble: it is waited out however long it lasts, and nothing is given up. The
refused flags are flags as on ``abuse.flags``: ``--from-topic abuse.hook.refused`` (in a group
of its own) sends them again once the endpoint is fixed; reading that topic, the hook never
gives up.

A message on the topic that is not a flag is logged with its position and counted, not sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from pipeline.kafka_settings import FLAGS_TOPIC, KafkaSettings
from pipeline.sinks import RestrictionHookSink, SinkError
from schemas.flags import Flag, decode_flag, encode_flag

__all__ = ["REFUSED_TOPIC", "HookConfig", "HookMetrics", "refuses_the_request", "run_hook"]

log = logging.getLogger("abuse_pipeline.hook")

BATCH_MESSAGES = 500  # flags per POST at most
REFUSED_TOPIC = "abuse.hook.refused"  # flags the endpoint refused for good
# Statuses that refuse the request itself: the same flags would be refused again. 401/403
# (credentials), 408/429 and 5xx are the endpoint's state, and pass.
REQUEST_REFUSED = frozenset({400, 404, 409, 410, 413, 415, 422})


def refuses_the_request(error: SinkError) -> bool:
    """Whether the endpoint refused these flags (not: was down, throttled or misconfigured).

    >>> [refuses_the_request(SinkError("x", status=s)) for s in (400, 422, 401, 503, None)]
    [True, True, False, False, False]
    """
    return error.status in REQUEST_REFUSED


@dataclass(frozen=True)
class HookConfig:
    kafka: KafkaSettings
    make_sink: Callable[[], RestrictionHookSink]
    start: str = "earliest"  # where a group without committed offsets begins
    max_pause: float = 60.0  # seconds between attempts on an endpoint that keeps refusing
    # how long a flag the endpoint refuses on its own is tried before it goes to REFUSED_TOPIC
    give_up_after: float = 3600.0
    from_topic: str = FLAGS_TOPIC  # REFUSED_TOPIC sends the refused flags again
    # an outage longer than this makes the group move on without us (see ``_commit``)
    max_poll_seconds: float = 300.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0  # 0: no endpoint

    def __post_init__(self) -> None:
        if self.give_up_after < 0:
            raise ValueError(f"--give-up-after must be >= 0 seconds, got {self.give_up_after}")
        if self.from_topic not in (FLAGS_TOPIC, REFUSED_TOPIC):
            raise ValueError(f"the hook delivers {FLAGS_TOPIC} or {REFUSED_TOPIC}, "
                             f"not {self.from_topic!r}")

    @property
    def group(self) -> str:
        return f"{self.kafka.group_id}.hook"

    @property
    def gives_up(self) -> bool:
        """Re-sending the refused flags, the hook never refuses them again."""
        return self.from_topic != REFUSED_TOPIC


class HookMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.delivered = Counter("abuse_hook_flags_delivered",
                                 "Flags the restriction hook endpoint took", registry=registry)
        self.failures = Counter("abuse_hook_delivery_failures",
                                "Attempts the endpoint refused (after retries)",
                                registry=registry)
        self.refused = Counter("abuse_hook_flags_refused",
                               f"Flags the endpoint refused for good, written to {REFUSED_TOPIC}",
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
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from pipeline.produce import ensure_topics

    stop = stop or _stop_on_signals()
    metrics = metrics or HookMetrics()
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_host,
                          registry=metrics.registry)
    kafka = config.kafka
    if config.gives_up:
        await asyncio.to_thread(ensure_topics, kafka, [kafka.topic(REFUSED_TOPIC)], 1)
    sink = config.make_sink()
    sink.setup()
    consumer = AIOKafkaConsumer(
        kafka.topic(config.from_topic), group_id=config.group, enable_auto_commit=False,
        auto_offset_reset=config.start, max_poll_records=BATCH_MESSAGES,
        max_poll_interval_ms=int(config.max_poll_seconds * 1000), **kafka.aiokafka_kwargs())
    producer = AIOKafkaProducer(acks="all", **kafka.aiokafka_kwargs())
    await producer.start()
    await consumer.start()
    delivery = _Delivery(config, sink, producer, stop, metrics)
    log.info("restriction hook delivering", extra={"topic": kafka.topic(config.from_topic),
                                                  "group": config.group, "url": sink.url})
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=500, max_records=BATCH_MESSAGES)
            flags = [flag for tp, records in batches.items() for record in records
                     if (flag := _flag(tp, record, metrics)) is not None and sink.acts_on(flag)]
            if flags and not await delivery.deliver(flags):
                break  # stopping with the batch undelivered: not committed, sent on restart
            if batches:
                await _commit(consumer)
            await _record_lag(consumer, metrics)
    finally:
        for client in (consumer, producer):
            with contextlib.suppress(Exception):
                await client.stop()
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


class _Delivery:
    """POSTs batches until the endpoint takes them, or gives up on the flags it refuses."""

    def __init__(self, config: HookConfig, sink: RestrictionHookSink, producer: Any,
                 stop: asyncio.Event, metrics: HookMetrics) -> None:
        self.config, self.sink, self.producer = config, sink, producer
        self.stop, self.metrics = stop, metrics

    async def deliver(self, flags: list[Flag]) -> bool:
        """Until every flag is taken or given up on (True), or we are told to stop (False)."""
        pending, pause, refused_since = flags, min(1.0, self.config.max_pause), None
        self.metrics.undelivered.set(len(pending))
        while (error := await self._post(pending)) is not None:
            if refuses_the_request(error) and len(pending) > 1:
                pending, error = await self._one_by_one(pending)
                if error is None:
                    break
            self.metrics.undelivered.set(len(pending))
            if refuses_the_request(error) and self.config.gives_up:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since >= self.config.give_up_after:
                    await self._give_up(pending, error)
                    break
            else:
                refused_since = None  # the endpoint's trouble: waited out, never given up
            log.error("restriction hook refused; trying again", extra={
                "reason": str(error), "retry_in_seconds": pause, "flags": len(pending)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), pause)
            if self.stop.is_set():
                return False
            pause = min(self.config.max_pause, pause * 2)
        self.metrics.undelivered.set(0)
        return True

    async def _post(self, flags: list[Flag]) -> SinkError | None:
        try:
            await asyncio.to_thread(self.sink.write, flags)  # blocking HTTP, off the loop
        except SinkError as error:
            self.metrics.failures.inc()
            return error
        self.metrics.delivered.inc(len(flags))
        return None

    async def _one_by_one(self, flags: list[Flag]) -> tuple[list[Flag], SinkError | None]:
        """Send each flag alone: the ones refused (and any not tried, should the endpoint
        itself fail meanwhile) are left, with the last refusal."""
        left: list[Flag] = []
        last = None
        for n, flag in enumerate(flags):
            if (error := await self._post([flag])) is None:
                continue
            left.append(flag)
            last = error
            if not refuses_the_request(error):
                return left + flags[n + 1:], error
        return left, last

    async def _give_up(self, flags: list[Flag], error: SinkError) -> None:
        topic = self.config.kafka.topic(REFUSED_TOPIC)
        headers = [("status", str(error.status).encode()),
                   ("reason", str(error).encode()[:1000]), ("url", self.sink.url.encode())]
        sent = [await self.producer.send(topic, encode_flag(flag),
                                         key=flag.account_id.encode(), headers=headers)
                for flag in flags]
        await asyncio.gather(*sent)  # on the topic before the batch is committed
        self.metrics.refused.inc(len(flags))
        log.error("restriction hook refused these flags for good; written to the refused "
                  "topic", extra={"topic": topic, "flag_ids": [f.flag_id for f in flags],
                                  "status": error.status, "reason": str(error)})


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
