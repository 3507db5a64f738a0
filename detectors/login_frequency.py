"""Login abuse: credential stuffing, brute force, account sharing, scripted logins.

Logins are seen from five sides, each a key with its own bounded state:

- ``ip:`` / ``dev:`` / ``net:`` keys see attempts against many accounts. One IP or device
  failing against many distinct accounts within hours (a /24 against three times as many),
  mostly failing, is credential stuffing: every account it hit is flagged, and a success from
  it on a device the account never used (a likely takeover) too; the owner at home on their
  own device next to the attack is not one. An office NAT has many accounts too, but mostly
  successful logins. Scripts (an HTTP library or a headless browser for user agent) also
  count on a ``bot:`` key per /24, which needs only as many accounts as one IP: a script's
  failure is nobody's mistype, so what makes a busy /24 need more does not apply to them.
- ``acct:`` keys keep a per-account baseline learned online with River: the account's usual
  failure rate (``proba.Beta`` with a prior, never learned from flagged events) scales the
  brute-force threshold; the rolling mean and variance of the gaps between logins
  (``utils.Rolling``) expose machine-regular, scripted logins, even with the owner's own
  logins in between (a few gaps set aside); the devices and countries of
  recent successful logins, with the travel speed between countries, expose shared accounts.
- the ``pop`` key sees every login, for stuffing spread over rotating proxies and device
  fingerprints, which no IP, device or /24 gathers: failures by *strangers* (a device and
  /24 the account's owner never used) on accounts the owner then does not get into, far more
  of them than the usual hour brings (learned online), each unlike the owner (a country the
  owner never logged in from, or several unknown devices). An account with no history yet is
  judged when its owner's first login shows where the owner is; a stranger who gets in during
  an attack, even at the first try and before the attack is recognised, is a takeover.

Examples
--------
>>> from detectors.testing import make_observation, run
>>> attempts = [make_observation("login", account_id=f"victim{i}", ip="203.0.113.9",
...     device_id=f"d{i}", success=False, t=30.0 * i) for i in range(8)]
>>> flagged = list(run(LoginFrequency(), attempts))
>>> flagged[0][0], flagged[0][1].also_flag
('victim4', ('victim0', 'victim1', 'victim2', 'victim3'))
>>> flagged[0][1].reasons[0]
'IP 203.0.113.9 failed logins against 5 accounts in 6 h (100% of its attempts failed)'
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from itertools import pairwise
from typing import NamedTuple

from river import proba, stats, utils

from detectors.agents import is_automated
from detectors.base import (
    DAY,
    HOUR,
    DetectorBase,
    Observation,
    SlotState,
    Verdict,
    check_positive,
    check_unit_interval,
    is_stranger,
    merge,
)
from detectors.geo import distance_km
from detectors.linking import subnet24
from schemas.flags import severity_of

__all__ = ["LoginFrequency"]

PRIOR_FAILURE_RATE = 1 / 20
_ENTITY = {"ip": "IP {}", "dev": "device {}", "net": "subnet {}.0/24",
           "bot": "automated clients on subnet {}.0/24"}
_NONE: dict[str, int] = {}  # read-only: no attempt left the window
# A /24 needs this many times the accounts of one IP or device: over hours a busy subnet
# gathers strangers who failed once and logged in elsewhere.
SUBNET_FACTOR = 3
SLOW_FACTOR = 2  # failures on one account over the slow window, against the fast window's
# The usual hourly count of accounts failed by strangers: the median of the last two days'
# hours. An attack shorter than a day does not move it; a lasting change of habits does.
USUAL_HOURS = 48
STRANGERS_KEY = "pop"
# What set a spread attack's victim apart from its owner, by what followed the failures.
_OUTCOME = {
    "tried": "this account's attempts came from a country its owner never logged in from, or "
             "from several unknown devices: not the owner on a new one",
    "got_in": "a stranger then got in from another device: likely takeover",
    "first_try": "a stranger got in at the first try, on an unknown device and from a country "
                 "the owner never logged in from, while the attack was on: likely takeover",
}
TRAVEL_MIN_DEVICES = 3  # impossible trips count as sharing from this many devices
# Gaps set aside when judging a rhythm: one login of the owner's beside a script splits one of
# its gaps into two others.
SCRIPTED_OUTLIERS = 2


class EntityState(SlotState):
    """Recent attempts on one IP, device or subnet (or scripts on one), with running counts.

    ``attempts`` holds ``(t, account, success)`` in time order, at most ``MAX_ATTEMPTS``;
    ``failures`` and ``failed_by`` count its failures and ``ok_by`` its successes per account,
    so scoring a login costs O(1) even on a busy office NAT. ``entered`` holds when strangers
    (a device and /24 the owner never used) got into an account from here: takeovers at the
    first try, once the attack is recognised.
    """

    MAX_ATTEMPTS = 1024
    __slots__ = ("attempts", "entered", "failed_by", "failures", "key", "ok_by", "reported")

    def __init__(self, key: str) -> None:
        self.key = key
        self.attempts: deque[tuple[float, str, bool]] = deque()
        self.failures = 0
        self.failed_by: dict[str, int] = {}
        self.ok_by: dict[str, int] = {}
        self.reported: dict[str, float] = {}
        self.entered: dict[str, float] = {}  # oldest first

    def evict_oldest(self) -> None:
        _, account, success = self.attempts.popleft()
        if success:
            left = self.ok_by[account] - 1
            if left:
                self.ok_by[account] = left
            else:
                del self.ok_by[account]
        else:
            self.failures -= 1
            left = self.failed_by[account] - 1
            if left:
                self.failed_by[account] = left
            else:
                del self.failed_by[account]



class AccountState(SlotState):
    """One account's recent logins and its learned baselines."""

    __slots__ = ("failure_rate", "folded_t", "gaps", "key", "last_t", "logins", "n_gaps",
                 "unknown_failures")

    def __init__(self, key: str, window: int) -> None:
        self.key = key
        # (t, success, device, country, flagged), the last ``sharing_window_hours``
        self.logins: deque[tuple[float, bool, str, str | None, bool]] = deque(maxlen=256)
        # the usual share of failed logins, with a prior of about 1 in 20 so that one early
        # mistype does not read as "this account always fails"
        self.failure_rate = proba.Beta(1, 19)  # mean 1/20 = PRIOR_FAILURE_RATE
        self.folded_t = float("-inf")  # logins up to here are in ``failure_rate``
        # rolling variance of the gaps between logins; its ``obj.mean`` is their rolling mean
        self.gaps = utils.Rolling(stats.Var, window_size=window)
        self.n_gaps = 0
        self.last_t: float | None = None
        # failures in a row from devices the owner never used, since the last success
        self.unknown_failures = 0

    def __getstate__(self) -> dict:
        # proba.Beta carries a random.Random (2.5 kB pickled) for sampling, which is never
        # used here: checkpoint its two parameters instead
        state = super().__getstate__()
        state["failure_rate"] = (self.failure_rate.alpha, self.failure_rate.beta)
        return state

    def __setstate__(self, values: dict) -> None:
        super().__setstate__(values)
        alpha, beta = values["failure_rate"]
        self.failure_rate = proba.Beta(alpha, beta)



