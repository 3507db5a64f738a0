"""Login abuse: credential stuffing, brute force, account sharing, scripted logins.

Logins are seen from five sides, each a key with its own bounded state:

- ``ip:`` / ``dev:`` / ``net:`` keys see attempts against many accounts. One IP or device
  failing against many distinct accounts within hours (a /24 against three times as many),
  mostly failing, is credential stuffing: every account it hit is flagged, and a success from
  it (a likely takeover) too. An office NAT has many accounts too, but mostly successful
  logins.
- ``acct:`` keys keep a per-account baseline learned online with River: the account's usual
  failure rate (``proba.Beta`` with a prior, never learned from flagged events) scales the
  brute-force threshold; the rolling mean and variance of the gaps between logins
  (``utils.Rolling``) expose machine-regular, scripted logins; the devices and countries of
  recent successful logins, with the travel speed between countries, expose shared accounts.
- the ``pop`` key sees every login, for stuffing spread over rotating proxies and device
  fingerprints, which no IP, device or /24 gathers: failures by *strangers* (a device and
  /24 the account's owner never used) on accounts the owner then does not get into, far more
  of them than the usual hour brings (learned online), each unlike the owner (a country the
  owner never logged in from, or several unknown devices).

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

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from typing import NamedTuple

from river import proba, stats, utils

from detectors.base import (
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
_ENTITY = {"ip": "IP {}", "dev": "device {}", "net": "subnet {}.0/24"}
_NONE: dict[str, int] = {}  # read-only: no attempt left the window
# A /24 needs this many times the accounts of one IP or device: over hours a busy subnet
# gathers strangers who failed once and logged in elsewhere.
SUBNET_FACTOR = 3
SLOW_FACTOR = 2  # failures on one account over the slow window, against the fast window's
# The usual hourly count of accounts failed by strangers: the median of the last two days'
# hours. An attack shorter than a day does not move it; a lasting change of habits does.
USUAL_HOURS = 48
STRANGERS_KEY = "pop"
TRAVEL_MIN_DEVICES = 3  # impossible trips count as sharing from this many devices


class EntityState(SlotState):
    """Recent attempts on one IP, device or subnet, with running counts.

    ``attempts`` holds ``(t, account, success)`` in time order, at most ``MAX_ATTEMPTS``;
    ``failures`` and ``failed_by`` count its failures and ``ok_by`` its successes per account,
    so scoring a login costs O(1) even on a busy office NAT.
    """

    MAX_ATTEMPTS = 1024
    __slots__ = ("attempts", "failed_by", "failures", "key", "ok_by", "reported")

    def __init__(self, key: str) -> None:
        self.key = key
        self.attempts: deque[tuple[float, str, bool]] = deque()
        self.failures = 0
        self.failed_by: dict[str, int] = {}
        self.ok_by: dict[str, int] = {}
        self.reported: dict[str, float] = {}

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

    __slots__ = ("failure_rate", "folded_t", "gaps", "key", "last_t", "logins", "n_gaps")

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


class StrangerState(SlotState):
    """Across every account (key ``pop``): failed logins by strangers, and how many is usual.

    A *stranger's* attempt comes from a device and a /24 the account's owner never used
    (:func:`~detectors.base.is_stranger`). ``pending`` holds, per account, its first stranger
    failure in the window not since followed by the owner getting in (the owner on a new phone
    fails, then succeeds from it), and what sets it apart from the owner: a country the owner
    never logged in from, a second unknown device, a stranger getting in. ``hourly`` learns
    how many accounts a usual hour brings.
    """

    MAX_PENDING = 4096
    __slots__ = ("hour", "hour_accounts", "hourly", "key", "pending", "reported")

    def __init__(self, key: str) -> None:
        self.key = key
        self.pending: dict[str, StrangerFailure] = {}  # oldest first
        self.hourly = stats.RollingQuantile(q=0.5, window_size=USUAL_HOURS)
        self.hour: int | None = None  # the hour being counted (event time // 3600)
        self.hour_accounts = 0
        self.reported: dict[str, float] = {}

    def usual(self, hours: float) -> float:
        """Accounts with stranger failures expected in ``hours``."""
        return (self.hourly.get() or 0.0) * hours  # None before the first hour ends


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
    brute_force_min_failures
        Failures on one account in the window, for an account that rarely fails.
    sharing_window_hours, sharing_min_devices, sharing_min_countries
        Distinct devices and countries of successful logins that make a shared account.
    max_speed_kmh
        Faster travel between two successful logins is impossible travel.
    scripted_intervals, scripted_max_cv
        Gaps between logins compared, and their coefficient of variation below which the
        rhythm is a machine's.
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
        brute_force_min_failures: int = 10,
        sharing_window_hours: float = 48.0,
        sharing_min_devices: int = 4,
        sharing_min_countries: int = 3,
        max_speed_kmh: float = 900.0,
        scripted_intervals: int = 16,
        scripted_max_cv: float = 0.05,
        threshold: float = 0.6,
    ) -> None:
        check_positive(
            window_minutes=window_minutes, slow_window_minutes=slow_window_minutes,
            stuffing_min_accounts=stuffing_min_accounts, spread_min_accounts=spread_min_accounts,
            spread_settle_minutes=spread_settle_minutes,
            brute_force_min_failures=brute_force_min_failures,
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
        self.brute_force_min_failures = brute_force_min_failures
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
        kind, value = state.key.split(":", 1)
        entity = _ENTITY[kind].format(value)
        reasons = [
            f"{entity} failed logins against {len(failed)} accounts in "
            f"{_span(self.slow_window_minutes)} ({failure_ratio:.0%} of its attempts "
            "failed)"
        ]
        score = min(0.99, 0.7 + 0.29 * (len(failed) - needed) / (3 * needed))
        if event.success:
            reasons.append(f"successful login from {entity} during the attack: likely takeover")
            score = max(score, 0.95)
        earlier = tuple(sorted(a for a in failed
                               if a != event.account_id and a not in state.reported))
        return Verdict(
            score=round(score, 4),
            reasons=tuple(reasons),
            evidence={
                "pattern": "credential_stuffing", kind: value,
                "accounts_failed": len(failed), "attempts": attempts,
                "failure_ratio": round(failure_ratio, 3),
            },
            also_flag=earlier,
            # high means taken over; an account only tried is at most medium, so that its
            # takeover, should it follow, still raises a flag
            severity="high" if event.success else severity_of(score, high=math.inf),
        )

    def _learn_entity(self, state: EntityState, obs: Observation, verdict) -> None:
        event = obs.event
        since = obs.t - self._slow_seconds
        attempts = state.attempts
        while attempts and (attempts[0][0] < since or len(attempts) >= state.MAX_ATTEMPTS):
            state.evict_oldest()
        attempts.append((obs.t, event.account_id, event.success))
        if event.success:
            state.ok_by[event.account_id] = state.ok_by.get(event.account_id, 0) + 1
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
        getting into one of them (now or before) is a takeover. Any login may reveal it (every
        login passes here, so the last victims are judged too): its own account is flagged
        only when it is one of them."""
        pending = state.pending
        usual = state.usual(self._slow_seconds / HOUR)
        needed = self._strangers_needed(usual)
        if len(pending) + 1 < needed:
            return None  # the cheap bound: almost every login stops here
        event = obs.event
        account = event.account_id
        stranger = is_stranger(obs.profile, event.device_id, event.ip)
        since = obs.t - self._slow_seconds
        settled = obs.t - self.spread_settle_minutes * 60
        in_window = {a: failure for a, failure in pending.items() if failure.t >= since}
        failure = in_window.get(account)
        takeover = event.success and stranger and failure is not None \
            and failure.device != event.device_id
        count = len(in_window) + (stranger and not event.success and failure is None)
        if count < needed or (takeover and count - 1 < needed):
            return None
        tried, taken = [], []
        for other, found in in_window.items():
            # the burst says an attack is on; only attempts unlike the owner's are flagged
            if other != account and other not in state.reported and (
                    found.got_in or (found.unlike_owner and found.t <= settled)):
                (taken if found.got_in else tried).append(other)
        verdicts = [self._spread_verdict(usual, count, needed, accounts, got_in)
                    for accounts, got_in in ((tried, False), (taken, True)) if accounts]
        if takeover:
            verdicts.append(replace(
                self._spread_verdict(usual, count, needed, (), True), flag_account=True))
        return merge(verdicts) if verdicts else None

    def _spread_verdict(self, usual: float, count: int, needed: int,
                        accounts: Sequence[str], got_in: bool) -> Verdict:
        reasons = [
            f"logins failed from a device and network the account never used, and the owner "
            f"did not get in within {self.spread_settle_minutes:g} min, on {count} accounts in "
            f"{_span(self.slow_window_minutes)} (usually about {usual:.1f}): credential "
            "stuffing spread over many IPs and devices",
            "a stranger then got in from another device: likely takeover" if got_in else
            "this account's attempts came from a country its owner never logged in from, or "
            "from several unknown devices: not the owner on a new one",
        ]
        score = min(0.99, 0.7 + 0.29 * (count - needed) / (3 * needed))
        if got_in:
            score = max(score, 0.95)
        return Verdict(
            score=round(score, 4), reasons=tuple(reasons),
            evidence={"pattern": "credential_stuffing", "spread": True,
                      "accounts_failed": count, "usual": round(usual, 2)},
            also_flag=tuple(accounts),
            severity="high" if got_in else severity_of(score, high=math.inf),
            flag_account=False,
        )

    def _learn_strangers(self, state: StrangerState, obs: Observation, verdict) -> None:
        event = obs.event
        self._count_hour(state, obs.t)
        since = obs.t - self._slow_seconds
        pending = state.pending
        while pending:  # oldest first: drop what left the window
            if next(iter(pending.values())).t >= since and len(pending) < state.MAX_PENDING:
                break
            del pending[next(iter(pending))]
        account = event.account_id
        stranger = is_stranger(obs.profile, event.device_id, event.ip)
        failure = pending.get(account)
        if event.success and failure is not None:
            if not stranger or failure.device == event.device_id:
                del pending[account]  # the owner got in: it was the owner failing
            else:  # a stranger got in
                pending[account] = failure._replace(got_in=True)
        elif stranger and not event.success:
            foreign = event.country is not None and bool(obs.profile.known_countries) \
                and event.country not in obs.profile.known_countries
            if failure is None:
                pending[account] = StrangerFailure(obs.t, event.device_id, foreign, False)
                state.hour_accounts += 1
            elif foreign or failure.device != event.device_id:  # rotating: not the owner
                pending[account] = failure._replace(unlike_owner=True)
        if verdict is not None:
            for flagged in verdict.also_flag:
                state.reported[flagged] = obs.t
            state.reported = {a: t for a, t in state.reported.items() if t >= since}

    def _count_hour(self, state: StrangerState, t: float) -> None:
        """Fold finished hours into the usual count (hours with no login at all as 0).

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
        state.hour, state.hour_accounts = hour, 0

    # -- one account --------------------------------------------------------------------
    def _score_account(self, state: AccountState, obs: Observation) -> Verdict | None:
        findings = [
            finding
            for finding in (
                self._brute_force(state, obs),
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
        if cv > self.scripted_max_cv:
            return None
        score = 0.7 + 0.29 * (1 - cv / self.scripted_max_cv)
        return Verdict(
            score=round(score, 4),
            reasons=(f"logins every {mean:.0f} s with {cv:.1%} variation over the last "
                     f"{self.scripted_intervals} intervals: machine-regular",),
            evidence={"pattern": "scripted", "mean_interval_s": round(mean, 1),
                      "interval_cv": round(cv, 4)},
        )

    def _learn_account(self, state: AccountState, obs: Observation, verdict) -> None:
        event = obs.event
        self._fold_baseline(state, obs.t)
        if state.last_t is not None and obs.t >= state.last_t:
            gap = obs.t - state.last_t
            state.gaps.update(gap)
            state.n_gaps += 1
        state.last_t = obs.t
        horizon = obs.t - max(self.sharing_window_hours * HOUR, self._slow_seconds)
        logins = state.logins
        while logins and logins[0][0] < horizon:
            logins.popleft()
        if verdict is not None:
            # The whole burst belongs to the abuse, not only the login that tipped it over.
            since = obs.t - self._slow_seconds
            state.logins = deque(((*lg[:4], True) if lg[0] >= since else lg for lg in logins),
                                 maxlen=logins.maxlen)
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


def _span(minutes: float) -> str:
    """``360`` -> ``"6 h"``, ``60`` -> ``"60 min"``."""
    return f"{minutes / 60:g} h" if minutes >= 120 and minutes % 60 == 0 else f"{minutes:g} min"
