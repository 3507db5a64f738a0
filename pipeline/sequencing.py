"""The streaming worker's two stages, pure (no I/O): ingest chunks, then sequence and detect.

Kafka partitions events by account, but detection links accounts across partitions (a device
shared by a trial ring, an IP stuffing many accounts). So the worker runs two stages:

1. **Ingest** (scales out with the consumer group over the ``events.*`` partitions): validates
   each message, sends invalid ones to the dead letters, and forwards the valid ones, unchanged,
   in one :class:`Chunk` per source partition and batch to the *sequenced* topic. Each chunk
   also carries its source partition's watermark: the largest event time forwarded so far and
   whether the partition was caught up (read to its end).
2. **Detect** (:class:`DetectionStage`, one owner of the sequenced topic at a time, fails over
   with the group): holds events in a :class:`~pipeline.reorder.ReorderBuffer` and releases
   them in ``(t, account, event_id)`` order behind the *low watermark over every source
   partition*, into the same :class:`~pipeline.engine.Engine` as offline replay. Because the
   release order depends only on the events, the flags (and their ids) are the ones replay
   gives for the same events, however they were partitioned, whichever worker ingested them,
   and whatever was re-delivered after a crash.

Re-deliveries are dropped by their position in the source, as a Kafka consumer does: each
chunk carries the source offset of every event and dead letter, and detection keeps, per
source partition, the highest offset it has accepted (checkpointed). Event ids cannot do this
alone: the engine remembers them for a day of event time, and a caught-up partition may be
re-sent after detection has moved further on than that. (The engine still drops events
repeated *in the data* by id, as replay does.)

Idle partitions (caught up, nothing new for a few seconds) do not hold the watermark back
(else an empty partition would stall everything); once every partition is idle the buffer is
flushed, as replay does at the end of its file. The seconds are the log's: each chunk carries
the clock of the ingest that cut it (``sent_at``; every partition reports at least once a
second), so that whatever reads the log decides the same order.

>>> from detectors import build
>>> from detectors.testing import make_event
>>> from pipeline.engine import Engine
>>> from schemas import encode_event
>>> engine = Engine(build(["login_frequency"]), clock=lambda: "2026-11-02T00:00:00.000Z")
>>> stage = DetectionStage(engine, lateness=60.0)
>>> events = [make_event("login", account_id="a1", t=10.0 * i, success=False, event_id=f"e{i}")
...           for i in range(12)]
>>> chunk = decode_chunk(encode_chunk(Chunk(source="events.login:0", max_t=110.0,
...     caught_up=False, expected=["events.login:0"],
...     events=[encode_event(e) for e in events], kafka_ts=[0] * 12, offsets=list(range(12)))))
>>> stage.feed(chunk)
>>> stage.feed(chunk)
>>> stage.redelivered  # re-sent: offsets 0-11 of events.login:0 were seen
12
>>> [f.account_id for f, _ in stage.advance()]  # released up to 110 - 60 s: 9 failures so far
[]
>>> stage.feed(Chunk(source="events.login:0", max_t=110.0, caught_up=True, sent_at=5.0))
>>> [f.reasons[0] for f, _ in stage.advance()]  # caught up and idle: the rest goes
['10 failed logins in 60 min (usual failure rate 5%)']
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec

from pipeline.engine import Engine, utc_now
from pipeline.reorder import ReorderBuffer
from schemas.events import Event, decode_event
from schemas.flags import DeadLetter, Flag

__all__ = [
    "CHECKPOINT_VERSION",
    "Chunk",
    "DetectionStage",
    "SourceWatermarks",
    "build_chunk",
    "decode_chunk",
    "encode_chunk",
    "source_name",
]

# 2: per-source offset high-water marks; 3: the decided order (``ready``) and the log's clock
CHECKPOINT_VERSION = 3
_RESTORABLE = {1, 2, CHECKPOINT_VERSION}  # older ones restore with what they have
CHUNK_BYTES = 512 * 1024  # a chunk message stays well under Kafka's 1 MB default


class Chunk(msgspec.Struct, kw_only=True, array_like=True):
    """One source partition's batch on the sequenced topic.

    On the wire ``events`` are the original JSON bodies (bytes); :func:`decode_chunk` turns
    them back into :class:`~schemas.events.Event` objects. The wire format grows by fields
    with defaults at the end: an older reader ignores them, and a chunk from an older writer
    has no offsets (it is not de-duplicated by offset).
    """

    source: str  # "topic:partition"
    max_t: float  # largest event time forwarded from this source so far
    caught_up: bool  # the source was read to its end when this chunk was cut
    expected: list[str] = []  # every source partition the ingest stage knows of
    events: list[Any] = []
    kafka_ts: list[int] = []  # Kafka timestamp (ms) of each event's message: for latency
    dead: list[DeadLetter] = []
    offsets: list[int] = []  # source offset of each event (empty: from an older ingest)
    dead_offsets: list[int] = []  # source offset of each dead letter
    end: int = -1  # the source partition's log-end offset when the chunk was cut (-1: unknown)
    # ingest's clock (epoch s) when the chunk was cut: detection's clock for idleness, read
    # from the log so that every reader of it decides alike (0: from an older ingest)
    sent_at: float = 0.0


class _Frame(Chunk, kw_only=True, array_like=True):
    events: list[bytes] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Frame)


def encode_chunk(chunk: Chunk) -> bytes:
    """msgpack framing around the events' original JSON bodies."""
    return _encoder.encode(chunk)


