"""The streaming worker's pure core (no Kafka): its flags are replay's, exactly.

The generated traffic is split the way Kafka splits it (five ``events.<type>`` topics x P
partitions by a hash of the account, each partition keeping file order), cut into chunks of
random sizes by :func:`build_chunks`, sent through the wire format, and fed to a
:class:`DetectionStage` in random interleavings, with re-deliveries, crashes and restores from
checkpoints. Whatever happens, the flags must be the ones ``replay`` gives for the same events.
"""

from __future__ import annotations

import pickle
import random
import zlib
from datetime import UTC, datetime

import msgspec
import orjson
import pytest

from detectors import build
from detectors.testing import make_event
from pipeline.engine import Engine
from pipeline.generate import generate
from pipeline.replay import replay
from pipeline.sequencing import (
    CHECKPOINT_VERSION,
    CHUNK_BYTES,
    Chunk,
    DetectionStage,
    SourceWatermarks,
    build_chunks,
    decode_chunk,
    encode_chunk,
    source_name,
)
from pipeline.sinks import BaseSink
from schemas import encode_event

CLOCK = "2026-12-01T00:00:00.000Z"
FINGERPRINT = "detectors-v1"
TYPES = ("signup", "login", "usage", "purchase", "refund")
KAFKA_MAX_MESSAGE = 1024 * 1024  # Kafka's default message size limit


class ListSink(BaseSink):
    def __init__(self) -> None:
        super().__init__()
        self.records: list = []

    def write(self, batch) -> None:
        self.records.extend(batch)


def new_engine() -> Engine:
    return Engine(build(), clock=lambda: CLOCK)


def new_stage() -> DetectionStage:
    return DetectionStage(new_engine(), lateness=300.0)


# -- the traffic and what replay makes of it ------------------------------------------------
class Traffic:
    def __init__(self, seed: int) -> None:
        events, labels = generate(accounts=400, days=3, seed=seed)
        self.bodies = [orjson.dumps(event) for event in events]
        self.events = events
        self.generated_duplicates = labels["counts"]["duplicates"]
        sink = ListSink()
        engine = new_engine()
        summary = replay([(body, f"gen:{n}") for n, body in enumerate(self.bodies, 1)], engine,
                         flag_sinks=[sink], lateness=300.0)
        assert summary.dead_lettered == 0 and summary.late == 0
        self.flags = sink.records
        self.ids = {flag.flag_id for flag in self.flags}
        self.by_id = {flag.flag_id: flag for flag in self.flags}
        self.duplicates = summary.duplicates
        assert len(self.ids) == len(self.flags)  # each flag once
        assert {flag.detector for flag in self.flags} == {
            "trial_cycling", "login_frequency", "refund_abuse"}

    def partitions(self, count: int) -> dict[str, list[tuple[bytes, int, int]]]:
        """Kafka's split: topic by event type, partition by a hash of the account; each
        partition keeps file order. Records are ``(value, offset, kafka_ts)``."""
        parts = {source_name(f"events.{kind}", p): [] for kind in TYPES for p in range(count)}
        for n, (event, body) in enumerate(zip(self.events, self.bodies, strict=True)):
            p = zlib.crc32(event["account_id"].encode()) % count
            records = parts[source_name(f"events.{event['type']}", p)]
            records.append((body, len(records), 1_700_000_000_000 + n))
        return parts


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return Traffic(seed=5)


def event_time(value: bytes) -> float:
    return datetime.fromisoformat(orjson.loads(value)["ts"].replace("Z", "+00:00")).timestamp()


def ingest(records, rng: random.Random, *, expected: list[str], source: str,
           max_batch: int = 300, restarts: float = 0.0, span: float | None = None
           ) -> list[Chunk]:
    """One source partition through the ingest stage: batches of random sizes (and, with
    ``span``, of at most that many seconds of event time), each through ``build_chunks``.
    With ``restarts``, the ingest sometimes crashes after forwarding a batch (not its last)
    and at once re-reads from an earlier offset (its last commit), its max_t forgotten."""
    chunks: list[Chunk] = []
    position, max_t, boundaries = 0, float("-inf"), [0]
    while position < len(records):
        end = min(len(records), position + rng.randint(1, max_batch))
        if span is not None:
            first = event_time(records[position][0])
            end = next((n for n in range(position + 1, end)
                        if event_time(records[n][0]) > first + span), end)
        batch, max_t = build_chunks(source, records[position:end], max_t=max_t,
                                    caught_up=end == len(records), expected=expected)
        chunks.extend(batch)
        position = end
        boundaries.append(end)
        if position < len(records) and rng.random() < restarts:
            position = rng.choice(boundaries[-3:-1])  # the commit of one or two batches ago
            max_t = float("-inf")
    if not records:  # an empty partition still says it is read to its end
        chunks += build_chunks(source, [], max_t=max_t, caught_up=True, expected=expected)[0]
    return chunks


def sequence(traffic: Traffic, partitions: int, seed: int, **ingest_options) -> list[bytes]:
    """The sequenced topic: every partition's chunks, encoded, in a random interleaving that
    keeps each partition's order (some partitions run far ahead of others)."""
    rng = random.Random(seed)
    parts = traffic.partitions(partitions)
    expected = sorted(parts)
    queues = {source: ingest(records, rng, expected=expected, source=source, **ingest_options)
              for source, records in parts.items()}
    weights = {source: rng.choice((0.05, 0.3, 1.0, 3.0)) for source in queues}
    for queue in queues.values():
        queue.reverse()
    out: list[bytes] = []
    while queues:
        sources = list(queues)
        source = rng.choices(sources, [weights[s] for s in sources])[0]
        out.append(encode_chunk(queues[source].pop()))
        if not queues[source]:
            del queues[source]
    return out


