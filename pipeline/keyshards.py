"""One detector's work split by key over several processes, with the one engine's flags.

A detector's ``score_one`` and ``learn_one`` read and write the state of one key (``acct:a1``,
``ip:198.51.100.7``, ``pop``), so its keys can be split over ``count`` shards by a stable
hash of the key, as Kafka Streams repartitions by key:

- a :class:`ShardEngine` sees every event, in the engine's order, with the same account
  profiles, de-duplication and sweeps, but scores and learns only the keys it owns, and hands
  out each verdict as a :class:`Part` (event, detector, the key's position among the event's
  keys, verdict);
- a :class:`CombineEngine` runs the whole engine, except that a split detector's verdict on an
  event is ``combine`` of the parts every shard gave for it, in key order: what
  :func:`detectors.base.step` computes in one place. Episodes, allow-lists and flags follow as
  in :class:`~pipeline.engine.Engine`, so the flags are the same, whatever the count.

Detectors with a second, read-only round (``probe_keys``: trial_cycling follows a ring one hop
through other keys' states) are not split: the combiner runs them whole.

In the streaming worker each shard and the combiner read the same sequenced log, whose order
of events is the log's own (:class:`~pipeline.sequencing.DetectionStage`), so they agree on
every event's ``seq``. A shard sends its parts as :class:`PartsBatch` es on the lane's parts
topic (partition = shard); the combiner's :class:`PartsInbox` keeps them until it reaches
their events, and an event is processed only once every shard has covered it.

Examples
--------
>>> from detectors import build
>>> from detectors.testing import make_event
>>> events = [make_event("login", account_id="a1", t=10.0 * i, success=False, event_id=f"e{i}")
...           for i in range(12)]
>>> shards = [ShardEngine(build(["login_frequency"]), index=i, count=2) for i in range(2)]
>>> parts = [part for n, event in enumerate(events) for shard in shards
...          for part in shard.process(event, n)]
>>> [sorted(shard.state.keyed["login_frequency"]) for shard in shards]  # the keys, split
[['dev:d-0', 'net:192.0.2', 'pop'], ['acct:a1', 'ip:192.0.2.1']]
>>> sorted({part.key for part in parts})  # the account's own key found the brute force
['acct:a1']
>>> combiner = CombineEngine(build(["login_frequency"]), split=["login_frequency"],
...                          clock=lambda: "2026-11-02T00:00:00.000Z")
>>> [f.reasons[0] for n, event in enumerate(events)
...  for f in combiner.process(event, n, parts=[p for p in parts if p.seq == n])]
['10 failed logins in 60 min (usual failure rate 5%)']
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from detectors.base import Detector, DetectorBase, Observation, Verdict, score_and_learn
from pipeline.engine import Engine, EngineState

__all__ = [
    "CombineEngine",
    "CombineState",
    "Part",
    "PartsBatch",
    "PartsInbox",
    "ShardEngine",
    "decode_batch",
    "encode_batch",
    "shard_of",
    "splittable",
]


def shard_of(key: str, count: int) -> int:
    """The shard that owns ``key``: stable across processes and runs (unlike ``hash``).

    >>> shard_of("ip:198.51.100.7", 4) == shard_of("ip:198.51.100.7", 4)
    True
    """
    return zlib.crc32(key.encode()) % count


def splittable(detector: Detector) -> bool:
    """Whether its keys can be scored apart: no second round reading other keys' states."""
    return getattr(type(detector), "probe_keys", None) is DetectorBase.probe_keys


class Part(msgspec.Struct, frozen=True, array_like=True):
    """One key's verdict on one event: the event's engine ``seq`` and id, the detector, the
    key (``position`` among the event's keys puts the verdicts back in order)."""

    seq: int
    event_id: str
    detector: str
    position: int
    key: str
    verdict: Verdict


class PartsBatch(msgspec.Struct, array_like=True, kw_only=True):
    """One shard's message on the parts topic: every part it found for the events
    ``since < seq <= through`` (none is a message too: it says the shard got that far)."""

    shard: int
    count: int
    fingerprint: str  # the detectors' and settings': a combiner only takes its own shards'
    since: int
    through: int
    parts: list[Part] = []


def encode_batch(batch: PartsBatch) -> bytes:
    return msgspec.msgpack.encode(batch)


def decode_batch(raw: bytes) -> PartsBatch:
    return msgspec.msgpack.decode(raw, type=PartsBatch)


class PartsInbox:
    """The combiner's side of the parts topic (checkpointed with the combiner's state).

    ``progress[i]``: shard ``i`` has covered every event up to this ``seq``; ``positions[i]``:
    the next offset to read of its partition (-1: from the start). A shard that restarts from
    its checkpoint sends what follows it again: what the inbox has already covered is
    dropped.

    >>> inbox = PartsInbox(2, "fp")
    >>> inbox.add(PartsBatch(shard=0, count=2, fingerprint="fp", since=0, through=5), offset=0)
    >>> inbox.through()  # shard 1 has said nothing yet
    0
    >>> inbox.add(PartsBatch(shard=1, count=2, fingerprint="fp", since=0, through=3), offset=0)
    >>> inbox.through(), inbox.positions
    (3, [1, 1])
    """

    def __init__(self, count: int, fingerprint: str) -> None:
        self.count = count
        self.fingerprint = fingerprint
        self.progress = [0] * count
        self.positions = [-1] * count
        self.pending: dict[int, list[Part]] = {}

    def add(self, batch: PartsBatch, *, offset: int) -> None:
        """Take one message of partition ``batch.shard`` (read at ``offset``)."""
        shard = batch.shard
        if (batch.count, batch.fingerprint) != (self.count, self.fingerprint) \
                or not 0 <= shard < self.count:
            raise ValueError(
                f"a parts message from shard {shard} of {batch.count} with detector "
                f"settings {batch.fingerprint!r}; this combiner has {self.count} shards and "
                f"{self.fingerprint!r}: run every worker of the lane with the same "
                "--key-shards and detector settings")
        if batch.since > self.progress[shard]:
            raise ValueError(
                f"shard {shard} resumes after event {batch.since}, but the combiner has its "
                f"parts only up to event {self.progress[shard]}: their checkpoints disagree "
                "(one was deleted or restored from elsewhere); delete the lane's checkpoints "
                "and parts topic to detect afresh")
        covered = self.progress[shard]
        for part in batch.parts:
            if part.seq > covered:
                self.pending.setdefault(part.seq, []).append(part)
        self.progress[shard] = max(covered, batch.through)
        self.positions[shard] = offset + 1

    def through(self) -> int:
        """Every shard has covered the events up to this ``seq``."""
        return min(self.progress)

    def take(self, seq: int) -> list[Part]:
        return self.pending.pop(seq, [])


