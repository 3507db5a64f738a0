"""The detector protocol, in River's spirit, and the types detectors read and return.

A detector keeps its settings; the per-entity state it reads and writes is passed in, so one
detector serves millions of entities and its state can be checkpointed or moved between
workers. For each event the engine asks ``keys(obs)`` which states it touches, then for each
key calls ``score_one`` (pure) before ``learn_one`` (the only place state changes), and
finally ``combine`` turns the per-key verdicts into at most one verdict for the event.

Keys are how detection splits: a key such as ``dev:d-91`` gathers the accounts that used one
device, wherever those accounts are partitioned, and each key's state is read and written by
its own ``score_one`` and ``learn_one`` only. So :mod:`pipeline.keyshards` can split a
detector's keys over shards (each scores and learns the keys it owns, a combiner combines),
as Kafka Streams repartitions by key, with the flags of one engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec

from detectors.linking import subnet24
from schemas.events import Event

__all__ = [
    "AccountProfile",
    "Detector",
    "DetectorBase",
    "Observation",
    "SlotState",
    "Verdict",
    "is_stranger",
    "merge",
    "new_profile",
    "probe",
    "score_and_learn",
    "step",
    "update_profile",
]

DAY = 86_400.0
HOUR = 3_600.0


class AccountProfile(msgspec.Struct, kw_only=True):
    """What the engine knows of one account before the current event (bounded, picklable).

    ``signup_*`` fields stay ``None`` for accounts created before the stream began.
    """

    first_t: float
    last_t: float
    signup_t: float | None = None
    plan: str | None = None
    email: str | None = None
    device_id: str | None = None
    card: str | None = None
    signup_ip: str | None = None
    converted: bool = False
    units_total: float = 0.0
    purchases: int = 0
    refunds: int = 0
    # order_id -> (purchase time, amount, units_total at purchase); the most recent few.
    orders: dict[str, tuple[float, float, float]] = msgspec.field(default_factory=dict)
    # event_id -> event time, for de-duplicating re-delivered events.
    recent_ids: dict[str, float] = msgspec.field(default_factory=dict)
    # The devices, /24s and countries the account's owner used (signup, successful logins)
    # -> last time, the most recent few: a login from neither device nor /24 is a stranger's.
    known_devices: dict[str, float] = msgspec.field(default_factory=dict)
    known_nets: dict[str, float] = msgspec.field(default_factory=dict)
    known_countries: dict[str, float] = msgspec.field(default_factory=dict)


def new_profile(t: float) -> AccountProfile:
    return AccountProfile(first_t=t, last_t=t)


MAX_KNOWN = 8  # devices and /24s remembered per account


def update_profile(
    profile: AccountProfile, event: Event, t: float, *, max_orders: int = 16
) -> None:
    """Fold one event into the account's context (after the detectors have seen it)."""
    if t > profile.last_t:
        profile.last_t = t
    kind = event.kind
    if kind == "usage":
        profile.units_total += event.units
    elif kind == "login":
        if event.success:
            _remember(profile, event, t)
    elif kind == "signup":
        profile.signup_t, profile.plan, profile.email = t, event.plan, event.email
        profile.device_id, profile.card, profile.signup_ip = (
            event.device_id, event.card_fingerprint, event.ip)
        profile.converted = profile.converted or event.plan == "paid"
        _remember(profile, event, t)
    elif kind == "purchase":
        profile.purchases += 1
        profile.converted = True
        profile.orders[event.order_id] = (t, event.amount, profile.units_total)
        if len(profile.orders) > max_orders:
            del profile.orders[next(iter(profile.orders))]
    elif kind == "refund":
        profile.refunds += 1


def _remember(profile: AccountProfile, event: Event, t: float) -> None:
    """The owner used this device and network: most recent last, the oldest forgotten."""
    for known, value in ((profile.known_devices, event.device_id),
                         (profile.known_nets, subnet24(event.ip) or event.ip),
                         (profile.known_countries, event.country)):
        if value is None:
            continue
        known.pop(value, None)
        known[value] = t
        if len(known) > MAX_KNOWN:
            del known[next(iter(known))]


