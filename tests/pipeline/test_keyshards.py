"""Detection split by key over shards gives the one engine's flags, whatever the count."""

from collections import Counter

import orjson
import pytest

from detectors import build
from detectors.base import Verdict
from detectors.testing import make_event
from pipeline.engine import Engine
from pipeline.generate import generate
from pipeline.keyshards import (
    CombineEngine,
    Part,
    PartsBatch,
    PartsInbox,
    ShardEngine,
    decode_batch,
    encode_batch,
    shard_of,
    splittable,
)
from schemas.events import decode_event

CLOCK = "2026-12-01T00:00:00.000Z"


@pytest.fixture(scope="module")
def traffic():
    """Two days of generated traffic, every scenario in it, in the engine's order, with a
    few re-deliveries (the engine drops them by id; shards must drop the same ones)."""
    raw, _ = generate(accounts=600, days=2, seed=7)
    events = [decode_event(orjson.dumps(r))[0] for r in raw]
    events.sort(key=lambda e: (e.ts, e.account_id, e.event_id))
    return events + events[-50:]


def one_engine(events):
    engine = Engine(build(), clock=lambda: CLOCK)
    return [flag for seq, event in enumerate(events) for flag in engine.process(event, seq)], \
        engine


def split_engines(events, count, split=("login_frequency", "refund_abuse")):
    detectors = [d for d in build() if d.name in split]
    shards = [ShardEngine(detectors, index=i, count=count, clock=lambda: CLOCK)
              for i in range(count)]
    combiner = CombineEngine(build(), split=split, clock=lambda: CLOCK)
    flags, parts_per_shard = [], Counter()
    for seq, event in enumerate(events):
        parts = []
        for shard in shards:
            found = shard.process(event, seq)
            parts_per_shard[shard.index] += len(found)
            parts += found
        flags += combiner.process(event, seq, parts=parts)
    return flags, shards, combiner, parts_per_shard


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_the_shards_and_combiner_give_the_one_engines_flags(traffic, count):
    expected, engine = one_engine(traffic)
    flags, shards, combiner, parts = split_engines(traffic, count)
    assert len(expected) > 50
    assert {f.detector for f in expected} == {"login_frequency", "refund_abuse", "trial_cycling"}
    assert flags == expected
    # each shard did a share of the keyed work, and no key lives on two shards
    assert len(parts) == count and all(parts.values())
    keys = [set(s.state.keyed["login_frequency"]) for s in shards]
    assert sum(map(len, keys)) == len(set().union(*keys)) \
        == len(engine.state.keyed["login_frequency"])
    assert all(shard_of(k, count) == s.index for s in shards
               for k in s.state.keyed["login_frequency"])
    assert not combiner.state.keyed["login_frequency"]  # the combiner keeps none of it
    assert all(s.stats.duplicates == engine.stats.duplicates >= 50 for s in shards)


def test_a_detector_with_a_second_round_is_not_split():
    trial = [d for d in build() if d.name == "trial_cycling"]
    assert not splittable(trial[0])
    assert all(splittable(d) for d in build() if d.name != "trial_cycling")
    with pytest.raises(ValueError, match="probe_keys"):
        ShardEngine(trial, index=0, count=2)
    with pytest.raises(ValueError, match="probe_keys"):
        CombineEngine(build(), split=["trial_cycling"])
    with pytest.raises(ValueError, match="index"):
        ShardEngine(build(["login_frequency"]), index=2, count=2)
    with pytest.raises(ValueError, match="key-shards needs one"):
        CombineEngine.like(Engine(trial), count=2, fingerprint="fp")
    # built like an engine: its splittable detectors, its settings
    engine = Engine(build(), shadow=["refund_abuse", "trial_cycling"], episode_gap_days=3.0)
    shard = ShardEngine.like(engine, index=1, count=2)
    assert [d.name for d in shard.detectors] == ["login_frequency", "refund_abuse"]
    assert shard.shadow == {"refund_abuse"} and shard.episode_gap == 3 * 86_400.0
    combiner = CombineEngine.like(engine, count=2, fingerprint="fp")
    assert combiner.split == {"login_frequency", "refund_abuse"}
    assert combiner.shadow == engine.shadow and combiner.state.inbox.count == 2


def test_parts_given_with_another_event_are_refused():
    shard = ShardEngine(build(["login_frequency"]), index=0, count=1)
    combiner = CombineEngine(build(["login_frequency"]), split=["login_frequency"])
    failures = [make_event("login", account_id="a1", t=10.0 * i, success=False,
                           event_id=f"e{i}") for i in range(12)]
    parts = [p for n, e in enumerate(failures) for p in shard.process(e, n)]
    assert parts and parts[0].seq > 0
    with pytest.raises(ValueError, match="disagree on the order"):
        combiner.process(failures[0], 0, parts=parts[:1])


def batch(shard, since, through, *parts, count=2, fingerprint="fp"):
    return decode_batch(encode_batch(PartsBatch(
        shard=shard, count=count, fingerprint=fingerprint, since=since, through=through,
        parts=list(parts))))


def part(seq, key="acct:a1", position=0):
    return Part(seq, f"e{seq}", "login_frequency", position, key,
                Verdict(score=0.9, reasons=("why",), evidence={"n": (1, 2)}))


def test_the_inbox_takes_each_part_once_and_waits_for_every_shard():
    inbox = PartsInbox(2, "fp")
    inbox.add(batch(0, 0, 4, part(2), part(4)), offset=0)
    assert inbox.through() == 0  # shard 1 has said nothing
    inbox.add(batch(1, 0, 3, part(2, "ip:x", 1)), offset=0)
    assert inbox.through() == 3
    # shard 0 restarted from a checkpoint at event 1: what it sends again is dropped
    inbox.add(batch(0, 1, 6, part(2), part(4), part(6)), offset=1)
    assert [p.key for p in inbox.take(2)] == ["acct:a1", "ip:x"]
    assert [p.seq for p in inbox.take(4)] == [4] and [p.seq for p in inbox.take(6)] == [6]
    assert inbox.take(5) == [] and inbox.positions == [2, 1]
    # the verdict crossed the wire whole (tuples in evidence come back as lists, as in JSON)
    assert inbox.pending == {} and part(2).verdict.reasons == ("why",)


def test_the_inbox_refuses_a_gap_and_a_shard_of_another_lane():
    inbox = PartsInbox(2, "fp")
    inbox.add(batch(0, 0, 4), offset=0)
    with pytest.raises(ValueError, match="checkpoints disagree"):
        inbox.add(batch(0, 9, 12), offset=1)  # events 5-9 were never sent
    with pytest.raises(ValueError, match="same --key-shards"):
        inbox.add(batch(1, 0, 4, count=3), offset=0)
    with pytest.raises(ValueError, match="same --key-shards"):
        inbox.add(batch(1, 0, 4, fingerprint="other settings"), offset=0)