def decode_chunk(raw: bytes) -> Chunk:
    """Decode a sequenced message; an event that fails validation becomes a dead letter
    (the ingest stage validated it, so only a bug or a foreign writer gets it here)."""
    frame = _decoder.decode(raw)
    _check_offsets(frame)
    events, kafka_ts, offsets = [], [], []
    dead, dead_offsets = list(frame.dead), list(frame.dead_offsets)
    positions = frame.offsets or [None] * len(frame.events)
    for body, ts, offset in zip(frame.events, frame.kafka_ts, positions, strict=True):
        event, reason = decode_event(body)
        if event is None:
            dead.append(DeadLetter(source=f"{frame.source}:sequenced", reason=reason or "invalid",
                                   raw=body.decode("utf-8", "backslashreplace"),
                                   received_at=utc_now()))
            if offset is not None:
                dead_offsets.append(offset)
            continue
        events.append(event)
        kafka_ts.append(ts)
        if offset is not None:
            offsets.append(offset)
    return msgspec.structs.replace(frame, events=events, kafka_ts=kafka_ts, dead=dead,
                                   offsets=offsets, dead_offsets=dead_offsets)


def _check_offsets(frame: _Frame) -> None:
    """Offsets are all there or (from an older ingest) not at all: half would mislead."""
    if not frame.offsets and not frame.dead_offsets:
        return
    if len(frame.offsets) != len(frame.events) or len(frame.dead_offsets) != len(frame.dead):
        raise ValueError(
            f"chunk from {frame.source}: {len(frame.offsets)} offsets for {len(frame.events)} "
            f"events and {len(frame.dead_offsets)} for {len(frame.dead)} dead letters")