def is_stranger(profile: AccountProfile, device_id: str, ip: str) -> bool:
    """A login from a device and a /24 the account's owner never used, on an account whose
    owner was seen (a first login tells nothing).

    >>> from detectors.testing import make_event
    >>> profile = new_profile(0.0)
    >>> update_profile(profile, make_event("login", device_id="d1", ip="198.51.100.7"), 0.0)
    >>> [is_stranger(profile, d, ip) for d, ip in
    ...  [("d1", "203.0.113.5"), ("d2", "198.51.100.99"), ("d2", "203.0.113.5")]]
    [False, False, True]
    """
    return bool(profile.known_devices) and device_id not in profile.known_devices \
        and (subnet24(ip) or ip) not in profile.known_nets


@dataclass(slots=True)
class Observation:
    """One event as detectors see it: the event, its time, and the account's context."""

    event: Event
    t: float  # event time in epoch seconds (from ``ts``, never the wall clock)
    seq: int  # position in its stream: breaks ties between events with the same ``t``
    profile: AccountProfile

    @property
    def account_id(self) -> str:
        return self.event.account_id


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a detector concludes about one event.

    ``related_accounts`` are the other accounts the evidence ties to this one (a trial ring);
    ``also_flag`` are accounts that the same evidence implicates and that should be flagged
    too (earlier victims of one credential-stuffing IP, earlier refunders of one card).
    ``flag_account`` is False when the evidence implicates only those: the event that
    revealed it belongs to a bystander. ``parts`` are the verdicts a merged one came from.
    """

    score: float
    reasons: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)
    related_accounts: tuple[str, ...] = ()
    also_flag: tuple[str, ...] = ()
    severity: str | None = None  # None: derived from the score
    flag_account: bool = True
    parts: tuple[Verdict, ...] = ()

    def naming(self, account: str) -> Verdict:
        """The verdict (of those merged) whose ``also_flag`` names ``account``."""
        return next((p for p in self.parts if account in p.also_flag), self)


@runtime_checkable
class Detector(Protocol):
    """The protocol every detector follows (see the module docstring)."""

    name: str
    threshold: float
    event_types: frozenset[str]  # the only event types whose keys() can be non-empty

    def keys(self, obs: Observation) -> Sequence[str]: ...
    def new_state(self, key: str) -> Any: ...
    def score_one(self, state: Any, obs: Observation) -> Verdict | None: ...
    def learn_one(self, state: Any, obs: Observation, verdict: Verdict | None) -> None: ...
    def combine(self, obs: Observation, verdicts: list[Verdict]) -> Verdict | None: ...
    def expired(self, state: Any, now: float) -> bool: ...
    def probe_keys(self, obs: Observation, verdicts: list[Verdict]) -> Sequence[str]: ...
    def probe_one(self, state: Any, obs: Observation) -> Verdict | None: ...


class DetectorBase:
    """Shared behaviour: keyword settings, their repr, and a max-score ``combine``.

    Subclasses set ``name`` and store every ``__init__`` keyword under the same name, as
    River estimators do, so ``clone()`` and ``repr`` work.
    """

    name: ClassVar[str] = ""
    threshold: float = 0.5
    event_types: ClassVar[frozenset[str]] = frozenset(
        {"signup", "login", "usage", "purchase", "refund"})

    def _settings(self) -> dict[str, Any]:
        import inspect

        params = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name in params if name != "self"}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({args})"

    def clone(self, **overrides: Any) -> DetectorBase:
        """A fresh detector with the same settings, some of them replaced."""
        return type(self)(**{**self._settings(), **overrides})

    def probe_keys(self, obs: Observation, verdicts: list[Verdict]) -> Sequence[str]:
        """Keys to read (never write) in a second round, after the first round's verdicts.

        Most detectors need none; trial_cycling reads the keys of the accounts it linked to,
        to follow a ring one hop further.
        """
        return ()

    def probe_one(self, state: Any, obs: Observation) -> Verdict | None:
        """Read one probed key's state for ``obs`` (pure, like ``score_one``)."""
        return None

    def combine(self, obs: Observation, verdicts: list[Verdict]) -> Verdict | None:
        """Merge the per-key verdicts that reach the threshold (see :func:`merge`)."""
        kept = [v for v in verdicts if v.score >= self.threshold]
        return merge(kept) if kept else None


