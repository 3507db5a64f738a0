"""Checks every detector must pass, in the spirit of ``river/checks``.

``yield_checks(detector)`` yields check functions; ``tests/detectors/test_conformance.py``
runs each of them over every registered detector.
"""

from __future__ import annotations

import copy
import inspect
import pickle
import random
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from detectors.base import (
    DAY,
    Detector,
    Observation,
    Verdict,
    new_profile,
    probe,
    step,
    update_profile,
)
from detectors.testing import make_event

__all__ = ["sample_stream", "yield_checks"]


def sample_stream(seed: int = 7, days: int = 20) -> list[Any]:
    """Events with a bit of every abuse and ordinary noise, in time order (deterministic)."""
    rng = random.Random(seed)
    events = []
    for day in range(days):
        base = day * DAY
        for i in range(3):  # a trial ring on one device
            events.append(make_event("signup", account_id=f"ring{day}-{i}", t=base + 600 * i,
                                     device_id=f"dev-ring{day // 5}", email=f"r{day}x{i}@ex.com",
                                     ip=f"198.51.{day}.{i}", card_fingerprint=f"card-{day % 3}"))
        for i in range(8):  # one IP failing against many accounts
            events.append(make_event("login", account_id=f"victim{day}-{i}", t=base + 3600 + 60 * i,
                                     ip=f"203.0.113.{day}", device_id=f"bot{day}", success=False))
        cycle = base + 7200  # a refunder
        events.append(make_event("purchase", account_id="refunder", order_id=f"o{day}", t=cycle))
        events.append(make_event("usage", account_id="refunder", units=400.0, t=cycle + 60))
        events.append(make_event("refund", account_id="refunder", order_id=f"o{day}",
                                 t=cycle + 3600))
        for n in range(40):  # ordinary accounts
            account = f"user{rng.randrange(60)}"
            t = base + rng.uniform(10_000, 80_000)
            kind = rng.choice(["login", "login", "usage", "usage", "purchase"])
            fields = {"usage": {"units": rng.uniform(0, 5)},
                      "login": {"success": rng.random() > 0.05, "ip": f"192.0.2.{n}",
                                "device_id": f"d-{account}"}}.get(kind, {})
            events.append(make_event(kind, account_id=account, t=t, **fields))
    events.sort(key=lambda e: e.ts)
    return events