def source_name(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def build_chunks(
    source: str,
    records: Iterable[tuple[bytes | None, int, int]],
    *,
    max_t: float,
    caught_up: bool,
    expected: list[str],
    received_at: str | None = None,
    end: int = -1,
    sent_at: float = 0.0,
) -> tuple[list[Chunk], float]:
    """Validate one source partition's ``(value, offset, kafka_ts)`` records into chunks.

    Returns the chunks (the last one carries the watermark) and the new ``max_t``. Invalid
    records become dead letters naming ``topic:partition:offset`` and the reason. Every event
    and dead letter carries its offset, by which detection drops re-deliveries, and every chunk
    the partition's log-end offset ``end``, by which it sees a re-created topic. A chunk
    holds at most ``CHUNK_BYTES`` of event bodies and dead letters (one larger record goes
    alone), so a batch of any size, valid or not, makes messages the broker accepts.
    """
    received_at = received_at or utc_now()
    chunks: list[Chunk] = []
    events: list[bytes] = []
    kafka_ts: list[int] = []
    offsets: list[int] = []
    dead: list[DeadLetter] = []
    dead_offsets: list[int] = []
    size = 0
    for value, offset, ts in records:
        event, reason = (None, "empty message (null value)") if value is None else \
            decode_event(value)
        if event is None:
            letter = DeadLetter(source=f"{source}:{offset}", reason=reason or "invalid",
                                raw=(value or b"").decode("utf-8", "backslashreplace"),
                                received_at=received_at)
            item = len(letter.raw.encode()) + len(letter.reason.encode()) + 128
        else:
            item = len(value)
        if size and size + item > CHUNK_BYTES:
            chunks.append(Chunk(source=source, max_t=max_t, caught_up=False, expected=expected,
                                events=events, kafka_ts=kafka_ts, dead=dead, offsets=offsets,
                                dead_offsets=dead_offsets, end=end, sent_at=sent_at))
            events, kafka_ts, dead, offsets, dead_offsets, size = [], [], [], [], [], 0
        size += item
        if event is None:
            dead.append(letter)
            dead_offsets.append(offset)
            continue
        max_t = max(max_t, event.ts.timestamp())
        events.append(value)
        kafka_ts.append(ts)
        offsets.append(offset)
    chunks.append(Chunk(source=source, max_t=max_t, caught_up=caught_up, expected=expected,
                        events=events, kafka_ts=kafka_ts, dead=dead, offsets=offsets,
                        dead_offsets=dead_offsets, end=end, sent_at=sent_at))
    return chunks, max_t


# the single-chunk helper the doctest and tests use
def build_chunk(source: str, records: Iterable[tuple[bytes | None, int, int]], **kwargs) -> Chunk:
    (chunk,), _ = build_chunks(source, records, **kwargs)
    return chunk


class SourceWatermarks:
    """Per source partition: the largest event time forwarded, and since when it is idle.

    A source is *idle* once it has been caught up (read to its end) with no new events for
    ``idle_after`` seconds of ``now``, the log's clock (the chunks' ``sent_at``: ingest's
    clock; this is stream bookkeeping, as Flink's source idleness, never read by detection).
    Idle sources do not hold the watermark back, else one empty partition would stall
    everything; a source with events still arriving does, even when the consumer keeps up
    with it, so that a live stream is released in the order replay would give.

    >>> marks = SourceWatermarks(idle_after=2.0)
    >>> marks.update(Chunk(source="a:0", max_t=50.0, caught_up=False, expected=["a:0", "a:1"]),
    ...              now=0.0)
    >>> marks.low(now=0.0)  # a:1 has not reported: nothing may be released yet
    -inf
    >>> marks.update(Chunk(source="a:1", max_t=80.0, caught_up=False), now=0.0)
    >>> marks.low(now=0.0)
    50.0
    >>> marks.update(Chunk(source="a:0", max_t=60.0, caught_up=True), now=1.0)
    >>> marks.low(now=1.5), marks.low(now=3.0)  # a:0 holds back until idle for 2 s
    (60.0, 80.0)
    >>> marks.all_idle(now=3.0)
    False
    """

    def __init__(self, idle_after: float = 0.0) -> None:
        self.idle_after = idle_after
        self.max_t: dict[str, float] = {}
        self.caught_up: dict[str, bool] = {}
        self.quiet_since: dict[str, float] = {}  # caught up, no events since (processing time)
        self.expected: set[str] = set()

    def update(self, chunk: Chunk, now: float = 0.0) -> None:
        source = chunk.source
        self.expected.update(chunk.expected)
        self.expected.add(source)
        # a restarted ingest re-reads from its last commit: its max_t may go back; ours not
        self.max_t[source] = max(self.max_t.get(source, float("-inf")), chunk.max_t)
        self.caught_up[source] = chunk.caught_up
        if not chunk.caught_up:
            self.quiet_since.pop(source, None)
        elif chunk.events or source not in self.quiet_since:
            self.quiet_since[source] = now

    def _idle(self, source: str, now: float) -> bool:
        since = self.quiet_since.get(source)
        return since is not None and now - since >= self.idle_after

    def all_caught_up(self) -> bool:
        return bool(self.expected) and all(self.caught_up.get(s, False) for s in self.expected)

    def all_idle(self, now: float = 0.0) -> bool:
        return bool(self.expected) and all(self._idle(s, now) for s in self.expected)

    def low(self, now: float = 0.0) -> float:
        """The event time every source that is not idle has passed."""
        if not self.expected:
            return float("-inf")
        behind = [self.max_t.get(s, float("-inf")) for s in self.expected
                  if not self._idle(s, now)]
        if behind:
            return min(behind)
        return max(self.max_t.values(), default=float("-inf"))

    def forget_idleness(self) -> None:
        """After a restore: idleness is re-established from the sources' next reports."""
        self.quiet_since.clear()


class DetectionStage:
    """Sequence chunks by event time and run them through ``engine`` (see the module doc).

    ``feed`` takes chunks (``accept`` drops what was already accepted from their source,
    ``hold`` holds the rest) and decides, from what the chunk says, what may be released:
    those events join ``ready``, in order, behind any late ones. ``advance`` processes what is
    ready and returns the flags with the Kafka timestamp (ms) of the event that raised each.
    ``snapshot`` / ``restore`` checkpoint everything, with the offset of the next sequenced
    message.

    Every decision is taken when a chunk is fed, from the log alone (its clock is the chunks'
    ``sent_at``, never this process's), so the order of events is a function of the
    sequenced log and the checkpoint: a restart, another worker, or a key shard reading the
    same log (:mod:`pipeline.keyshards`) processes the same events in the same order, however
    fast it reads and however it slices its work.
    """

    def __init__(self, engine: Engine, *, lateness: float = 300.0,
                 idle_after: float = 0.0) -> None:
        self.engine = engine
        self.buffer = ReorderBuffer(lateness)
        self.watermarks = SourceWatermarks(idle_after)
        self.ready: deque[tuple[Event, int]] = deque()  # decided, in order, not processed
        self.log_time = 0.0  # the latest ``sent_at`` of the chunks fed
        self.released = 0
        self.received = 0  # valid events received, re-deliveries included
        self.redelivered = 0  # events dropped by source offset
        self.dead_lettered = 0
        self.next_offset = 0
        self.source_offsets: dict[str, int] = {}  # per source: the highest offset accepted
        self.restarts = 0  # sources whose log restarted below their mark (re-created topics)

    @property
    def duplicates(self) -> int:
        """Events dropped as duplicates: re-sent by ingest, or repeated in the data."""
        return self.redelivered + self.engine.stats.duplicates

    def feed(self, chunk: Chunk) -> None:
        """Take a chunk's new events and decide what is ready (:meth:`advance` processes)."""
        self.hold(self.accept(chunk))

    def accept(self, chunk: Chunk) -> Chunk:
        """The chunk without what was already accepted from its source: ingest re-sends from
        its last commit after a crash or a rebalance, and an offset at or below the source's
        high-water mark is such a re-send, however far back in event time.

        A log that no longer reaches the mark (its end at or below it) was deleted and
        re-created, or truncated: its offsets start again, so the mark starts again too (else
        its new events would be dropped as re-sends)."""
        self.received += len(chunk.events)
        mark = self.source_offsets.get(chunk.source, -1)
        if 0 <= chunk.end <= mark:
            self.restarts += 1
            mark = self.source_offsets[chunk.source] = -1
        if not chunk.offsets and not chunk.dead_offsets:
            return chunk  # from an older ingest (or empty): nothing to go by
        self.source_offsets[chunk.source] = max(mark, *chunk.offsets, *chunk.dead_offsets)
        if min(chunk.offsets + chunk.dead_offsets) > mark:
            return chunk  # the usual case: all new
        kafka_ts = chunk.kafka_ts or [0] * len(chunk.events)
        fresh = [n for n, offset in enumerate(chunk.offsets) if offset > mark]
        dead = [n for n, offset in enumerate(chunk.dead_offsets) if offset > mark]
        self.redelivered += len(chunk.events) - len(fresh)
        return msgspec.structs.replace(
            chunk, events=[chunk.events[n] for n in fresh], kafka_ts=[kafka_ts[n] for n in fresh],
            offsets=[chunk.offsets[n] for n in fresh], dead=[chunk.dead[n] for n in dead],
            dead_offsets=[chunk.dead_offsets[n] for n in dead])

    def hold(self, chunk: Chunk) -> None:
        """Hold an accepted chunk's events (late ones are ready at once, in arrival order),
        take its watermark and clock, and make ready what they release."""
        self.dead_lettered += len(chunk.dead)
        ready = self.ready
        for event, kafka_ts in zip(chunk.events, chunk.kafka_ts or [0] * len(chunk.events),
                                   strict=True):
            late = self.buffer.hold(event.ts.timestamp(), event.account_id, event.event_id,
                                    (event, kafka_ts))
            if late is not None:
                ready.append(late)
        self.log_time = max(self.log_time, chunk.sent_at)
        self.watermarks.update(chunk, self.log_time)
        ready.extend(self.buffer.release(self.watermark()))

    def watermark(self, *, idle: bool = False) -> float:
        """Up to where events may be released; everything once every source is idle (or
        caught up, with ``idle``): the end of the input, as replay at the end of its file."""
        marks, now = self.watermarks, self.log_time
        if marks.all_idle(now) or (idle and marks.all_caught_up()):
            return float("inf")
        return marks.low(now) - self.buffer.lateness

    def advance(self, *, idle: bool = False, limit: int | None = None) -> list[tuple[Flag, int]]:
        """Process what is ready (at most ``limit`` events: the caller keeps its batches
        short and calls again). ``idle``: the caller knows the input ended (a test, a file):
        once every source is caught up, everything held is ready."""
        if idle:
            self.ready.extend(self.buffer.release(self.watermark(idle=True)))
        ready = self.ready
        count = len(ready) if limit is None else min(limit, len(ready))
        return [flag for _ in range(count) for flag in self._process(ready.popleft())]

    def _process(self, item: tuple[Event, int]) -> list[tuple[Flag, int]]:
        event, kafka_ts = item
        self.released += 1
        return [(flag, kafka_ts) for flag in self.engine.process(event, self.released)]

    # -- checkpoints --------------------------------------------------------------------
    def snapshot(self, fingerprint: str) -> bytes:
        return pickle.dumps({
            "version": CHECKPOINT_VERSION, "fingerprint": fingerprint,
            "engine_state": self.engine.state, "engine_stats": self.engine.stats,
            "buffer": self.buffer, "watermarks": self.watermarks, "released": self.released,
            "ready": self.ready, "log_time": self.log_time,
            "received": self.received, "dead_lettered": self.dead_lettered,
            "next_offset": self.next_offset, "source_offsets": self.source_offsets,
            "redelivered": self.redelivered,
        }, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes, fingerprint: str) -> None:
        saved = pickle.loads(blob)  # our own checkpoint file, from our state dir
        if saved.get("version") not in _RESTORABLE or saved.get("fingerprint") != fingerprint:
            raise ValueError(
                "the checkpoint was written by another version or detector configuration "
                f"({saved.get('fingerprint')!r}, now {fingerprint!r}); restore the old "
                "settings, or delete the state directory to start detection afresh")
        self.engine.state = saved["engine_state"]
        self.engine.stats = saved["engine_stats"]
        # the held events and marks come back; the settings are this run's (--lateness and
        # --idle-flush may change across a restart)
        lateness, idle_after = self.buffer.lateness, self.watermarks.idle_after
        self.buffer = saved["buffer"]
        self.buffer.lateness = lateness
        self.watermarks = saved["watermarks"]
        self.watermarks.idle_after = idle_after
        if saved["version"] < 3:  # its idleness was on the old worker's clock, not the log's
            self.watermarks.forget_idleness()
        self.ready = saved.get("ready", deque())
        self.log_time = saved.get("log_time", 0.0)
        self.released = saved["released"]
        self.received = saved["received"]
        self.dead_lettered = saved["dead_lettered"]
        self.next_offset = saved["next_offset"]
        # version 1 had no marks: each source's next chunk sets one (until then re-sends are
        # dropped by event id only, as version 1 did)
        self.source_offsets = saved.get("source_offsets", {})
        self.redelivered = saved.get("redelivered", 0)