def run(stage: DetectionStage, messages: list[bytes], *, start: int = 0,
        stop: int | None = None, limit: int | None = None, finish: bool = True):
    """Feed the sequenced messages ``[start, stop)`` as the detect stage does; return flags."""
    flags = []
    for offset in range(start, len(messages) if stop is None else stop):
        stage.feed(decode_chunk(messages[offset]))
        flags.extend(flag for flag, _ in stage.advance(limit=limit))
        stage.next_offset = offset + 1
    if finish:
        while len(stage.buffer) or stage.ready:
            before = len(stage.buffer) + len(stage.ready)
            flags.extend(flag for flag, _ in stage.advance(idle=True, limit=limit))
            assert len(stage.buffer) + len(stage.ready) < before, \
                "all caught up and idle, yet nothing released"
    return flags


def assert_replays_flags(traffic: Traffic, flags) -> None:
    ids = [flag.flag_id for flag in flags]
    assert len(ids) == len(set(ids)), "a flag was emitted twice"
    assert set(ids) == traffic.ids, (
        f"missing {len(traffic.ids - set(ids))}, extra {len(set(ids) - traffic.ids)}")
    # not only the ids: every field (same events, in the same order, into the same engine)
    assert {flag.flag_id: flag for flag in flags} == traffic.by_id


# -- 1. the flags of replay, however the events are partitioned and interleaved -------------
@pytest.mark.parametrize(("partitions", "seed", "limit"), [
    (1, 0, None), (1, 1, 7), (3, 2, None), (6, 3, None), (6, 4, 50), (12, 5, None),
])
def test_streaming_gives_replays_flags_however_partitioned_and_interleaved(
        traffic, partitions, seed, limit):
    messages = sequence(traffic, partitions, seed)
    stage = new_stage()
    flags = run(stage, messages, limit=limit)
    assert_replays_flags(traffic, flags)
    assert stage.released == stage.received == len(traffic.events)
    assert stage.buffer.late == 0  # the generator's disorder (<= 120 s) is within the lateness
    assert stage.engine.stats.duplicates == traffic.duplicates == traffic.generated_duplicates
    assert len(stage.buffer) == 0


def processing_order(messages: list[bytes], *, every: int = 1, limit: int | None = None,
                     restart_at: int | None = None) -> tuple[list[str], list, int]:
    """Feed the log, processing what is ready after every ``every`` chunks (at most ``limit``
    events a call), optionally through a checkpoint and restore after chunk ``restart_at``;
    returns the event ids in the order the engine got them, the flags, and the late count."""
    order: list[str] = []

    def recorded(stage: DetectionStage) -> DetectionStage:
        process = stage.engine.process

        def recording(event, seq=0):
            order.append(event.event_id)
            return process(event, seq)

        stage.engine.process = recording
        return stage

    def new() -> DetectionStage:
        return recorded(DetectionStage(new_engine(), lateness=30.0, idle_after=2.0))

    stage, flags = new(), []
    for offset, raw in enumerate(messages):
        stage.feed(decode_chunk(raw))
        if offset % every == 0:
            flags += stage.advance(limit=limit)
        if offset == restart_at:
            blob = stage.snapshot(FINGERPRINT)
            stage = new()
            stage.restore(blob, FINGERPRINT)
    while stage.ready or len(stage.buffer):
        flags += stage.advance(idle=True, limit=limit)
    return order, [flag.flag_id for flag, _ in flags], stage.buffer.late