class ShardEngine(Engine):
    """Profiles, de-duplication and sweeps for every event; score and learn only the keys of
    the split detectors this shard owns (``shard_of(key, count) == index``). ``process``
    returns the :class:`Part` s it found, never flags."""

    def __init__(self, detectors: Sequence[Detector], *, index: int, count: int,
                 **kwargs: Any) -> None:
        if not detectors:
            raise ValueError("a key shard needs a detector to split")
        if not 0 <= index < count:
            raise ValueError(f"shard index must be in [0, {count}), got {index}")
        unsplittable = [d.name for d in detectors if not splittable(d)]
        if unsplittable:
            raise ValueError(f"{unsplittable} read other keys' states (probe_keys): they run "
                             "whole, in the combiner, and cannot be split by key")
        super().__init__(detectors, **kwargs)
        self.index, self.count = index, count
        self._parts: list[Part] = []

    @classmethod
    def like(cls, engine: Engine, *, index: int, count: int) -> ShardEngine:
        """Shard ``index`` of ``count`` for ``engine``'s splittable detectors and settings."""
        detectors = [d for d in engine.detectors if splittable(d)]
        settings = {**engine.settings,
                    "shadow": engine.shadow & {d.name for d in detectors}}
        return cls(detectors, index=index, count=count, **settings)

    def process(self, event, seq: int = 0, *, t: float | None = None) -> list[Part]:
        self._parts = []
        super().process(event, seq, t=t)
        return self._parts

    def _verdict(self, detector: Detector, obs: Observation) -> Verdict | None:
        states = self.state.keyed[detector.name]
        for position, key in enumerate(detector.keys(obs)):
            if shard_of(key, self.count) != self.index:
                continue
            verdict = score_and_learn(detector, states, key, obs)
            if verdict is not None:
                self._parts.append(Part(obs.seq, obs.event.event_id, detector.name, position,
                                        key, verdict))
        return None  # the combiner combines


@dataclass
class CombineState(EngineState):
    """The engine's state and the parts not yet combined."""

    inbox: PartsInbox | None = None


class CombineEngine(Engine):
    """The engine, with the verdicts of the ``split`` detectors combined from the shards'
    parts: ``process(event, seq, parts=...)`` (every shard's parts for this event), or,
    without ``parts``, what ``state.inbox`` holds for ``seq``."""

    def __init__(self, detectors: Sequence[Detector], *, split: Iterable[str],
                 inbox: PartsInbox | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("state", CombineState(inbox=inbox))
        super().__init__(detectors, **kwargs)
        self.split = frozenset(split)
        unknown = self.split - {d.name for d in self.detectors}
        if unknown:
            raise ValueError(f"split names unknown detector(s) {sorted(unknown)}")
        cannot = [d.name for d in self.detectors if d.name in self.split and not splittable(d)]
        if cannot:
            raise ValueError(f"{cannot} read other keys' states (probe_keys) and cannot be "
                             "split by key")
        self._parts: dict[str, list[Part]] = {}

    @classmethod
    def like(cls, engine: Engine, *, count: int, fingerprint: str) -> CombineEngine:
        """The combiner of ``count`` shards for ``engine``'s detectors and settings."""
        split = [d.name for d in engine.detectors if splittable(d)]
        if not split:
            raise ValueError(f"none of {[d.name for d in engine.detectors]} can be split by "
                             "key (each reads other keys' states): --key-shards needs one")
        return cls(engine.detectors, split=split, inbox=PartsInbox(count, fingerprint),
                   **engine.settings)

    def process(self, event, seq: int = 0, *, t: float | None = None,
                parts: Iterable[Part] | None = None) -> list:
        if parts is None:
            parts = self.state.inbox.take(seq)
        by_detector: dict[str, list[Part]] = {}
        for part in parts:
            if part.seq != seq or part.event_id != event.event_id:
                raise ValueError(f"part for event {part.event_id} (seq {part.seq}) given "
                                 f"with event {event.event_id} (seq {seq}): the shards and "
                                 "the combiner disagree on the order of events")
            by_detector.setdefault(part.detector, []).append(part)
        self._parts = by_detector
        return super().process(event, seq, t=t)

    def _verdict(self, detector: Detector, obs: Observation) -> Verdict | None:
        if detector.name not in self.split:
            return super()._verdict(detector, obs)
        parts = self._parts.get(detector.name)
        if not parts:
            return None
        parts.sort(key=lambda part: part.position)
        return detector.combine(obs, [part.verdict for part in parts])