class _Driver:
    """Runs a detector the way the engine does, keeping profiles, with hooks for checks."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.states: dict[str, Any] = {}
        self.profiles: dict[str, Any] = {}

    def observe(self, seq: int, event) -> Observation:
        t = event.ts.timestamp()
        profile = self.profiles.setdefault(event.account_id, new_profile(t))
        return Observation(event=event, t=t, seq=seq, profile=profile)

    def run(self, events, *, on_key: Callable | None = None) -> list[tuple[int, Verdict]]:
        verdicts = []
        for seq, event in enumerate(events):
            obs = self.observe(seq, event)
            hook = on_key or (lambda driver, o: step(driver.detector, driver.states, o))
            verdict = hook(self, obs)
            update_profile(obs.profile, event, obs.t)
            if verdict is not None:
                verdicts.append((seq, verdict))
        return verdicts


def _fingerprint(verdicts: list[tuple[int, Verdict]]) -> list[tuple]:
    return [(seq, round(v.score, 9), v.reasons, v.related_accounts, v.also_flag)
            for seq, v in verdicts]


def check_event_types_declared(detector: Detector) -> None:
    """``keys`` is empty for event types outside ``event_types`` (the engine skips them)."""
    driver = _Driver(detector)
    for seq, event in enumerate(sample_stream(days=3)):
        obs = driver.observe(seq, event)
        if event.kind not in detector.event_types:
            assert not detector.keys(obs), f"{event.kind} has keys but is not declared"
        update_profile(obs.profile, event, obs.t)


def check_settings_are_keywords(detector: Detector) -> None:
    """Settings are keyword-only, have defaults and are stored under their own names."""
    params = list(inspect.signature(type(detector).__init__).parameters.values())[1:]
    for param in params:
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, f"{param.name} is not keyword-only"
        assert param.default is not inspect.Parameter.empty, f"{param.name} has no default"
        assert hasattr(detector, param.name), f"setting {param.name} is not stored"
    clone = type(detector)(**{p.name: getattr(detector, p.name) for p in params})
    assert repr(clone) == repr(detector)


def check_bad_settings_raise(detector: Detector) -> None:
    """A threshold outside [0, 1] is refused with a clear message."""
    try:
        type(detector)(threshold=1.5)
    except ValueError as error:
        assert "threshold" in str(error)
    else:
        raise AssertionError("threshold=1.5 was accepted")


def check_docstring_example(detector: Detector) -> None:
    """The module documents the detector with a runnable example."""
    module = inspect.getmodule(type(detector))
    assert module is not None and module.__doc__ and ">>>" in module.__doc__


def check_flags_something(detector: Detector) -> None:
    """On the sample stream the detector does find its kind of abuse."""
    assert _Driver(detector).run(sample_stream()), f"{detector.name} flagged nothing"


def check_verdicts_are_explained(detector: Detector) -> None:
    """Scores in [0, 1], reasons in words, JSON-able evidence, account ids as strings."""
    for _, verdict in _Driver(detector).run(sample_stream()):
        assert 0.0 <= verdict.score <= 1.0
        assert verdict.score >= detector.threshold
        assert verdict.reasons and all(isinstance(r, str) and r for r in verdict.reasons)
        msgspec.json.encode(verdict.evidence)
        assert all(isinstance(a, str) for a in (*verdict.related_accounts, *verdict.also_flag))
        assert verdict.severity in (None, "low", "medium", "high")


def check_score_one_is_pure(detector: Detector) -> None:
    """``score_one`` never changes state: only ``learn_one`` does."""

    def scored_twice(driver: _Driver, obs: Observation):
        for key in driver.detector.keys(obs):
            state = driver.states.setdefault(key, driver.detector.new_state(key))
            before = pickle.dumps(state)
            driver.detector.score_one(state, obs)
            assert pickle.dumps(state) == before, f"score_one changed the state of {key}"
        return step(driver.detector, driver.states, obs)

    _Driver(detector).run(sample_stream(days=6), on_key=scored_twice)


def check_deterministic(detector: Detector) -> None:
    """The same events give the same verdicts, from fresh detectors."""
    first = _Driver(detector).run(sample_stream())
    second = _Driver(copy.deepcopy(detector)).run(sample_stream())
    assert _fingerprint(first) == _fingerprint(second)


def check_key_order_irrelevant(detector: Detector) -> None:
    """Keys are scored independently (on different partitions when streaming)."""

    def reversed_keys(driver: _Driver, obs: Observation):
        keys = list(driver.detector.keys(obs))
        verdicts = []
        for key in reversed(keys):
            state = driver.states.setdefault(key, driver.detector.new_state(key))
            verdict = driver.detector.score_one(state, obs)
            driver.detector.learn_one(state, obs, verdict)
            if verdict is not None:
                verdicts.append(verdict)
        verdicts.reverse()
        if not verdicts:
            return None
        probed = probe(driver.detector, driver.states, obs, verdicts)
        return driver.detector.combine(obs, verdicts + probed)

    expected = _fingerprint(_Driver(detector).run(sample_stream()))
    assert _fingerprint(_Driver(detector).run(sample_stream(), on_key=reversed_keys)) == expected


def check_state_survives_pickle(detector: Detector) -> None:
    """State checkpointed half-way and restored gives the same verdicts as uninterrupted."""
    events = sample_stream()
    half = len(events) // 2
    straight = _Driver(detector).run(events)
    driver = _Driver(detector)
    first = driver.run(events[:half])
    restored = _Driver(detector)
    restored.states = pickle.loads(pickle.dumps(driver.states))
    restored.profiles = pickle.loads(pickle.dumps(driver.profiles))
    second = [(seq + half, v) for seq, v in restored.run(events[half:])]
    assert _fingerprint(first + second) == _fingerprint(straight)


def check_state_expires(detector: Detector) -> None:
    """By event time every state expires once its entity goes quiet long enough."""
    driver = _Driver(detector)
    events = sample_stream(days=8)
    driver.run(events)
    assert driver.states, "no state was created"
    later = events[-1].ts.timestamp() + 400 * DAY
    alive = [key for key, state in driver.states.items() if not detector.expired(state, later)]
    assert all(key == "pop" for key in alive), f"never expire: {alive[:5]}"


def check_state_bounded(detector: Detector) -> None:
    """One hot key (an IP, device or card hit by thousands of accounts) keeps bounded state."""
    driver = _Driver(detector)
    sizes = []
    for chunk in range(4):
        events = [
            make_event(kind, account_id=f"a{chunk}-{i}", t=chunk * 600 + i * 0.1,
                       **fields)
            for i in range(1500)
            for kind, fields in [("signup", {"device_id": "hot", "ip": "198.51.100.1",
                                             "card_fingerprint": "hot-card",
                                             "email": f"x{chunk}y{i}@ex.com"}),
                                 ("login", {"device_id": "hot", "ip": "198.51.100.1",
                                            "success": False}),
                                 ("purchase", {"order_id": f"o{chunk}-{i}"}),
                                 ("refund", {"order_id": f"o{chunk}-{i}"})]
        ]
        driver.run(events)
        sizes.append(max(len(pickle.dumps(s)) for s in driver.states.values()))
    assert sizes[-1] <= sizes[0] * 1.5 + 1024, f"state keeps growing: {sizes}"


CHECKS = [
    check_event_types_declared,
    check_settings_are_keywords,
    check_bad_settings_raise,
    check_docstring_example,
    check_flags_something,
    check_verdicts_are_explained,
    check_score_one_is_pure,
    check_deterministic,
    check_key_order_irrelevant,
    check_state_survives_pickle,
    check_state_expires,
    check_state_bounded,
]


def yield_checks(detector: Detector) -> Iterator[Callable[[Detector], None]]:
    yield from CHECKS