class StrangerFailure(NamedTuple):
    """An account's first failed login by a stranger in the window, and what followed."""

    t: float
    device: str
    unlike_owner: bool  # from a country the owner never used, or a second unknown device
    got_in: bool  # a stranger got in since
    country: str | None = None  # where the failure came from


class Attack(NamedTuple):
    """A recognised spread attack: from its first flagged victim's failure to its last."""

    start: float
    end: float
    accounts: int  # accounts failed by strangers in the window when it was last seen


class StrangerState(SlotState):
    """Across every account (key ``pop``): failed logins by strangers, and how many is usual.

    A *stranger's* attempt comes from a device and a /24 the account's owner never used
    (:func:`~detectors.base.is_stranger`). ``pending`` holds, per account, its first stranger
    failure in the window not since explained by the owner getting in (the owner on a new
    phone fails, then succeeds from it or from the same country), and what sets it apart from
    the owner: a country the owner never logged in from, a second unknown device, a stranger
    getting in. ``hourly`` learns how many accounts a usual hour brings.

    An account never seen before has no owner to be a stranger to: its failures wait in
    ``unseen`` until the owner's first login says who the owner is. ``attacks`` remembers the
    recognised attacks, so a failure that turns out to be a stranger's is judged against the
    attack it fell in, even days later. ``first_try`` holds strangers who got in without
    failing, from a country the owner never used: takeovers, should an attack be on.
    """

    MAX_PENDING = 4096
    MAX_ATTACKS = 64
    __slots__ = ("attacks", "first_try", "hour", "hour_accounts", "hourly", "key", "pending",
                 "per_hour", "reported", "unseen")

    def __init__(self, key: str) -> None:
        self.key = key
        self.pending: dict[str, StrangerFailure] = {}  # oldest first
        self.unseen: dict[str, StrangerFailure] = {}  # oldest first
        self.first_try: dict[str, StrangerFailure] = {}  # oldest first
        self.attacks: list[Attack] = []  # oldest first
        self.hourly = stats.RollingQuantile(q=0.5, window_size=USUAL_HOURS)
        self.per_hour = 0.0  # ``hourly``'s median, read once an hour rather than every login
        self.hour: int | None = None  # the hour being counted (event time // 3600)
        self.hour_accounts = 0
        self.reported: dict[str, float] = {}

    def usual(self, hours: float) -> float:
        """Accounts with stranger failures expected in ``hours``."""
        return self.per_hour * hours

    def attack_at(self, t: float, slack: float) -> Attack | None:
        """The recognised attack ``t`` fell in, if any."""
        for attack in reversed(self.attacks):
            if attack.start - slack <= t <= attack.end + slack:
                return attack
        return None