class SlotState:
    """Base for per-key states with ``__slots__``: picklable, for checkpoints."""

    __slots__ = ()

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __setstate__(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, name, value)


def merge(verdicts: list[Verdict]) -> Verdict:
    """One verdict from several: the highest score leads; reasons and accounts are unioned.

    Verdicts about other accounts only (``flag_account=False``) lend just their ``also_flag``
    accounts; ``parts`` keeps every verdict, so that each account is flagged with the reasons
    of the verdict that named it.
    """
    kept = sorted(verdicts, key=lambda v: -v.score)
    own = [v for v in kept if v.flag_account] or kept
    # merged verdicts merged again keep their parts, not themselves: a part names accounts
    # with its own reasons only
    parts = sorted((p for v in kept for p in (v.parts or (v,))), key=lambda v: -v.score)
    return Verdict(
        score=own[0].score,
        reasons=_unique(r for v in own for r in v.reasons),
        evidence=_merge_evidence(own),
        related_accounts=_unique(a for v in own for a in v.related_accounts),
        also_flag=_unique(a for v in kept for a in v.also_flag),
        severity=own[0].severity,
        flag_account=own[0].flag_account,
        parts=tuple(parts) if len(parts) > 1 else (),
    )


def _unique(items) -> tuple:
    return tuple(dict.fromkeys(items))


def _merge_evidence(verdicts: list[Verdict]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for verdict in verdicts:
        for key, value in verdict.evidence.items():
            merged.setdefault(key, value)
    return merged


def check_positive(**values: float) -> None:
    """Raise a clear ``ValueError`` for settings that must be positive."""
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")


def check_unit_interval(**values: float) -> None:
    """Raise a clear ``ValueError`` for settings that must lie in [0, 1]."""
    for name, value in values.items():
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def step(detector: Detector, states: dict[str, Any], obs: Observation) -> Verdict | None:
    """Run one observation through one detector: every key scored, then learned, then combined.

    ``states`` maps key -> state for this detector. :mod:`pipeline.keyshards` runs the loop
    body on the shard that owns each key and ``combine`` in the combiner; this is the same
    computation in one place.
    """
    keys = detector.keys(obs)
    if not keys:
        return None
    verdicts = []
    for key in keys:
        verdict = score_and_learn(detector, states, key, obs)
        if verdict is not None:
            verdicts.append(verdict)
    if not verdicts:
        return None
    return detector.combine(obs, verdicts + probe(detector, states, obs, verdicts))


def score_and_learn(detector: Detector, states: dict[str, Any], key: str,
                    obs: Observation) -> Verdict | None:
    """One key of one observation: its state (new if unseen) scored, then learned from."""
    state = states.get(key)
    if state is None:
        state = states[key] = detector.new_state(key)
    verdict = detector.score_one(state, obs)
    detector.learn_one(state, obs, verdict)
    return verdict


def probe(detector: Detector, states: dict[str, Any], obs: Observation,
          verdicts: list[Verdict]) -> list[Verdict]:
    """The optional second, read-only round: verdicts from the keys ``probe_keys`` names."""
    found = []
    for key in detector.probe_keys(obs, verdicts):
        state = states.get(key)
        if state is not None and (verdict := detector.probe_one(state, obs)) is not None:
            found.append(verdict)
    return found
