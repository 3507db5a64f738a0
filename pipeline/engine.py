"""The detection engine: events in, flags out. Pure and synchronous.

All detection state lives in an :class:`EngineState` passed in (and checkpointable with
pickle); time comes only from event timestamps. The one impure input is ``clock``, which
stamps ``detected_at`` (processing time) on flags and is never read by detection.

Per event the engine: drops re-delivered events (same ``event_id``), runs every detector
(:func:`detectors.base.step`) against the account's context, folds the event into the account
profile, and turns verdicts into flags: one per account, detector and episode of abuse (a new
flag inside an episode only when the severity rises), allow-listed accounts never flagged,
shadow-mode detectors' flags marked ``mode="shadow"``.

Examples
--------
>>> from detectors import build
>>> from detectors.testing import make_event
>>> engine = Engine(build(["login_frequency"]), clock=lambda: "2026-11-02T00:00:00.000Z")
>>> flags = [f for i in range(12) for f in engine.process(
...     make_event("login", account_id="a1", t=10.0 * i, success=False, event_id=f"e{i}"))]
>>> [(f.account_id, f.severity, f.reasons[0]) for f in flags]
[('a1', 'low', '10 failed logins in 60 min (usual failure rate 5%)')]
>>> engine.process(make_event("login", account_id="a1", t=200.0, success=False, event_id="e3"))
[]
>>> engine.stats.duplicates
1
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from detectors.base import (
    DAY,
    HOUR,
    AccountProfile,
    Detector,
    Observation,
    Verdict,
    new_profile,
    step,
    update_profile,
)
from pipeline.allowlist import Allowlist
from schemas.events import EVENT_TYPES, Event
from schemas.flags import SEVERITY_RANK, Flag, severity_of

__all__ = ["Engine", "EngineState", "EngineStats", "flag_id", "format_ts", "utc_now"]



def format_ts(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """Processing time for ``detected_at`` (the edge's clock, never detection's)."""
    return format_ts(datetime.now(UTC))


def flag_id(detector: str, account_id: str, event_id: str) -> str:
    """Deterministic: the same detector, account and triggering event give the same id."""
    digest = hashlib.blake2b(f"{detector}\x1f{account_id}\x1f{event_id}".encode(), digest_size=16)
    return digest.hexdigest()


@dataclass
class EngineState:
    """Everything detection remembers; pickle it to checkpoint."""

    profiles: dict[str, AccountProfile] = field(default_factory=dict)
    keyed: dict[str, dict[str, Any]] = field(default_factory=dict)  # detector -> key -> state
    episodes: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    max_t: float = float("-inf")
    last_sweep_t: float = float("-inf")


@dataclass
class EngineStats:
    events: int = 0
    duplicates: int = 0
    flags: Counter = field(default_factory=Counter)  # (detector, severity) -> count
    suppressed_by_allowlist: int = 0
    repeats_in_episode: int = 0


class Engine:
    """Drive detectors over events and emit flags (see the module docstring).

    Parameters
    ----------
    detectors
        The detectors to run, e.g. ``detectors.build()``.
    state
        Detection state to resume from (a fresh one by default).
    episode_gap_days
        An account's verdicts of one detector belong to one episode until this long passes
        without one; a new episode flags again.
    dedupe_hours
        How long an account remembers event ids to drop re-deliveries.
    profile_ttl_days
        Account profiles unseen this long (in event time) are forgotten.
    sweep_hours
        How often (in event time) expired state is swept.
    shadow
        Names of detectors in shadow mode: their flags carry ``mode="shadow"``.
    allowlist
        Accounts and attributes never flagged.
    clock
        Returns processing time for ``detected_at``.
    """

    def __init__(
        self,
        detectors: Sequence[Detector],
        *,
        state: EngineState | None = None,
        episode_gap_days: float = 7.0,
        dedupe_hours: float = 24.0,
        profile_ttl_days: float = 180.0,
        sweep_hours: float = 12.0,
        shadow: Iterable[str] = (),
        allowlist: Allowlist | None = None,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        names = [d.name for d in detectors]
        if len(set(names)) != len(names):
            raise ValueError(f"detector names must be unique, got {names}")
        unknown = set(shadow) - set(names)
        if unknown:
            raise ValueError(f"shadow names unknown detector(s) {sorted(unknown)}")
        self.detectors = list(detectors)
        # Which detectors read which event type: most events (usage) skip them all.
        self._by_type = {kind: [d for d in self.detectors if kind in d.event_types]
                         for kind in EVENT_TYPES}
        self.state = state or EngineState()
        for name in names:
            self.state.keyed.setdefault(name, {})
        self.episode_gap = episode_gap_days * DAY
        self.dedupe_window = dedupe_hours * HOUR
        self.profile_ttl = profile_ttl_days * DAY
        self.sweep_every = sweep_hours * HOUR
        self.shadow = frozenset(shadow)
        self.allowlist = allowlist or Allowlist()
        self.clock = clock
        self.stats = EngineStats()
        # for an engine like this one (pipeline.keyshards): every setting but the state
        self.settings: dict[str, Any] = {
            "episode_gap_days": episode_gap_days, "dedupe_hours": dedupe_hours,
            "profile_ttl_days": profile_ttl_days, "sweep_hours": sweep_hours,
            "shadow": self.shadow, "allowlist": allowlist, "clock": clock}

    # -- the hot path -------------------------------------------------------------------
    def process(self, event: Event, seq: int = 0, *, t: float | None = None) -> list[Flag]:
        """Process one event; return the flags it raises (often none).

        ``t`` is ``event.ts.timestamp()`` when the caller has it already.
        """
        if t is None:
            t = event.ts.timestamp()
        state = self.state
        event_id = event.event_id
        profile = state.profiles.get(event.account_id)
        if profile is None:
            profile = state.profiles[event.account_id] = new_profile(t)
        elif event_id in profile.recent_ids:
            self.stats.duplicates += 1
            return []
        self.stats.events += 1
        ids = profile.recent_ids
        ids[event_id] = t
        # A busy account's ids are trimmed once its oldest is two windows old, not on every
        # event past 256: that rebuilt the whole dict per event (a quarter of the engine's
        # time on traffic with scripts). Amortised: one rebuild per window of events.
        if len(ids) > 256 and next(iter(ids.values())) < t - 2 * self.dedupe_window:
            since = t - self.dedupe_window
            profile.recent_ids = {k: v for k, v in ids.items() if v >= since}
        if t > state.max_t:
            state.max_t = t
            if t - state.last_sweep_t >= self.sweep_every:
                self.sweep(t)
        detectors = self._by_type[event.kind]
        if not detectors:
            update_profile(profile, event, t)
            return []
        flags: list[Flag] = []
        obs = Observation(event=event, t=t, seq=seq, profile=profile)
        for detector in detectors:
            verdict = self._verdict(detector, obs)
            if verdict is not None:
                flags.extend(self._flags(detector.name, obs, verdict))
        update_profile(profile, event, t)
        return flags

    def _verdict(self, detector: Detector, obs: Observation) -> Verdict | None:
        """One detector's verdict on one event (:mod:`pipeline.keyshards` splits this)."""
        return step(detector, self.state.keyed[detector.name], obs)

    def process_many(self, events: Iterable[Event]) -> list[Flag]:
        return [flag for seq, event in enumerate(events) for flag in self.process(event, seq)]

    # -- verdicts to flags --------------------------------------------------------------
    def _flags(self, detector: str, obs: Observation, verdict: Verdict) -> list[Flag]:
        flags = []
        subjects = [(obs.account_id, obs.profile, verdict)] if verdict.flag_account else []
        subjects += [(account, self.state.profiles.get(account), verdict.naming(account))
                     for account in verdict.also_flag]
        for account, profile, reason in subjects:
            severity = reason.severity or severity_of(reason.score)
            if not self._opens_or_raises(detector, account, obs.t, severity):
                self.stats.repeats_in_episode += 1
                continue
            if self.allowlist and self._allowed(account, profile, obs, reason):
                self.stats.suppressed_by_allowlist += 1
                continue
            flags.append(self._flag(detector, account, obs, reason, severity))
            self.stats.flags[detector, severity] += 1
        return flags

    def _allowed(self, account: str, profile: AccountProfile | None, obs: Observation,
                 verdict: Verdict) -> bool:
        """Allow-listed: the account, its profile, or the event the evidence rests on (its
        own, or the one that implicated it with the same IP, device or card; not a
        bystander's that only revealed it)."""
        own = account == obs.account_id
        if self.allowlist.reason(account, profile, obs.event if own else None):
            return True
        return not own and verdict.flag_account and \
            self.allowlist.event_reason(obs.event) is not None

    def _opens_or_raises(self, detector: str, account: str, t: float, severity: str) -> bool:
        """Episode gate: flag when an episode opens, or when its severity rises."""
        rank = SEVERITY_RANK[severity]
        episode = self.state.episodes.get((detector, account))
        if episode is None or t - episode[0] > self.episode_gap:
            self.state.episodes[detector, account] = [t, rank]
            return True
        episode[0] = max(episode[0], t)
        if rank > episode[1]:
            episode[1] = rank
            return True
        return False

    def _flag(self, detector: str, account: str, obs: Observation, verdict: Verdict,
              severity: str) -> Flag:
        event = obs.event
        related = [a for a in verdict.related_accounts
                   if a != account and not (self.allowlist and self.allowlist.reason(
                       a, self.state.profiles.get(a)))]
        evidence = {**verdict.evidence, "event_id": event.event_id, "event_type": event.kind}
        reasons = list(verdict.reasons)
        if account != event.account_id and verdict.flag_account:
            evidence["triggering_account"] = event.account_id
            related = [event.account_id, *(a for a in related if a != event.account_id)]
        return Flag(
            flag_id=flag_id(detector, account, event.event_id),
            account_id=account,
            detector=detector,
            score=float(min(1.0, max(0.0, verdict.score))),
            severity=severity,  # type: ignore[arg-type]
            ts=format_ts(event.ts),
            detected_at=self.clock(),
            reasons=reasons,
            evidence=evidence,
            related_accounts=related,
            mode="shadow" if detector in self.shadow else "enforce",
        )

    # -- bounded memory -----------------------------------------------------------------
    def sweep(self, now: float) -> int:
        """Forget state that expired by event time ``now``; return how many entries went."""
        state = self.state
        state.last_sweep_t = now
        dropped = 0
        for detector in self.detectors:
            states = state.keyed[detector.name]
            expired = detector.expired
            stale = [key for key, value in states.items() if expired(value, now)]
            for key in stale:
                del states[key]
            dropped += len(stale)
        horizon = now - self.profile_ttl
        old = [a for a, p in state.profiles.items() if p.last_t < horizon]
        for account in old:
            del state.profiles[account]
        since = now - self.dedupe_window  # ids older than the window cannot be re-delivered
        for profile in state.profiles.values():
            ids = profile.recent_ids
            if ids and next(iter(ids.values())) < since:
                profile.recent_ids = {k: v for k, v in ids.items() if v >= since}
        horizon = now - self.episode_gap
        ended = [k for k, e in state.episodes.items() if e[0] < horizon]
        for key in ended:
            del state.episodes[key]
        return dropped + len(old) + len(ended)