def test_the_order_is_the_logs_whatever_the_pace_and_a_restart(traffic):
    """With a lateness shorter than the traffic's disorder some events are late, and sources
    fall idle now and then (the log's clock jumps): still, however often and how much the
    reader processes, and across a checkpoint and restore, every event comes in the same
    order, decided by the log alone (so a key shard reading it agrees with its combiner)."""
    messages = []
    for n, raw in enumerate(sequence(traffic, 3, seed=21)):
        quiet = 30.0 * (n // 40)  # every 40 chunks, half a minute of silence
        fields = msgspec.msgpack.decode(raw)  # the wire's array, ``sent_at`` last
        fields[-1] = 1_800_000_000.0 + 0.25 * n + quiet
        messages.append(msgspec.msgpack.encode(fields))
    order, flags, late = processing_order(messages)
    assert late > 0 and len(order) == len(traffic.events)
    for pace in [{"every": 3, "limit": 5}, {"every": 7, "limit": 1000},
                 {"every": 3, "limit": 5, "restart_at": len(messages) // 2}]:
        assert processing_order(messages, **pace) == (order, flags, late), pace


def test_tiny_chunks_and_one_slow_partition_change_nothing(traffic):
    # one record per batch; the usage partition (most of the traffic) is fed last of all
    messages = sequence(traffic, 2, seed=9, max_batch=1)
    usage = [m for m in messages if decode_chunk(m).source.startswith("events.usage")]
    rest = [m for m in messages if not decode_chunk(m).source.startswith("events.usage")]
    stage = new_stage()
    held = run(stage, rest, finish=False)
    assert len(stage.buffer) > 0  # the usage partitions have not reported: everything waits
    assert stage.released == 0 and held == []
    assert_replays_flags(traffic, held + run(stage, usage))


# -- 2. at-least-once: re-delivered chunks ---------------------------------------------------
@pytest.mark.parametrize(("partitions", "seed", "span"), [
    (1, 10, 2 * 3600.0), (6, 11, 2 * 3600.0), (6, 12, 2 * 3600.0), (1, 13, None), (6, 14, None),
])
def test_redelivered_chunks_give_the_same_flags_and_are_counted(traffic, partitions, seed,
                                                                 span):
    # ingest crashes between forwarding a batch and committing it, and re-sends from its last
    # commit at once (with ``span``, a batch spans at most two hours of event time; without,
    # a re-send may go back further than the engine remembers event ids: see the next test)
    messages = sequence(traffic, partitions, seed, restarts=0.2, span=span)
    stage = new_stage()
    flags = run(stage, messages)
    assert_replays_flags(traffic, flags)
    resent = stage.received - len(traffic.events)
    assert resent > 100  # the test did re-deliver
    assert stage.redelivered == resent  # dropped by source offset, before the engine
    assert stage.released == len(traffic.events) and stage.buffer.late == 0
    assert stage.engine.stats.duplicates == traffic.duplicates  # the data's own, as replay
    assert stage.duplicates == traffic.duplicates + resent
    assert stage.engine.stats.events == len(traffic.events) - traffic.duplicates


def records(events, start: int = 0) -> list[tuple[bytes, int, int]]:
    """Source records ``(value, offset, kafka_ts)``, offsets from ``start``."""
    return [(encode_event(e), start + n, 0) for n, e in enumerate(events)]


def feed_records(stage: DetectionStage, source: str, batch, *, caught_up: bool,
                 expected: list[str], end: int = -1) -> list:
    """One ingest batch through build_chunks and the wire into ``stage``; its flags."""
    flags = []
    for c in build_chunks(source, batch, max_t=float("-inf"), caught_up=caught_up,
                          expected=expected, end=end)[0]:
        stage.feed(decode_chunk(encode_chunk(c)))
        flags += stage.advance()
    return flags


LOGIN_FAILS = [make_event("login", account_id="a1", t=60.0 * i, success=False,
                          event_id=f"f{i}") for i in range(6)]
BUSY = [make_event("usage", account_id="busy", t=600.0 * i, event_id=f"u{i}")
        for i in range(240)]  # 40 hours of someone else's traffic
LOGIN_AND_USAGE = ["events.login:0", "events.usage:0"]


def test_a_partition_resent_after_detection_moved_a_day_on_is_not_detected_again():
    """A caught-up partition stops holding the watermark, so detection may run a day or more
    ahead of it; if its ingest then re-sends its last batch (a crash or rebalance between
    forwarding and committing: at-least-once), the re-sent events would be late, and the
    engine's event-id memory is swept by event time (24 h): six failed logins, processed
    twice, would make a brute-force flag that replay never gives. Their source offsets are
    at or below what detection accepted from that partition: they are dropped, and counted."""
    replayed = [f for e in sorted(LOGIN_FAILS + BUSY, key=lambda e: e.ts) for f in
                new_engine().process(e)]
    assert replayed == []
    stage = new_stage()
    flags = []
    login = records(LOGIN_FAILS)
    usage = records(BUSY)
    for source, batch, caught_up in [
            ("events.login:0", login, True),  # read to its end: idle, holds nothing back
            ("events.usage:0", usage[:230], False),  # detection runs 38 h ahead
            ("events.login:0", login, True),  # the restarted ingest re-sends from offset 0
            ("events.usage:0", usage[230:], True)]:
        flags += feed_records(stage, source, batch, caught_up=caught_up,
                              expected=LOGIN_AND_USAGE)
    flags += stage.advance(idle=True)
    assert [f.reasons for f, _ in flags] == []  # replay's flags: none
    assert stage.redelivered == stage.duplicates == 6  # dropped before they could be late
    assert stage.buffer.late == 0 and stage.engine.stats.duplicates == 0
    assert stage.released == len(LOGIN_FAILS) + len(BUSY)
    assert stage.source_offsets == {"events.login:0": 5, "events.usage:0": 239}


def test_a_resend_after_a_checkpoint_and_restore_is_still_dropped():
    stage = new_stage()
    login = records(LOGIN_FAILS)
    feed_records(stage, "events.login:0", login[:4], caught_up=False, expected=LOGIN_AND_USAGE)
    feed_records(stage, "events.usage:0", records(BUSY), caught_up=True,
                 expected=LOGIN_AND_USAGE)
    feed_records(stage, "events.login:0", login[4:], caught_up=True, expected=LOGIN_AND_USAGE)
    stage.advance(idle=True)
    assert stage.released == len(LOGIN_FAILS) + len(BUSY) and stage.redelivered == 0
    blob = stage.snapshot(FINGERPRINT)
    # the detecting worker restarts from its checkpoint; then login's ingest re-sends from
    # offset 0 (its last commit), 40 hours of event time behind detection
    restored = new_stage()
    restored.restore(blob, FINGERPRINT)
    assert restored.source_offsets == stage.source_offsets
    flags = feed_records(restored, "events.login:0", login, caught_up=True,
                         expected=LOGIN_AND_USAGE)
    flags += restored.advance(idle=True)
    assert flags == []  # processed twice, the six failures would make a flag
    assert restored.redelivered == 6 and restored.buffer.late == 0
    assert restored.released == stage.released and restored.engine.stats.duplicates == 0
    # a re-send that reaches past the mark: only what is new goes on
    more = records([make_event("login", account_id="a1", t=150_000.0, event_id="f6")], 6)
    feed_records(restored, "events.login:0", login[4:] + more, caught_up=True,
                 expected=LOGIN_AND_USAGE)
    restored.advance(idle=True)
    assert restored.redelivered == 8 and restored.released == stage.released + 1
    assert restored.source_offsets["events.login:0"] == 6


def test_a_re_created_topic_is_read_afresh_not_dropped_as_re_sends():
    expected = ["events.login:0"]
    stage = new_stage()
    old = [make_event("login", account_id="a1", t=float(t), event_id=f"old{t}") for t in range(5)]
    feed_records(stage, "events.login:0", records(old), caught_up=True, expected=expected, end=5)
    # a crash re-send: the log still reaches offset 4, so offsets 0-4 are re-sends
    feed_records(stage, "events.login:0", records(old[:3]), caught_up=False, expected=expected,
                 end=5)
    assert stage.redelivered == 3 and stage.restarts == 0
    # the topic is deleted and re-created: its log ends at 2, below the mark of 4
    new = [make_event("login", account_id="a2", t=10.0 + t, event_id=f"new{t}") for t in range(2)]
    feed_records(stage, "events.login:0", records(new), caught_up=True, expected=expected, end=2)
    stage.advance(idle=True)
    assert stage.restarts == 1 and stage.redelivered == 3
    assert stage.released == len(old) + len(new)
    assert stage.source_offsets == {"events.login:0": 1}
    # and from there on re-sends of the new log are dropped as before
    feed_records(stage, "events.login:0", records(new), caught_up=True, expected=expected, end=2)
    assert stage.redelivered == 5 and stage.restarts == 1


def test_offsets_are_per_source_partition():
    expected = ["events.login:0", "events.login:1"]
    stage = new_stage()
    a = [make_event("login", account_id="a1", t=float(t), event_id=f"a{t}") for t in range(3)]
    b = [make_event("login", account_id="b1", t=float(t), event_id=f"b{t}") for t in range(3)]
    feed_records(stage, "events.login:0", records(a), caught_up=False, expected=expected)
    # the same offsets 0, 1, 2 on another partition are other records
    feed_records(stage, "events.login:1", records(b), caught_up=False, expected=expected)
    assert stage.redelivered == 0 and len(stage.buffer) == 6
    assert stage.source_offsets == {"events.login:0": 2, "events.login:1": 2}
    # a re-send of one partition does not hide the other's next record
    later = [make_event("login", account_id="a1", t=10.0, event_id="a10")]
    feed_records(stage, "events.login:1", records(b), caught_up=True, expected=expected)
    feed_records(stage, "events.login:0", records(later, 3), caught_up=True, expected=expected)
    stage.advance(idle=True)
    assert stage.redelivered == 3 and stage.released == 7
    assert stage.engine.stats.duplicates == 0


def test_resent_dead_letters_are_recorded_once():
    expected = ["events.usage:0"]
    batch = [(b"not json", 0, 0), *records(events_at(1, 2), 1), (None, 3, 0)]
    (first,), _ = build_chunks("events.usage:0", batch, max_t=float("-inf"), caught_up=True,
                               expected=expected)
    assert first.dead_offsets == [0, 3] and first.offsets == [1, 2]
    stage = new_stage()
    accepted = stage.accept(decode_chunk(encode_chunk(first)))
    assert len(accepted.dead) == 2  # the worker writes these to the dead-letter sink
    stage.hold(accepted)
    again = stage.accept(decode_chunk(encode_chunk(first)))  # re-sent
    assert again.dead == [] and again.events == [] and again.offsets == []
    stage.hold(again)
    assert stage.dead_lettered == 2 and stage.redelivered == 2 and stage.received == 4


# -- 3. checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize(("partitions", "seed"), [(1, 20), (6, 21), (6, 22)])
def test_crashes_after_checkpoints_resume_with_replays_flags(traffic, partitions, seed):
    """Several crashes: each run restores the last checkpoint (into a fresh stage and engine),
    re-reads the sequenced topic from the checkpoint's offset (so what the crashed run did
    after its checkpoint is done again), checkpoints, and crashes a little later."""
    messages = sequence(traffic, partitions, seed, restarts=0.1, span=2 * 3600.0)
    rng = random.Random(seed)
    blob = new_stage().snapshot(FINGERPRINT)  # the first run starts afresh
    committed: list = []  # flags emitted before the checkpoint the next run resumes from
    emitted: list = []  # everything any run emitted, repeats included
    for _ in range(4):
        stage = new_stage()
        stage.restore(blob, FINGERPRINT)
        start = stage.next_offset
        checkpoint = rng.randint(start, len(messages))
        crash = rng.randint(checkpoint, len(messages))
        before = run(stage, messages, start=start, stop=checkpoint, finish=False)
        blob = stage.snapshot(FINGERPRINT)
        after = run(stage, messages, start=checkpoint, stop=crash, finish=False)
        committed += before
        emitted += before + after
    stage = new_stage()
    stage.restore(blob, FINGERPRINT)
    last = run(stage, messages, start=stage.next_offset)
    assert_replays_flags(traffic, committed + last)  # nothing lost, nothing twice
    assert {f.flag_id for f in emitted} <= traffic.ids  # a repeat has the same id
    # none lost in a restore, none processed twice
    assert stage.released == stage.received - stage.redelivered == len(traffic.events)
    assert stage.engine.stats.events == len(traffic.events) - traffic.duplicates


def test_a_checkpoint_taken_while_events_are_held_restores_them(traffic):
    messages = sequence(traffic, 6, seed=30)
    stage = new_stage()
    middle = len(messages) // 2
    first = run(stage, messages, stop=middle, finish=False)
    assert len(stage.buffer) > 0
    blob = stage.snapshot(FINGERPRINT)
    restored = DetectionStage(new_engine(), lateness=300.0)
    restored.restore(blob, FINGERPRINT)
    assert restored.next_offset == middle
    assert len(restored.buffer) == len(stage.buffer)
    assert restored.received == stage.received and restored.released == stage.released
    assert restored.watermarks.max_t == stage.watermarks.max_t
    rest = run(restored, messages, start=middle)
    assert_replays_flags(traffic, first + rest)
    # the original, carrying on, emits exactly what the restored stage did
    assert [f.flag_id for f in run(stage, messages, start=middle)] == [f.flag_id for f in rest]


def test_a_restore_keeps_this_runs_lateness_and_idleness_settings():
    stage = DetectionStage(new_engine(), lateness=300.0, idle_after=2.0)
    feed_records(stage, "events.login:0", records(LOGIN_FAILS[:3]), caught_up=False,
                 expected=["events.login:0"])
    restarted = DetectionStage(new_engine(), lateness=30.0, idle_after=10.0)
    restarted.restore(stage.snapshot(FINGERPRINT), FINGERPRINT)
    assert len(restarted.buffer) == len(stage.buffer)
    assert restarted.buffer.lateness == 30.0 and restarted.watermarks.idle_after == 10.0


def test_restore_refuses_another_fingerprint_or_version_clearly():
    stage = new_stage()
    stage.feed(Chunk(source="events.login:0", max_t=10.0, caught_up=False,
                     expected=["events.login:0"], events=[make_event("login", t=10.0)],
                     kafka_ts=[0]))
    blob = stage.snapshot(FINGERPRINT)
    fresh = new_stage()
    with pytest.raises(ValueError, match="another version or detector configuration") as error:
        fresh.restore(blob, "detectors-v2")
    message = str(error.value)
    assert "detectors-v1" in message and "detectors-v2" in message
    assert "delete the state directory" in message
    assert len(fresh.buffer) == 0 and fresh.received == 0  # nothing half-restored
    newer = pickle.loads(blob)
    newer["version"] = CHECKPOINT_VERSION + 1
    with pytest.raises(ValueError, match="another version"):
        fresh.restore(pickle.dumps(newer), FINGERPRINT)
    fresh.restore(blob, FINGERPRINT)
    assert fresh.received == 1 and len(fresh.buffer) == 1


def test_a_version_1_checkpoint_restores_without_offset_marks():
    # an upgrade must not need a fresh start (the sequenced topic is trimmed to checkpoints)
    stage = new_stage()
    feed_records(stage, "events.login:0", records(LOGIN_FAILS[:3]), caught_up=False,
                 expected=["events.login:0"])
    saved = pickle.loads(stage.snapshot(FINGERPRINT))
    del saved["source_offsets"], saved["redelivered"]
    saved["version"] = 1
    restored = new_stage()
    restored.restore(pickle.dumps(saved), FINGERPRINT)
    assert restored.source_offsets == {} and restored.redelivered == 0
    assert len(restored.buffer) == 3
    # the next chunk sets the mark; re-sends below it are dropped from then on
    feed_records(restored, "events.login:0", records(LOGIN_FAILS[3:], 3), caught_up=False,
                 expected=["events.login:0"])
    feed_records(restored, "events.login:0", records(LOGIN_FAILS), caught_up=True,
                 expected=["events.login:0"])
    assert restored.source_offsets == {"events.login:0": 5} and restored.redelivered == 6


# -- 4. watermarks -----------------------------------------------------------------------------
def events_at(*times: float, account: str = "a1", prefix: str = "e"):
    return [make_event("usage", account_id=account, t=t, event_id=f"{prefix}{t:g}")
            for t in times]


def chunk(source: str, events=(), *, max_t: float | None = None, caught_up: bool = False,
          expected=("s:0", "s:1"), sent_at: float = 0.0) -> Chunk:
    events = list(events)
    if max_t is None:
        max_t = max((e.ts.timestamp() for e in events), default=float("-inf"))
    return decode_chunk(encode_chunk(Chunk(
        source=source, max_t=max_t, caught_up=caught_up, expected=list(expected),
        events=[encode_event(e) for e in events], kafka_ts=[0] * len(events),
        sent_at=sent_at)))


T0 = make_event("usage", t=0.0).ts.timestamp()


def mark(stage: DetectionStage, **kwargs) -> float:
    """The stage's watermark, in seconds after the events' epoch."""
    return stage.watermark(**kwargs) - T0


def processed(stage: DetectionStage) -> int:
    return stage.engine.stats.events


def test_a_partition_that_never_reported_holds_everything_back():
    stage = DetectionStage(new_engine(), lateness=10.0)
    stage.feed(chunk("s:0", events_at(0, 100, 1000, 5000), caught_up=True))
    stage.advance()
    stage.advance(idle=True)  # s:0 is idle, but s:1 has never said where it is
    assert processed(stage) == 0 and stage.watermark(idle=True) == float("-inf")
    stage.feed(chunk("s:1", caught_up=True))  # an empty partition, read to its end
    stage.advance(idle=True)
    assert processed(stage) == 4 and len(stage.buffer) == 0


def test_a_caught_up_partition_does_not_hold_back_but_a_live_one_does():
    stage = DetectionStage(new_engine(), lateness=10.0)
    stage.feed(chunk("s:0", events_at(0, 50, 100), caught_up=True))
    stage.feed(chunk("s:1", events_at(60, 500, account="b1", prefix="b"), caught_up=False))
    stage.advance()
    # s:0 is caught up (idle at once with idle_after=0): s:1 alone sets the watermark
    assert mark(stage) == 490.0
    assert processed(stage) == 4 and len(stage.buffer) == 1
    # s:0 gets new events (no longer caught up): it holds the watermark at its max_t again
    stage.feed(chunk("s:0", events_at(495, 498), caught_up=False))
    assert mark(stage) == 488.0
    stage.advance()
    assert processed(stage) == 4
    stage.feed(chunk("s:0", events_at(700), caught_up=False))
    stage.advance()
    assert mark(stage) == 490.0 and processed(stage) == 4  # 495 and 498 wait for s:1
    stage.feed(chunk("s:1", max_t=600.0 + T0))  # a heartbeat: s:1 has passed 600
    stage.advance()
    assert mark(stage) == 590.0 and processed(stage) == 7


def test_a_caught_up_partition_holds_back_until_quiet_for_idle_after():
    """Seconds of the log's clock: the ``sent_at`` of the chunks, not this process's."""
    stage = DetectionStage(new_engine(), lateness=10.0, idle_after=2.0)
    stage.feed(chunk("s:0", events_at(100), caught_up=True, sent_at=0.0))
    stage.feed(chunk("s:1", events_at(1000, account="b1", prefix="b"), sent_at=0.0))
    stage.feed(chunk("s:1", max_t=T0 + 1000.0, sent_at=1.0))  # s:1's heartbeat, 1 s on
    stage.advance()
    assert processed(stage) == 0  # s:0 caught up 1 s ago: still holds at 100 - 10
    assert mark(stage) == 90.0
    stage.feed(chunk("s:1", max_t=T0 + 1000.0, sent_at=2.0))
    stage.advance()
    assert processed(stage) == 1 and mark(stage) == 990.0
    # a heartbeat (no events) does not restart the quiet time; new events do
    stage.feed(chunk("s:0", max_t=100.0, caught_up=True, sent_at=5.0))
    assert mark(stage) == 990.0
    stage.feed(chunk("s:0", events_at(995), caught_up=True, sent_at=6.0))
    stage.feed(chunk("s:1", max_t=T0 + 1000.0, sent_at=7.0))
    assert mark(stage) == 985.0


def test_all_caught_up_and_idle_flushes_what_is_held():
    stage = DetectionStage(new_engine(), lateness=300.0, idle_after=60.0)
    stage.feed(chunk("s:0", events_at(0, 10, 20), caught_up=True, sent_at=0.0))
    stage.feed(chunk("s:1", events_at(5, account="b1", prefix="b"), caught_up=True,
                     sent_at=1.0))
    stage.advance()
    assert processed(stage) == 0 and not stage.ready  # caught up, not yet quiet for a minute
    stage.advance(idle=True)  # the caller says: idle now (end of input)
    assert processed(stage) == 4 and len(stage.buffer) == 0

    later = DetectionStage(new_engine(), lateness=300.0, idle_after=60.0)
    later.feed(chunk("s:0", events_at(0, 10), caught_up=True, sent_at=0.0))
    later.feed(chunk("s:1", caught_up=True, sent_at=0.0))
    later.advance()
    assert processed(later) == 0
    later.feed(chunk("s:1", caught_up=True, sent_at=60.0))  # a heartbeat a minute on
    later.advance()  # quiet for idle_after: the same without being told
    assert processed(later) == 2
    # idle=True does not flush while a source is still being read
    open_ = DetectionStage(new_engine(), lateness=300.0)
    open_.feed(chunk("s:0", events_at(0, 10), caught_up=True))
    open_.feed(chunk("s:1", events_at(5, account="b1", prefix="b"), caught_up=False))
    open_.advance(idle=True)
    assert processed(open_) == 0


def test_max_t_never_goes_back_when_a_restarted_ingest_reports_less():
    marks = SourceWatermarks()
    marks.update(Chunk(source="s:0", max_t=500.0, caught_up=False, expected=["s:0", "s:1"]))
    marks.update(Chunk(source="s:1", max_t=800.0, caught_up=False))
    assert marks.low() == 500.0
    marks.update(Chunk(source="s:0", max_t=float("-inf"), caught_up=False))  # restarted
    marks.update(Chunk(source="s:0", max_t=120.0, caught_up=False))
    assert marks.max_t["s:0"] == 500.0 and marks.low() == 500.0
    marks.update(Chunk(source="s:0", max_t=650.0, caught_up=False))
    assert marks.low() == 650.0

    stage = DetectionStage(new_engine(), lateness=10.0)
    stage.feed(chunk("s:0", events_at(100, 200, 300)))
    stage.feed(chunk("s:1", events_at(400, account="b1", prefix="b")))
    stage.advance()
    assert processed(stage) == 2 and mark(stage) == 290.0
    # the restarted ingest re-sends s:0's first two events, with a max_t that forgot 300
    restarted = chunk("s:0", events_at(100, 200))
    assert restarted.max_t == T0 + 200.0
    stage.feed(restarted)
    assert mark(stage) == 290.0  # not 190
    stage.advance()
    assert processed(stage) == 2 and len(stage.buffer) == 2  # 300 and 400 are still held
    assert stage.engine.stats.duplicates == 2 and stage.buffer.late == 1  # 100 was late


def test_release_is_in_t_account_event_id_order_up_to_the_watermark_and_limit():
    stage = DetectionStage(new_engine(), lateness=10.0)
    order: list[str] = []
    process = stage.engine.process

    def recording(event, seq=0):
        order.append(event.event_id)
        return process(event, seq)

    stage.engine.process = recording
    events = [make_event("usage", account_id=account, t=t, event_id=event_id)
              for account, t, event_id in [("b", 100.0, "e1"), ("a", 100.0, "e2"),
                                           ("a", 100.0, "e0"), ("z", 50.0, "e9"),
                                           ("a", 100.5, "e3")]]
    stage.feed(chunk("s:0", events, expected=["s:0"]))
    stage.feed(chunk("s:0", max_t=T0 + 110.0, expected=["s:0"]))  # heartbeat: passed 110
    assert mark(stage) == 100.0
    stage.advance(limit=2)
    assert order == ["e9", "e0"]  # at most ``limit`` per call
    assert stage.ready
    stage.advance()
    assert order == ["e9", "e0", "e2", "e1"]  # 100.0 is at the watermark: released
    assert not stage.ready and len(stage.buffer) == 1
    assert stage.released == 4


def test_the_expected_sources_of_any_chunk_are_waited_for():
    marks = SourceWatermarks()
    assert marks.low() == float("-inf") and not marks.all_caught_up() and not marks.all_idle()
    marks.update(Chunk(source="s:0", max_t=10.0, caught_up=True, expected=["s:0"]))
    assert marks.all_caught_up() and marks.all_idle()
    # a later chunk names a new partition (topic grown): it is waited for from now on
    marks.update(Chunk(source="s:0", max_t=20.0, caught_up=True, expected=["s:0", "s:9"]))
    assert not marks.all_caught_up() and marks.low() == float("-inf")


# -- 5. build_chunks -----------------------------------------------------------------------
def body(**fields) -> bytes:
    event = {"type": "usage", "event_id": "x", "ts": "2026-11-01T00:00:00Z",
             "account_id": "a1", "feature": "export", "units": 1}
    event.update(fields)
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


INVALID = {
    "bad JSON": (b"{this is not json", "not valid JSON"),
    "missing field": (body(units=...), "missing required field `units`"),
    "wrong type": (body(units="lots"), "Expected `float`, got `str` - at `$.units`"),
    "unknown type": (body(type="teleport"), "`$.type`"),
    "null value": (None, "empty message (null value)"),
    "null field": (body(account_id=None), "got `null` - at `$.account_id`"),
    "no offset": (body(ts="2026-11-01T00:00:00"), "timezone"),
    "invalid UTF-8": (body(feature="EXPORT").replace(b"EXPORT", b"\xff\xfeXP"),
                      "not valid UTF-8"),
    "garbage": (b"\xff\xfe\x00garbage", "not valid"),
    "negative units": (body(units=-4), "`$.units`"),
}


def test_invalid_records_become_dead_letters_naming_offset_and_reason():
    valid = [encode_event(e) for e in events_at(10, 20, 50, 40, 30)]
    invalid = list(INVALID.items())
    records, kinds = [], {}
    for n in range(len(valid) + len(invalid)):
        offset = 1000 + n
        if n % 3 == 0:
            records.append((valid[n // 3], offset, 7 * offset))
        else:
            name, (raw, reason) = invalid.pop(0)
            records.append((raw, offset, 7 * offset))
            kinds[offset] = (name, raw, reason)
    chunks, max_t = build_chunks("events.usage:3", records, max_t=float("-inf"),
                                 caught_up=True, expected=["events.usage:3"],
                                 received_at="2026-11-05T00:00:00.000Z")
    assert len(chunks) == 1
    only = decode_chunk(encode_chunk(chunks[0]))
    assert len(only.events) + len(only.dead) == len(records)  # read = events + dead letters
    assert len(only.events) == len(valid) and len(only.dead) == len(INVALID)
    letters = {int(letter.source.rsplit(":", 1)[1]): letter for letter in only.dead}
    assert set(letters) == set(kinds)
    for offset, (name, raw, reason) in kinds.items():
        letter = letters[offset]
        assert letter.source == f"events.usage:3:{offset}", name
        assert reason in letter.reason, name
        assert letter.raw == (raw or b"").decode("utf-8", "backslashreplace"), name
        assert letter.received_at == "2026-11-05T00:00:00.000Z"
    # valid ones pass, unchanged, in order and with their own Kafka timestamps
    assert [encode_event(e) for e in only.events] == valid
    assert only.kafka_ts == [7 * (1000 + 3 * n) for n in range(len(valid))]
    # each with its source offset, by which detection drops re-deliveries
    assert only.offsets == [1000 + 3 * n for n in range(len(valid))]
    assert only.dead_offsets == sorted(kinds)
    assert max_t == only.max_t == datetime(2026, 11, 1, 0, 0, 50, tzinfo=UTC).timestamp()
    assert only.caught_up and only.source == "events.usage:3"


@pytest.mark.parametrize("name", list(INVALID))
def test_each_kind_of_invalid_record_says_what_was_wrong(name):
    raw, reason = INVALID[name]
    (only,), max_t = build_chunks("events.login:0", [(raw, 42, 0)], max_t=7.0,
                                  caught_up=False, expected=[])
    assert only.events == [] and max_t == 7.0 and only.max_t == 7.0
    (letter,) = only.dead
    assert letter.source == "events.login:0:42"
    assert reason in letter.reason


def big_events(count: int, *, size: int = 1000, start: float = 0.0):
    return [encode_event(make_event("usage", account_id=f"acct{n % 17}", t=start + n,
                                    feature="f" * size, event_id=f"big{n}"))
            for n in range(count)]


def test_a_large_batch_is_split_into_chunks_under_the_size_limit():
    bodies = big_events(2000)
    records = [(value, n, n) for n, value in enumerate(bodies)]
    chunks, max_t = build_chunks("events.usage:0", records, max_t=float("-inf"),
                                 caught_up=True, expected=["events.usage:0"])
    assert len(chunks) >= 4
    assert [c.caught_up for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert [v for c in chunks for v in c.events] == bodies  # all, in order
    assert [t for c in chunks for t in c.kafka_ts] == list(range(2000))
    assert [o for c in chunks for o in c.offsets] == list(range(2000))
    for c in chunks:
        assert 0 < sum(map(len, c.events)) <= CHUNK_BYTES
        assert len(encode_chunk(c)) < KAFKA_MAX_MESSAGE
    # each chunk's watermark is the largest time forwarded so far, non-decreasing
    times = [decode_chunk(encode_chunk(c)).events[-1].ts.timestamp() for c in chunks]
    assert [c.max_t for c in chunks] == times and times == sorted(times)
    assert max_t == chunks[-1].max_t == 1999.0 + make_event("usage").ts.timestamp()


def test_a_large_batch_of_invalid_records_is_split_too():
    # a foreign producer writes binary messages to an event topic: the dead letters (with the
    # raw bytes escaped) travel in the chunks, which must stay under Kafka's message limit
    records = [(bytes([0xFF, 0xFE]) * 500, n, n) for n in range(3000)]
    records[1500] = (big_events(1)[0], 1500, 1500)
    chunks, _ = build_chunks("events.usage:0", records, max_t=float("-inf"),
                             caught_up=True, expected=["events.usage:0"])
    assert sum(len(c.dead) for c in chunks) == 2999
    assert sum(len(c.events) for c in chunks) == 1
    assert [o for c in chunks for o in c.dead_offsets] == [n for n in range(3000) if n != 1500]
    assert [o for c in chunks for o in c.offsets] == [1500]
    assert chunks[-1].caught_up and not any(c.caught_up for c in chunks[:-1])
    for c in chunks:
        assert len(encode_chunk(c)) < KAFKA_MAX_MESSAGE


def test_an_empty_batch_is_one_heartbeat_chunk():
    (only,), max_t = build_chunks("events.refund:5", [], max_t=123.0, caught_up=True,
                                  expected=["events.refund:5"])
    assert (only.events, only.dead, only.max_t, only.caught_up, max_t) == ([], [], 123.0,
                                                                           True, 123.0)


def test_max_t_carries_over_batches_and_ignores_older_events():
    late = encode_event(make_event("usage", t=50.0, event_id="late"))
    (first,), max_t = build_chunks("s:0", [(v, n, n) for n, v in enumerate(
        encode_event(e) for e in events_at(100, 200))], max_t=float("-inf"),
        caught_up=False, expected=[])
    (second,), max_t2 = build_chunks("s:0", [(late, 2, 2)], max_t=max_t, caught_up=True,
                                     expected=[])
    assert max_t == first.max_t and max_t2 == second.max_t == max_t
    assert max_t == make_event("usage", t=200.0).ts.timestamp()


# -- 6. the wire format --------------------------------------------------------------------
def test_decode_chunk_turns_an_invalid_event_body_into_a_dead_letter():
    good = encode_event(make_event("login", account_id="a9", t=5.0, event_id="ok1"))
    frame = Chunk(source="events.login:2", max_t=5.0, caught_up=False,
                  expected=["events.login:2"],
                  events=[b'{"type": "login", "event_id": "x"}', good,
                          b"\xff\xfe not even utf-8", INVALID["no offset"][0]],
                  kafka_ts=[11, 22, 33, 44])
    decoded = decode_chunk(encode_chunk(frame))
    assert [e.event_id for e in decoded.events] == ["ok1"]
    assert decoded.kafka_ts == [22]
    assert [d.source for d in decoded.dead] == ["events.login:2:sequenced"] * 3
    reasons = [d.reason for d in decoded.dead]
    assert "missing required field" in reasons[0]
    assert "not valid" in reasons[1] and "timezone" in reasons[2]
    assert decoded.dead[1].raw == "\\xff\\xfe not even utf-8"
    stage = new_stage()
    stage.feed(decoded)
    assert stage.received == 1 and stage.dead_lettered == 3


def test_the_wire_format_round_trips_events_and_dead_letters():
    records = [(encode_event(e), n, 1000 + n) for n, e in enumerate(events_at(1, 2, 3))]
    records.insert(1, (b"nope", 9, 9))
    (original,), _ = build_chunks("events.usage:1", records, max_t=float("-inf"),
                                  caught_up=True, expected=["events.usage:0", "events.usage:1"])
    raw = encode_chunk(original)
    decoded = decode_chunk(raw)
    assert decoded.source == "events.usage:1" and decoded.caught_up
    assert decoded.max_t == original.max_t
    assert decoded.expected == ["events.usage:0", "events.usage:1"]
    assert [encode_event(e) for e in decoded.events] == original.events
    assert decoded.kafka_ts == [1000, 1001, 1002]
    assert decoded.offsets == [0, 1, 2] and decoded.dead_offsets == [9]
    assert decoded.dead == original.dead
    # an empty heartbeat with no max_t yet survives the trip too
    heartbeat = decode_chunk(encode_chunk(Chunk(source="s:0", max_t=float("-inf"),
                                                caught_up=False)))
    assert heartbeat.max_t == float("-inf") and heartbeat.events == []
    with pytest.raises(msgspec.DecodeError):
        decode_chunk(b"\xc1 not msgpack")  # the worker dead-letters such a message whole


def test_an_event_invalid_at_detection_keeps_its_offset_as_a_dead_letter():
    good = encode_event(make_event("login", account_id="a9", t=5.0, event_id="ok1"))
    raw = encode_chunk(Chunk(source="events.login:2", max_t=5.0, caught_up=False,
                             events=[good, b"{}"], kafka_ts=[1, 2], offsets=[40, 41]))
    decoded = decode_chunk(raw)
    assert decoded.offsets == [40] and decoded.dead_offsets == [41]
    stage = new_stage()
    stage.feed(decoded)
    stage.feed(decode_chunk(raw))  # re-sent: neither the event nor the dead letter again
    assert stage.dead_lettered == 1 and stage.redelivered == 1 and len(stage.buffer) == 1


def test_a_chunk_from_an_older_ingest_without_offsets_is_still_processed():
    # the wire format grows at its end: a chunk written before offsets existed decodes with
    # none, and is processed (re-sends of it are dropped by event id only, as they were)
    events = events_at(1, 2)
    old = msgspec.msgpack.encode(["events.usage:0", T0 + 2.0, True, ["events.usage:0"],
                                  [encode_event(e) for e in events], [0, 0], []])
    decoded = decode_chunk(old)
    assert decoded.offsets == [] and decoded.dead_offsets == []
    stage = new_stage()
    stage.feed(decoded)
    stage.feed(decode_chunk(old))
    stage.advance(idle=True)
    assert stage.released == 4 and stage.redelivered == 0
    assert stage.engine.stats.duplicates == 2 and stage.source_offsets == {}


def test_a_chunk_with_offsets_missing_for_some_records_is_refused_clearly():
    body_ = encode_event(make_event("usage", t=1.0))
    raw = encode_chunk(Chunk(source="events.usage:4", max_t=1.0, caught_up=False,
                             events=[body_, body_], kafka_ts=[0, 0], offsets=[7]))
    with pytest.raises(ValueError, match=r"events.usage:4: 1 offsets for 2 events"):
        decode_chunk(raw)  # the worker dead-letters such a message whole
