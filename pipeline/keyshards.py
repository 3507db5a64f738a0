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
from typing import Any

import msgspec

from detectors.base import Detector, DetectorBase, Observation, Verdict
from pipeline.engine import Engine

__all__ = ["CombineEngine", "Part", "ShardEngine", "shard_of", "splittable"]


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
    verdict: Any  # a detectors.base.Verdict


class ShardEngine(Engine):
    """Profiles, de-duplication and sweeps for every event; score and learn only the keys of
    the split detectors this shard owns (``shard_of(key, count) == index``). ``process``
    returns the :class:`Part` s it found, never flags."""

    def __init__(self, detectors: Sequence[Detector], *, index: int, count: int,
                 **kwargs: Any) -> None:
        if not 0 <= index < count:
            raise ValueError(f"shard index must be in [0, {count}), got {index}")
        unsplittable = [d.name for d in detectors if not splittable(d)]
        if unsplittable:
            raise ValueError(f"{unsplittable} read other keys' states (probe_keys): they run "
                             "whole, in the combiner, and cannot be split by key")
        super().__init__(detectors, **kwargs)
        self.index, self.count = index, count
        self._parts: list[Part] = []

    def process(self, event, seq: int = 0, *, t: float | None = None) -> list[Part]:
        self._parts = []
        super().process(event, seq, t=t)
        return self._parts

    def _verdict(self, detector: Detector, obs: Observation) -> Verdict | None:
        states = self.state.keyed[detector.name]
        for position, key in enumerate(detector.keys(obs)):
            if shard_of(key, self.count) != self.index:
                continue
            state = states.get(key)
            if state is None:
                state = states[key] = detector.new_state(key)
            verdict = detector.score_one(state, obs)
            detector.learn_one(state, obs, verdict)
            if verdict is not None:
                self._parts.append(Part(obs.seq, obs.event.event_id, detector.name, position,
                                        key, verdict))
        return None  # the combiner combines


class CombineEngine(Engine):
    """The engine, with the verdicts of the ``split`` detectors combined from the shards'
    parts (``process(event, seq, parts=...)``: every shard's parts for this event)."""

    def __init__(self, detectors: Sequence[Detector], *, split: Iterable[str],
                 **kwargs: Any) -> None:
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

    def process(self, event, seq: int = 0, *, t: float | None = None,
                parts: Iterable[Part] = ()) -> list:
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