class LoginFrequency(DetectorBase):
    """Flag credential stuffing, brute force, shared accounts and scripted logins.

    Parameters
    ----------
    window_minutes
        Window for failures per account (brute force).
    slow_window_minutes
        Window for slow attacks, a few attempts an hour, which one hour would not gather:
        failures per IP, device and /24 (stuffing), and per account at twice the count
        (brute force).
    stuffing_min_accounts
        Distinct accounts one IP or device must fail against (three times that for a /24).
    stuffing_min_failure_ratio
        Share of the entity's attempts that failed, so a busy office NAT stays quiet.
    spread_min_accounts
        Accounts failed by strangers (a device and /24 the owner never used) within the slow
        window, at the least, that make an attack spread over many IPs and devices; more
        where the usual count, learned per hour, is higher.
    spread_settle_minutes
        Time the owner has to get in after such a failure (a new phone, a mistype) before the
        account counts as a stranger's target.
    spread_recall_days
        How long a recognised attack is remembered: a failure in it on an account never seen
        before is flagged when the owner's first login, up to this long after, comes from
        another device and country.
    brute_force_min_failures
        Failures on one account in the window, for an account that rarely fails.
    brute_force_streak, brute_force_streak_hours
        Failures in a row, none succeeding, from devices the owner never used, within this
        many hours: brute force too slow for the windows above (a few attempts an hour).
    sharing_window_hours, sharing_min_devices, sharing_min_countries
        Distinct devices and countries of successful logins that make a shared account.
    max_speed_kmh
        Faster travel between two successful logins is impossible travel.
    scripted_intervals, scripted_max_cv
        Gaps between logins compared, and their coefficient of variation below which the
        rhythm is a machine's (over all of them, or over all but ``SCRIPTED_OUTLIERS`` when
        the others lie within ``scripted_max_cv`` of their median).
    threshold
        Score at which a verdict becomes a flag.
    """

    name = "login_frequency"
    event_types = frozenset({"login"})

    def __init__(
        self,
        *,
        window_minutes: float = 60.0,
        slow_window_minutes: float = 360.0,
        stuffing_min_accounts: int = 5,
        stuffing_min_failure_ratio: float = 0.6,
        spread_min_accounts: int = 8,
        spread_settle_minutes: float = 10.0,
        spread_recall_days: float = 7.0,
        brute_force_min_failures: int = 10,
        brute_force_streak: int = 30,
        brute_force_streak_hours: float = 48.0,
        sharing_window_hours: float = 48.0,
        sharing_min_devices: int = 4,
        sharing_min_countries: int = 3,
        max_speed_kmh: float = 900.0,
        scripted_intervals: int = 16,
        scripted_max_cv: float = 0.1,
        threshold: float = 0.6,
    ) -> None:
        check_positive(
            window_minutes=window_minutes, slow_window_minutes=slow_window_minutes,
            stuffing_min_accounts=stuffing_min_accounts, spread_min_accounts=spread_min_accounts,
            spread_settle_minutes=spread_settle_minutes, spread_recall_days=spread_recall_days,
            brute_force_min_failures=brute_force_min_failures,
            brute_force_streak=brute_force_streak,
            brute_force_streak_hours=brute_force_streak_hours,
            sharing_window_hours=sharing_window_hours, sharing_min_devices=sharing_min_devices,
            sharing_min_countries=sharing_min_countries, max_speed_kmh=max_speed_kmh,
            scripted_intervals=scripted_intervals, scripted_max_cv=scripted_max_cv,
        )
        check_unit_interval(stuffing_min_failure_ratio=stuffing_min_failure_ratio,
                            threshold=threshold)
        self.window_minutes = window_minutes
        self.slow_window_minutes = slow_window_minutes
        self.stuffing_min_accounts = stuffing_min_accounts
        self.stuffing_min_failure_ratio = stuffing_min_failure_ratio
        self.spread_min_accounts = spread_min_accounts
        self.spread_settle_minutes = spread_settle_minutes
        self.spread_recall_days = spread_recall_days
        self.brute_force_min_failures = brute_force_min_failures
        self.brute_force_streak = brute_force_streak
        self.brute_force_streak_hours = brute_force_streak_hours
        self.sharing_window_hours = sharing_window_hours
        self.sharing_min_devices = sharing_min_devices
        self.sharing_min_countries = sharing_min_countries
        self.max_speed_kmh = max_speed_kmh
        self.scripted_intervals = scripted_intervals
        self.scripted_max_cv = scripted_max_cv
        self.threshold = threshold

    @property
    def _slow_seconds(self) -> float:
        return self.slow_window_minutes * 60

    # -- protocol -----------------------------------------------------------------------
    def keys(self, obs: Observation) -> Sequence[str]:
        event = obs.event
        if event.kind != "login":
            return ()
        keys = [f"acct:{event.account_id}", f"ip:{event.ip}", f"dev:{event.device_id}",
                STRANGERS_KEY]
        net = subnet24(event.ip)
        if net:
            keys.append(f"net:{net}")
            if is_automated(event.user_agent):
                keys.append(f"bot:{net}")
        return keys

    def new_state(self, key: str) -> EntityState | AccountState | StrangerState:
        if key.startswith("acct:"):
            return AccountState(key, self.scripted_intervals)
        if key == STRANGERS_KEY:
            return StrangerState(key)
        return EntityState(key)

    def expired(self, state: EntityState | AccountState, now: float) -> bool:
        if state.__class__ is EntityState:  # the many: checked on every sweep
            attempts = state.attempts
            return not attempts or attempts[-1][0] < now - self._slow_seconds
        if state.__class__ is StrangerState:
            return False  # one for the whole population, like refund_abuse's
        horizon = max(self.sharing_window_hours * HOUR, 30 * 24 * HOUR)
        return state.last_t is None or state.last_t < now - horizon

    def score_one(self, state, obs: Observation) -> Verdict | None:
        if state.__class__ is EntityState:
            return self._score_entity(state, obs)
        if state.__class__ is StrangerState:
            return self._score_strangers(state, obs)
        return self._score_account(state, obs)

    def learn_one(self, state, obs: Observation, verdict: Verdict | None) -> None:
        if state.__class__ is EntityState:
            self._learn_entity(state, obs, verdict)
        elif state.__class__ is StrangerState:
            self._learn_strangers(state, obs, verdict)
        else:
            self._learn_account(state, obs, verdict)

    # -- one IP, device or subnet against many accounts ---------------------------------
    def _score_entity(self, state: EntityState, obs: Observation) -> Verdict | None:
        event = obs.event
        since = obs.t - self._slow_seconds
        attempts, failures = len(state.attempts), state.failures
        stale: dict[str, int] = _NONE  # failures that left the window since the last learn
        stale_ok: dict[str, int] = _NONE
        if attempts and state.attempts[0][0] < since:
            stale, stale_ok = {}, {}
            for t, account, success in state.attempts:
                if t >= since:
                    break
                attempts -= 1
                if success:
                    stale_ok[account] = stale_ok.get(account, 0) + 1
                else:
                    failures -= 1
                    stale[account] = stale.get(account, 0) + 1
        attempts += 1
        if not event.success:
            failures += 1
        failure_ratio = failures / attempts
        needed = self.stuffing_min_accounts * (SUBNET_FACTOR if state.key.startswith("net:")
                                               else 1)
        new_account = not event.success and event.account_id not in state.failed_by
        if (len(state.failed_by) + new_account < needed
                or failure_ratio < self.stuffing_min_failure_ratio):
            return None  # the cheap bound: most logins stop here
        # Accounts that failed and never got in: a colleague who mistyped after a password
        # change and then logged in is no stuffing victim.
        got_in = {a for a, n in state.ok_by.items() if n > stale_ok.get(a, 0)}
        failed = {a for a, n in state.failed_by.items() if n > stale.get(a, 0)} - got_in
        failed.discard(event.account_id)
        hot = len(failed) >= needed  # the others alone make an attack: a success is a takeover
        if not event.success:
            failed.add(event.account_id)
        if len(failed) < needed or (event.success and not hot):
            return None
        if event.success and event.device_id in obs.profile.known_devices:
            return None  # the owner at home on a device of their own, next to the attack
        kind, value = state.key.split(":", 1)
        entity = _ENTITY[kind].format(value)
        reasons = [
            f"{entity} failed logins against {len(failed)} accounts in "
            f"{_span(self.slow_window_minutes)} ({failure_ratio:.0%} of its attempts "
            "failed)"
        ]
        score = min(0.99, 0.7 + 0.29 * (len(failed) - needed) / (3 * needed))
        if kind == "bot":
            reasons.append(f"user agent {event.user_agent!r} is a script or headless browser, "
                           "not a person's browser or app")
        if event.success:
            reasons.append(f"successful login from {entity} during the attack: likely takeover")
            score = max(score, 0.95)
        earlier = tuple(sorted(a for a in failed
                               if a != event.account_id and a not in state.reported))
        evidence = {"pattern": "credential_stuffing", kind: value, "accounts_failed": len(failed),
                    "attempts": attempts, "failure_ratio": round(failure_ratio, 3)}
        if kind == "bot":
            evidence["user_agent"] = event.user_agent
        verdict = Verdict(
            score=round(score, 4), reasons=tuple(reasons), evidence=evidence, also_flag=earlier,
            # high means taken over; an account only tried is at most medium, so that its
            # takeover, should it follow, still raises a flag
            severity="high" if event.success else severity_of(score, high=math.inf),
        )
        entered = tuple(sorted(a for a, t in state.entered.items() if t >= since and a not in
                               failed and a != event.account_id and a not in state.reported))
        if not entered:
            return verdict
        return merge([verdict, Verdict(
            score=0.95, evidence=evidence, also_flag=entered, severity="high",
            reasons=(reasons[0], f"a stranger (a device and network the account never used) got "
                                 f"in from {entity} at the first try: likely takeover"),
            flag_account=False)])

    def _learn_entity(self, state: EntityState, obs: Observation, verdict) -> None:
        event = obs.event
        since = obs.t - self._slow_seconds
        attempts = state.attempts
        while attempts and (attempts[0][0] < since or len(attempts) >= state.MAX_ATTEMPTS):
            state.evict_oldest()
        attempts.append((obs.t, event.account_id, event.success))
        if event.success:
            state.ok_by[event.account_id] = state.ok_by.get(event.account_id, 0) + 1
            if is_stranger(obs.profile, event.device_id, event.ip):
                _enter(state.entered, event.account_id, obs.t, since)
        else:
            state.failures += 1
            state.failed_by[event.account_id] = state.failed_by.get(event.account_id, 0) + 1
        if verdict is not None:
            for account in (event.account_id, *verdict.also_flag):
                state.reported[account] = obs.t
        if state.reported and (verdict is not None or not state.failed_by):
            # Bounded like ``attempts``: reports older than the window go first.
            kept = [(a, t) for a, t in state.reported.items() if t >= since]
            state.reported = dict(kept[-state.MAX_ATTEMPTS:])

    # -- strangers across all accounts ---------------------------------------------------
    def _strangers_needed(self, usual: float) -> int:
        """Accounts failed by strangers within the slow window that make an attack: the
        setting, or far above the ``usual`` count (a Poisson tail) where that is higher."""
        return max(self.spread_min_accounts, math.ceil(usual + 4 * math.sqrt(usual) + 1))

    def _score_strangers(self, state: StrangerState, obs: Observation) -> Verdict | None:
        """Flag the accounts strangers failed on that the owner did not get into within
        ``spread_settle_minutes``, once there are far more of them than usual; a stranger
        getting into one of them (now or before), or at the first try from a country the
        owner never used while the attack is on, is a takeover. Any login may reveal it (every
        login passes here, so the last victims are judged too): its own account is flagged
        only when it is one of them."""
        revealed = self._first_login_reveals(state, obs)
        pending = state.pending
        usual = state.usual(self._slow_seconds / HOUR)
        needed = self._strangers_needed(usual)
        if len(pending) + 1 < needed:
            return revealed  # the cheap bound: almost every login stops here
        event = obs.event
        account = event.account_id
        stranger = is_stranger(obs.profile, event.device_id, event.ip)
        since = obs.t - self._slow_seconds
        settled = obs.t - self.spread_settle_minutes * 60
        in_window = {a: failure for a, failure in pending.items() if failure.t >= since}
        entered = [a for a, found in state.first_try.items() if found.t >= since]
        failure = in_window.get(account)
        takeover = event.success and stranger and (
            not _owner_got_in(failure, obs, stranger) if failure is not None
            else _foreign(obs))  # at the first try
        count = len(in_window) + (stranger and not event.success and failure is None)
        if count - (takeover and failure is not None) < needed:
            return revealed
        tried, taken = [], []
        for other, found in in_window.items():
            # the burst says an attack is on; only attempts unlike the owner's are flagged
            if other != account and other not in state.reported and (
                    found.got_in or (found.unlike_owner and found.t <= settled)):
                (taken if found.got_in else tried).append(other)
        at_once = [a for a in entered if a != account and a not in state.reported]
        verdicts = [self._spread_verdict(usual, count, needed, accounts, outcome)
                    for accounts, outcome in ((tried, "tried"), (taken, "got_in"),
                                              (at_once, "first_try")) if accounts]
        if takeover:
            outcome = "got_in" if failure is not None else "first_try"
            verdicts.append(replace(self._spread_verdict(usual, count, needed, (), outcome),
                                    flag_account=True))
        if revealed is not None:
            verdicts.append(revealed)
        return merge(verdicts) if verdicts else None

    def _spread_verdict(self, usual: float, count: int, needed: int, accounts: Sequence[str],
                        outcome: str) -> Verdict:
        """``outcome``: ``tried`` (strangers failed), ``got_in`` (then one got in) or
        ``first_try`` (one got in at once, from a country the owner never used)."""
        reasons = [
            f"credential stuffing spread over many IPs and devices: logins failed from devices "
            f"and networks their owners never used, on {count} accounts in "
            f"{_span(self.slow_window_minutes)} (usually about {usual:.1f}), and the owners did "
            f"not get in within {self.spread_settle_minutes:g} min",
            _OUTCOME[outcome],
        ]
        score = min(0.99, 0.7 + 0.29 * (count - needed) / (3 * needed))
        if outcome != "tried":
            score = max(score, 0.95 if outcome == "got_in" else 0.93)
        return Verdict(
            score=round(score, 4), reasons=tuple(reasons),
            evidence={"pattern": "credential_stuffing", "spread": True,
                      "accounts_failed": count, "usual": round(usual, 2)},
            also_flag=tuple(accounts),
            # high means taken over; an account only tried is at most medium, so that its
            # takeover, should it follow, still raises a flag
            severity="high" if outcome != "tried" else severity_of(score, high=math.inf),
            flag_account=False,
        )

    def _first_login_reveals(self, state: StrangerState, obs: Observation) -> Verdict | None:
        """An account never seen before failed during a recognised attack, and its owner's
        first login, since the attack, comes from another device and country: the failure was
        a stranger's. (Still inside the window, the live count judges it instead.)"""
        event = obs.event
        if not event.success or obs.profile.known_devices:
            return None
        failure = state.unseen.get(event.account_id)
        if failure is None or not _elsewhere(failure, event) \
                or failure.t >= obs.t - self._slow_seconds:
            return None
        attack = state.attack_at(failure.t, self.spread_settle_minutes * 60)
        if attack is None:
            return None
        return Verdict(
            score=0.8,
            reasons=(
                f"a login failed on an unknown device during credential stuffing spread over "
                f"many IPs and devices ({attack.accounts} accounts failed by strangers, "
                f"{_clock(attack.start)} to {_clock(attack.end)})",
                f"that failure came from {failure.country} at {_clock(failure.t)}; the owner's "
                f"first login since came from {event.country} on another device: it was not "
                "theirs",
            ),
            evidence={"pattern": "credential_stuffing", "spread": True,
                      "accounts_failed": attack.accounts, "failed_at": _clock(failure.t),
                      "failed_from": failure.country, "failed_device": failure.device},
            severity="medium",
        )

    def _learn_strangers(self, state: StrangerState, obs: Observation, verdict) -> None:
        event = obs.event
        self._count_hour(state, obs.t)
        since = obs.t - self._slow_seconds
        pending = state.pending
        for held in (pending, state.first_try):
            while held:  # oldest first: drop what left the window
                if next(iter(held.values())).t >= since and len(held) < state.MAX_PENDING:
                    break
                del held[next(iter(held))]
        if verdict is not None:
            self._note_flagged(state, obs, verdict)
        if not obs.profile.known_devices:
            self._learn_unseen(state, obs)
            return
        account = event.account_id
        stranger = is_stranger(obs.profile, event.device_id, event.ip)
        failure = pending.get(account)
        if event.success and failure is not None:
            if _owner_got_in(failure, obs, stranger):
                del pending[account]  # it was the owner failing
            elif stranger:  # a stranger got in
                pending[account] = failure._replace(got_in=True)
            # the owner got in from home after a failure abroad: that failure was not theirs
        elif event.success and stranger and _foreign(obs):
            state.first_try[account] = StrangerFailure(obs.t, event.device_id, True, True,
                                                       event.country)
        elif stranger and not event.success:
            foreign = _foreign(obs)
            if failure is None:
                pending[account] = StrangerFailure(obs.t, event.device_id, foreign, False,
                                                   event.country)
                state.hour_accounts += 1
            elif foreign or failure.device != event.device_id:  # rotating: not the owner
                pending[account] = failure._replace(unlike_owner=True)

    def _note_flagged(self, state: StrangerState, obs: Observation, verdict: Verdict) -> None:
        """Accounts flagged are not flagged again in the window; the attack is remembered."""
        self._remember_attack(state, verdict)
        flagged = (*verdict.also_flag, obs.account_id) if verdict.flag_account \
            else verdict.also_flag
        for account in flagged:
            state.reported[account] = obs.t
        since = obs.t - self._slow_seconds
        state.reported = {a: t for a, t in state.reported.items() if t >= since}

    def _learn_unseen(self, state: StrangerState, obs: Observation) -> None:
        """No owner to compare with yet: a failure waits for the owner's first login, unless
        a second device fails too (rotating fingerprints, as for a known owner: not one owner
        on a new device), which the live count takes at once."""
        event = obs.event
        account = event.account_id
        unseen = state.unseen
        since = obs.t - self._slow_seconds
        if not event.success:
            failure = unseen.get(account)
            if failure is None:
                if len(unseen) >= state.MAX_PENDING:
                    del unseen[next(iter(unseen))]
                unseen[account] = StrangerFailure(obs.t, event.device_id, True, False,
                                                  event.country)
            elif failure.device != event.device_id and failure.t >= since \
                    and account not in state.pending:
                _hold(state, account, failure)
            return
        failure = unseen.pop(account, None)
        if failure is None:
            return
        if failure.t >= since and _elsewhere(failure, event):
            # a stranger's failure inside the window: the live count takes it, in time order
            _hold(state, account, failure)
        else:  # the owner, from where the failures came: they were the owner's
            state.pending.pop(account, None)

    def _remember_attack(self, state: StrangerState, verdict: Verdict) -> None:
        """The span of the victims' failures, merged with the attack it continues."""
        times = [state.pending[a].t for a in verdict.also_flag if a in state.pending]
        if not times:
            return
        start, end = min(times), max(times)
        accounts = verdict.evidence.get("accounts_failed", 0)
        attacks = state.attacks
        if attacks and start <= attacks[-1].end + self._slow_seconds:
            last = attacks[-1]
            attacks[-1] = Attack(min(last.start, start), max(last.end, end),
                                 max(last.accounts, accounts))
        else:
            attacks.append(Attack(start, end, accounts))
            del attacks[: -state.MAX_ATTACKS]

    def _count_hour(self, state: StrangerState, t: float) -> None:
        """Fold finished hours into the usual count (hours with no login at all as 0), and
        forget, once an hour, what no attack needs any more.

        Every hour counts, attacks included: a median over two days is not moved by an
        attack of hours, while never learning from flagged hours would never learn a
        population's lasting habits (it would flag them forever)."""
        hour = int(t // HOUR)
        if state.hour is None:
            state.hour = hour
            return
        if hour <= state.hour:
            return
        state.hourly.update(state.hour_accounts)
        for _ in range(min(hour - state.hour - 1, USUAL_HOURS)):
            state.hourly.update(0)
        state.per_hour = state.hourly.get() or 0.0
        state.hour, state.hour_accounts = hour, 0
        self._forget(state, t)

    def _forget(self, state: StrangerState, t: float) -> None:
        """Attacks past recall, and failures on unseen accounts outside the window and every
        remembered attack."""
        recall = t - self.spread_recall_days * DAY
        state.attacks = [a for a in state.attacks if a.end >= recall]
        since, slack = t - self._slow_seconds, self.spread_settle_minutes * 60
        state.unseen = {a: f for a, f in state.unseen.items() if f.t >= since or (
            f.t >= recall and state.attack_at(f.t, slack) is not None)}

    # -- one account --------------------------------------------------------------------
    def _score_account(self, state: AccountState, obs: Observation) -> Verdict | None:
        findings = [
            finding
            for finding in (
                self._brute_force(state, obs),
                self._slow_brute_force(state, obs),
                self._sharing(state, obs),
                self._scripted(state, obs),
            )
            if finding is not None
        ]
        return merge(findings) if findings else None

    def _brute_force(self, state: AccountState, obs: Observation) -> Verdict | None:
        fast_since = obs.t - self.window_minutes * 60
        slow_since = obs.t - self._slow_seconds
        fast = slow = 0 if obs.event.success else 1
        for login in reversed(state.logins):  # newest first: stop at the slow window's edge
            if login[0] < slow_since:
                break
            if not login[1]:
                slow += 1
                fast += login[0] >= fast_since
        least = self.brute_force_min_failures
        if fast < least and slow < SLOW_FACTOR * least:
            return None  # the fewest failures any baseline needs (below): most logins stop here
        rate = state.failure_rate
        usual = rate.alpha / (rate.alpha + rate.beta)
        # an account that often fails (a shared script, a forgetful owner) needs more
        needed = least * (1 + 4 * max(0.0, usual - PRIOR_FAILURE_RATE))
        if fast >= needed:
            failures, span = fast, self.window_minutes
        elif slow >= SLOW_FACTOR * needed:  # slowly, over hours: twice as many
            failures, span, needed = slow, self.slow_window_minutes, SLOW_FACTOR * needed
        else:
            return None
        reasons = [f"{failures} failed logins in {_span(span)} "
                   f"(usual failure rate {usual:.0%})"]
        score = min(0.99, 0.75 + 0.24 * (failures - needed) / (2 * needed))
        if obs.event.success:
            reasons.append("a successful login followed the failures: possible takeover")
            score = max(score, 0.95)
        return Verdict(score=score, reasons=tuple(reasons),
                       evidence={"pattern": "brute_force", "failures": failures,
                                 "usual_failure_rate": round(usual, 4)},
                       severity="high" if obs.event.success else None)

    def _slow_brute_force(self, state: AccountState, obs: Observation) -> Verdict | None:
        """Failures in a row from devices the owner never used, too few an hour for the
        windows of :meth:`_brute_force`, over up to ``brute_force_streak_hours``."""
        event = obs.event
        unknown = event.device_id not in obs.profile.known_devices
        if state.unknown_failures + (unknown and not event.success) < self.brute_force_streak \
                or (event.success and not unknown):
            return None  # the cheap bound; the owner getting in on their device ends it
        since = obs.t - self.brute_force_streak_hours * HOUR
        known = obs.profile.known_devices
        failures, devices, first = int(unknown and not event.success), set(), obs.t
        for t, success, device, _, _ in reversed(state.logins):  # newest first
            if t < since or success:
                break
            if device not in known:
                failures += 1
                devices.add(device)
                first = t
        # not scaled by the usual failure rate, unlike the windows: a slow attack's failures
        # leave the slow window into that baseline, and the owner's own devices never count
        needed = self.brute_force_streak
        if failures < needed:
            return None
        hours = (obs.t - first) / HOUR
        reasons = [f"{failures} failed logins in a row over {hours:.0f} h from "
                   f"{len(devices | {event.device_id})} device(s) the owner never used, none "
                   "succeeding: slow brute force"]
        score = min(0.99, 0.75 + 0.24 * (failures - needed) / (2 * needed))
        if event.success:
            reasons.append("a successful login followed the failures: possible takeover")
            score = max(score, 0.95)
        return Verdict(score=round(score, 4), reasons=tuple(reasons),
                       evidence={"pattern": "brute_force", "failures": failures,
                                 "hours": round(hours, 1), "devices": len(devices)},
                       severity="high" if event.success else None)

    def _sharing(self, state: AccountState, obs: Observation) -> Verdict | None:
        event = obs.event
        if not event.success:
            return None
        since = obs.t - self.sharing_window_hours * HOUR
        logins = []
        for login in reversed(state.logins):
            if login[0] < since:
                break
            if login[1]:
                logins.append(login)
        logins.reverse()
        logins.append((obs.t, True, event.device_id, event.country, False))
        devices = {lg[2] for lg in logins}
        if len(devices) < min(TRAVEL_MIN_DEVICES, self.sharing_min_devices):
            return None  # below every rule's device count (below): skip the travel check
        countries = {lg[3] for lg in logins if lg[3]}
        jumps = self._impossible_jumps(logins)
        many = len(devices) >= self.sharing_min_devices
        spread = many and len(countries) >= self.sharing_min_countries
        crowd = len(devices) >= 2 * self.sharing_min_devices
        if not (spread or (len(devices) >= TRAVEL_MIN_DEVICES and jumps >= 2) or crowd):
            return None
        reasons = [f"{len(devices)} devices in {len(countries)} countries within "
                   f"{self.sharing_window_hours:.0f} h"]
        if jumps:
            reasons.append(f"{jumps} impossible trips between logins "
                           f"(> {self.max_speed_kmh:.0f} km/h)")
        score = min(0.99, 0.7 + 0.05 * (len(devices) - self.sharing_min_devices) + 0.05 * jumps)
        return Verdict(score=score, reasons=tuple(reasons),
                       evidence={"pattern": "account_sharing", "devices": len(devices),
                                 "countries": sorted(countries), "impossible_trips": jumps})

    def _impossible_jumps(self, logins) -> int:
        jumps = 0
        for before, after in pairwise(logins):
            if not before[3] or not after[3] or before[3] == after[3]:
                continue
            km = distance_km(before[3], after[3])
            hours = max(after[0] - before[0], 1.0) / HOUR
            if km is not None and km > 500 and km / hours > self.max_speed_kmh:
                jumps += 1
        return jumps

    def _scripted(self, state: AccountState, obs: Observation) -> Verdict | None:
        if state.last_t is None or state.n_gaps < self.scripted_intervals:
            return None
        mean = state.gaps.obj.mean.get()
        if mean <= 0 or mean > 6 * HOUR:
            return None
        cv = max(state.gaps.get(), 0.0) ** 0.5 / mean
        over = f"the last {self.scripted_intervals} intervals"
        if cv > self.scripted_max_cv:
            found = self._scripted_beside_owner(state)
            if found is None:
                return None
            mean, cv, regular = found
            over = (f"{regular} of the last {self.scripted_intervals} intervals (logins of "
                    "another client split the others)")
        score = 0.7 + 0.29 * (1 - cv / self.scripted_max_cv)
        return Verdict(
            score=round(score, 4),
            reasons=(f"logins every {mean:.0f} s with {cv:.1%} variation over {over}: "
                     "machine-regular",),
            evidence={"pattern": "scripted", "mean_interval_s": round(mean, 1),
                      "interval_cv": round(cv, 4)},
        )

    def _scripted_beside_owner(self, state: AccountState) -> tuple[float, float, int] | None:
        """A script with the owner logging in beside it: each login of the owner's splits one
        of its gaps in two. All but ``SCRIPTED_OUTLIERS`` gaps must lie within
        ``scripted_max_cv`` of their median (a band that people's gaps, spread wider, leave
        many times over); returns their mean, coefficient of variation and count."""
        ordered = sorted(args[0] for args, _ in state.gaps.window)  # the window's gaps
        n = len(ordered)
        median = (ordered[(n - 1) // 2] + ordered[n // 2]) / 2
        band = self.scripted_max_cv * median
        low = bisect.bisect_left(ordered, median - band)
        high = bisect.bisect_right(ordered, median + band)
        if n - (high - low) > SCRIPTED_OUTLIERS or median > 6 * HOUR:
            return None  # the cheap bound: most accounts stop here
        regular = ordered[low:high]
        mean = statistics.fmean(regular)
        return mean, statistics.pstdev(regular, mean) / mean, len(regular)

    def _learn_account(self, state: AccountState, obs: Observation, verdict) -> None:
        event = obs.event
        self._fold_baseline(state, obs.t)
        if state.last_t is not None and obs.t >= state.last_t:
            gap = obs.t - state.last_t
            state.gaps.update(gap)
            state.n_gaps += 1
        state.last_t = obs.t
        if event.success:
            state.unknown_failures = 0
        elif event.device_id not in obs.profile.known_devices:
            state.unknown_failures += 1
        horizon = obs.t - max(self.sharing_window_hours * HOUR, self._slow_seconds,
                              self.brute_force_streak_hours * HOUR)
        logins = state.logins
        while logins and logins[0][0] < horizon:
            logins.popleft()
        if verdict is not None:
            # The whole burst belongs to the abuse, not only the login that tipped it over.
            # Marked in place from the newest back (a rebuilt deque per flagged login cost a
            # script's every login the whole window).
            since = obs.t - self._slow_seconds
            for i in range(len(logins) - 1, -1, -1):
                login = logins[i]
                if login[0] < since:
                    break
                if not login[4]:
                    logins[i] = (*login[:4], True)
        state.logins.append((obs.t, event.success, event.device_id, event.country,
                             verdict is not None))

    def _fold_baseline(self, state: AccountState, now: float) -> None:
        """Learn the usual failure rate from logins that left the window, never flagged ones.

        Folding only what left the (slow) window keeps an attack in progress, even a slow
        one, out of the baseline it is measured against.
        """
        until = now - self._slow_seconds
        for t, success, _, _, flagged in state.logins:
            if t > until:
                break
            if t > state.folded_t and not flagged:
                state.failure_rate.update(not success)
        state.folded_t = max(state.folded_t, until)


def _enter(entered: dict[str, float], account: str, t: float, since: float) -> None:
    """Note a stranger getting in, forgetting those that left the window (oldest first)."""
    while entered and next(iter(entered.values())) < since:
        del entered[next(iter(entered))]
    entered.pop(account, None)
    entered[account] = t
    if len(entered) > EntityState.MAX_ATTEMPTS:
        del entered[next(iter(entered))]


def _hold(state: StrangerState, account: str, failure: StrangerFailure) -> None:
    """Put a stranger's failure on an account among the pending ones, in time order."""
    state.pending = dict(sorted({**state.pending, account: failure}.items(),
                                key=lambda item: item[1].t))


def _owner_got_in(failure: StrangerFailure, obs: Observation, stranger: bool) -> bool:
    """A success that explains a stranger's failure as the owner's: from the failing device,
    or where the failure came from, on the owner's own device or network there, or on another
    new device in the owner's home country."""
    event = obs.event
    return failure.device == event.device_id or (
        event.country == failure.country and not (stranger and _foreign(obs)))


def _foreign(obs: Observation) -> bool:
    """From a country the account's owner never logged in from (known owners only)."""
    country = obs.event.country
    known = obs.profile.known_countries
    return country is not None and bool(known) and country not in known


def _elsewhere(failure: StrangerFailure, event) -> bool:
    """A login from another device and another country than the failure: not its author."""
    return failure.device != event.device_id and None not in (failure.country, event.country) \
        and failure.country != event.country


def _clock(t: float) -> str:
    """Event time as analysts read it: ``2026-11-03 17:46 UTC``."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(minutes: float) -> str:
    """``360`` -> ``"6 h"``, ``60`` -> ``"60 min"``."""
    return f"{minutes / 60:g} h" if minutes >= 120 and minutes % 60 == 0 else f"{minutes:g} min"
