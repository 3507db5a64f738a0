"""Trial cycling: one actor re-creating trial or free accounts.

Each signup is linked to earlier signups through the attributes they share: the same mailbox
(Gmail dots and ``+tags`` ignored), card fingerprint, device id, numbered variants of one
email stem, IP address and /24 subnet. Every attribute is a key with its own small state (the
recent accounts seen on it), so accounts on different partitions meet at the key.

How much one shared attribute says depends on what it is and how common it is: a mailbox or
card is nearly an identity, a device strong, an IP weak and a subnet weaker still. A key that
many accounts share (an office NAT, a campus /24, a common name) or whose accounts converted to
paying customers (a family computer; on a name, paying namesakes only crowd it) counts for less.
Per earlier account the links are combined by noisy-OR into a link strength; accounts linked
strongly enough form the ring, and the ring's combined strength is the score. Disposable email
domains on both sides make network links count.

Numbered addresses are read as a series: ``agreen1``, ``agreen2``, ``agreen5`` count up one name
(numbers within a few of each other), where strangers who share a name pick numbers far apart.
A series of a distinctive name at one free-mail provider is a link on its own; at a company or a
university (which number their namesakes) or on a short name it needs another link; one hop
on, a ring member's series stands as it stood at the member's own signup. A burst stands on its
own too: one distinctive name three times at one free-mail provider within a few dozen trial
signups, whatever the numbers (counted in signups, so it means the same at any volume). Accounts
linked only weakly (a name, an IP) are not ring members, but add one piece of evidence, and join
the ring when they also share a key with one of its members (a closed triangle).

Examples
--------
>>> from detectors.testing import make_observation, run
>>> detector = TrialCycling()
>>> names = ["kim.ode", "raj.patel", "lu.chen", "ana.silva"]
>>> signups = [make_observation("signup", account_id=f"a{i}", device_id="d-1",
...     email=f"{name}@example.com", ip=f"198.51.100.{i}", t=i * 3600.0)
...     for i, name in enumerate(names)]
>>> [(a, round(v.score, 2), v.related_accounts) for a, v in run(detector, signups)]
[('a2', 0.86, ('a0', 'a1')), ('a3', 0.95, ('a0', 'a1', 'a2'))]
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from detectors.base import (
    DAY,
    DetectorBase,
    Observation,
    Verdict,
    check_positive,
    check_unit_interval,
)
from detectors.linking import (
    DISPOSABLE_DOMAINS,
    FREE_MAIL_DOMAINS,
    email_domain,
    email_stem,
    is_disposable,
    mailbox,
    subnet24,
)

__all__ = ["LINK_STRENGTH", "TrialCycling"]

# Evidence one shared attribute gives that two accounts belong to one actor.
LINK_STRENGTH: Mapping[str, float] = {
    "mbox": 0.95,  # same mailbox: one person
    "card": 0.8,
    "dev": 0.6,
    "stem": 0.5,
    "ip": 0.2,
    "net": 0.08,
}
# How many accounts a key can hold before its links weaken (None: no crowd discount).
CROWD_SIZE: Mapping[str, int | None] = {
    "mbox": None, "card": None, "dev": None, "stem": 4, "ip": 6, "net": 12,
}
# Network links between two accounts on throwaway email domains say much more, and a throwaway
# address on the new account is itself evidence once it is linked to anyone.
DISPOSABLE_STRENGTH: Mapping[str, float] = {"ip": 0.6, "net": 0.5}
DISPOSABLE_PRIOR = 0.3
# Alone, these never make an account part of a ring: strangers share them. Accounts linked only
# by them add one more piece of evidence (the strongest) to a ring that exists without them;
# they are named in the evidence, not among the ring's related accounts.
WEAK = frozenset({"stem", "ip", "net"})
MAX_SUPPORT = 0.3  # weak links add a little: never enough to tip a pair or a family over
MIN_CORROBORATION = 0.04  # a weak link must keep half a lone /24's strength to back another
MAX_SUPPORT_PROBED = 8  # weakly linked accounts whose other keys are looked up
# A short stem ("mmoore": initial and a common surname) is shared by strangers, and a name
# without digits is a name; numbered variants of a distinctive stem are one person's series.
DISTINCTIVE_STEM = 8
NUMBERED_STEM_STRENGTH = 0.6
PLAIN_STEM_STRENGTH = 0.3
# Numbers this close on one stem ("agreen4", "agreen5", "agreen7") are one person counting up
# their addresses; strangers who share a name pick numbers (birth years, lucky numbers) far apart.
# Only accounts on the stem outside the series crowd it. A series of a distinctive stem at one
# free-mail provider stands on its own; a short stem ("agreen": an initial and a common
# surname) or a series across providers needs another link.
SERIES_GAP = 5
SERIES_STRENGTH = 0.6
# A distinctive name on three unconverted trial accounts at one free-mail provider, with at
# most this many trial signups between the first and the last, is one person's: a name even one
# signup in a thousand has turns up twice more that close about once in 3,000 times. Counting
# signups, not hours, keeps this right at any volume: a day at 5,000 accounts is minutes at
# 50,000 (where namesakes within a day are common: measured, four times this many signups
# already let them in).
NAME_BURST_SIGNUPS = 25
NAME_BURST_ACCOUNTS = 3
# The trial signups' times: one key every trial signup passes, holding the most recent.
SIGNUPS_KEY = "signups"
RECENT_SIGNUPS = 32  # more than NAME_BURST_SIGNUPS: a burst is always seen whole
# One device and one home IP and nothing else but a name: the signature of a household (a family
# on one computer, sharing a surname: "j.ferrari" and "jferrari26"), which only a larger ring
# outweighs. A name counted up in a series is one person's, not a family's.
HOUSEHOLD = frozenset({"dev", "ip", "net"})
HOUSEHOLD_DISCOUNT = 0.6
_DESCRIBE = {
    "mbox": "mailbox {value}", "card": "card {value}", "dev": "device {value}",
    "stem": "email stem '{value}'", "ip": "IP {value}", "net": "subnet {value}.0/24",
}
_TRIAL_PLANS = ("trial", "free")


class KeyState(msgspec.Struct):
    """Recent signups on one key: ``[account, t, plan, converted_t, disposable, keys]`` rows.

    ``converted_t`` is when the account first paid (``None``: not yet); ``keys`` are all the
    account's link keys, so a ring can be followed one hop further (``probe_keys``).
    """

    key: str
    rows: list[list[Any]] = msgspec.field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.key.split(":", 1)[0]


class SignupTimes(msgspec.Struct):
    """When the most recent trial signups happened (sorted), to count signups between two."""

    key: str
    times: list[float] = msgspec.field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.key


class TrialCycling(DetectorBase):
    """Link trial/free signups that share identifying attributes; flag rings.

    Parameters
    ----------
    window_days
        How far back a signup links to earlier ones; also the state's time to live.
    threshold
        Ring strength at which an account is flagged.
    min_link
        Link strength at which an earlier account counts as part of the ring.
    max_accounts_per_key
        Rows kept per key (the most recent); bounds memory for very popular keys.
    disposable_domains
        Email domains treated as throwaway.
    """

    name = "trial_cycling"
    event_types = frozenset({"signup", "purchase"})

    def __init__(
        self,
        *,
        window_days: float = 30.0,
        threshold: float = 0.8,
        min_link: float = 0.4,
        max_accounts_per_key: int = 64,
        disposable_domains: frozenset[str] = DISPOSABLE_DOMAINS,
    ) -> None:
        check_positive(window_days=window_days, max_accounts_per_key=max_accounts_per_key)
        check_unit_interval(threshold=threshold, min_link=min_link)
        self.window_days = window_days
        self.threshold = threshold
        self.min_link = min_link
        self.max_accounts_per_key = max_accounts_per_key
        self.disposable_domains = disposable_domains

    # -- keys ---------------------------------------------------------------------------
    def keys(self, obs: Observation) -> Sequence[str]:
        event = obs.event
        if event.kind == "signup":
            links = _link_keys(event.email, event.card_fingerprint, event.device_id, event.ip)
            return (*links, SIGNUPS_KEY) if event.plan in _TRIAL_PLANS else links
        profile = obs.profile
        if event.kind == "purchase" and profile.plan in _TRIAL_PLANS and not profile.converted:
            # A conversion: the keys of this account learn it became a paying customer.
            return _link_keys(profile.email, profile.card, profile.device_id, profile.signup_ip)
        return ()

    def new_state(self, key: str) -> KeyState | SignupTimes:
        return SignupTimes(key=key) if key == SIGNUPS_KEY else KeyState(key=key)

    def expired(self, state: KeyState | SignupTimes, now: float) -> bool:
        if isinstance(state, SignupTimes):
            return not state.times or state.times[-1] < now - self.window_days * DAY
        return not state.rows or state.rows[-1][1] < now - self.window_days * DAY

    # -- scoring ------------------------------------------------------------------------
    def score_one(self, state: KeyState | SignupTimes, obs: Observation) -> Verdict | None:
        if isinstance(state, SignupTimes):
            return _recent_signups(state, obs)
        return self._earlier_on_key(state, obs, hop=1)

    def probe_one(self, state: KeyState, obs: Observation) -> Verdict | None:
        return self._earlier_on_key(state, obs, hop=2)

    def _earlier_on_key(self, state: KeyState, obs: Observation, *, hop: int) -> Verdict | None:
        """Earlier unconverted trial signups on this key, as of the signup's own time.

        Filtering by time (not by arrival) keeps the answer the same whatever order the
        streaming worker delivers rows in.
        """
        event = obs.event
        if event.kind != "signup" or event.plan not in _TRIAL_PLANS:
            return None
        since = obs.t - self.window_days * DAY
        earlier = [r for r in state.rows if since <= r[1] <= obs.t and r[0] != event.account_id]
        candidates = [r for r in earlier if r[2] in _TRIAL_PLANS and (r[3] is None or r[3] > obs.t)]
        if not candidates:
            return None
        evidence = {
            "hop": hop,
            "key": state.key,
            "kind": state.kind,
            "accounts_on_key": len(earlier),
            "converted_on_key": len(earlier) - len(candidates),
            "candidates": [(r[0], bool(r[4]), r[5]) for r in candidates[-32:]],
        }
        if state.kind == "stem":
            evidence["signed_up"] = {r[0]: r[1] for r in candidates[-32:]}
        return Verdict(score=0.0, reasons=(), evidence=evidence)

    def learn_one(self, state: KeyState | SignupTimes, obs: Observation,
                  verdict: Verdict | None) -> None:
        # Linking records every signup, flagged or not: a ring's next account must meet it.
        event = obs.event
        if isinstance(state, SignupTimes):
            insort(state.times, obs.t)
            del state.times[:-4 * RECENT_SIGNUPS]  # a few minutes' disorder fits in the rest
            return
        if event.kind == "purchase":
            for row in state.rows:
                if row[0] == event.account_id and row[3] is None:
                    row[3] = obs.t
            return
        if any(row[0] == event.account_id for row in state.rows):
            return  # a second signup event for one account adds nothing
        disposable = is_disposable(event.email, self.disposable_domains)
        keys = [key for key in self.keys(obs) if key != SIGNUPS_KEY]
        state.rows.append([event.account_id, obs.t, event.plan,
                           obs.t if event.plan == "paid" else None, disposable, keys])
        since = obs.t - self.window_days * DAY
        state.rows = [r for r in state.rows if r[1] >= since][-self.max_accounts_per_key :]

    def probe_keys(self, obs: Observation, verdicts: list[Verdict]) -> Sequence[str]:
        """The other keys of the accounts this signup links to: the ring's next hop."""
        ring, _, their_keys, support, _ = self._direct(obs, verdicts)
        if not ring:
            return ()
        own = set(self.keys(obs))
        probes = sorted({k for account in ring for k in their_keys[account] if k not in own})
        weakest = sorted(support, key=lambda a: (-support[a], a))[:MAX_SUPPORT_PROBED]
        probes += sorted({k for account in weakest for k in their_keys[account]
                          if k not in own and not k.startswith("net:")} - set(probes))
        return probes[:64]

    def combine(self, obs: Observation, verdicts: list[Verdict]) -> Verdict | None:
        event = obs.event
        disposable = is_disposable(event.email, self.disposable_domains)
        ring, links, their_keys, support, burst = self._direct(obs, verdicts)
        if not ring:
            return None
        via = self._second_hop(obs, verdicts, ring, their_keys)
        members = {**{a: s for a, s in via.items() if a not in ring}, **ring}
        support = {a: s for a, s in support.items() if a not in members}
        members |= _triangles(verdicts, members, support, links)
        support = {a: s for a, s in support.items() if a not in members}
        miss = _miss(members.values())
        # weak links add one piece of evidence, however many: a crowded key has many of them
        miss *= 1.0 - max(support.values(), default=0.0)
        if disposable:
            miss *= 1.0 - DISPOSABLE_PRIOR
        score = 1.0 - miss
        if score < self.threshold:
            return None
        return self._verdict(obs, score, disposable, ring=ring, links=links, members=members,
                             support=support,
                             burst={a: n for a, n in burst.items() if a in ring})

    def _direct(self, obs: Observation, verdicts: list[Verdict]):
        """Earlier accounts linked to this signup strongly enough to be in its ring."""
        event = obs.event
        disposable = is_disposable(event.email, self.disposable_domains)
        links: dict[str, list[tuple[str, float]]] = {}  # account -> [(key kind, strength)]
        boosted: set[str] = set()  # accounts linked through throwaway addresses on both sides
        their_keys: dict[str, list[str]] = {}
        series: set[str] = set()  # accounts in a numbered series that stands alone
        counted: set[str] = set()  # accounts in a numbered series with this signup
        bursts: dict[str, int] = {}  # accounts in a burst of this name: signups since each
        stem = email_stem(event.email)
        number = _address_number(event.email)
        times = _signup_times(verdicts)
        for verdict in verdicts:
            evidence = verdict.evidence
            if evidence["hop"] != 1 or evidence["kind"] == SIGNUPS_KEY:
                continue
            kind = evidence["kind"]
            strength = _key_strength(kind, evidence)
            if kind == "stem":
                in_series = _series(number, evidence["candidates"])
                burst = _name_burst(evidence, times, mailbox(event.email))
                bursts.update(burst)
                one_name = in_series | burst.keys()  # one person's addresses
                counted |= one_name
                series.update(_standalone(evidence, in_series, mailbox(event.email)) | burst.keys())
                series_strength = _series_strength(evidence, len(one_name))
                strength = _stem_strength(stem or "", event.email, strength)
            for account, other_disposable, keys in evidence["candidates"]:
                their_keys[account] = keys
                link = strength  # per candidate: a boost for one must not leak to the next
                if kind == "stem" and account in one_name:
                    link = series_strength
                if disposable and other_disposable and kind in DISPOSABLE_STRENGTH:
                    boosted.add(account)
                    link = max(strength, DISPOSABLE_STRENGTH[kind])
                links.setdefault(account, []).append((kind, link))
        ring, support = {}, {}
        for account, parts in links.items():
            linked = self._link(parts, disposable, account in boosted or account in series,
                                account in counted)
            if linked is not None:
                ring[account] = linked
            elif {kind for kind, _ in parts} <= WEAK:
                support[account] = min(1.0 - _miss(s for _, s in parts), MAX_SUPPORT)
        return ring, links, their_keys, support, bursts

    def _link(self, parts: list[tuple[str, float]], no_household: bool,
              boosted: bool, counted: bool = False) -> float | None:
        """Combine the shared keys of two accounts into one link strength (None: too weak).

        ``no_household``: the device + IP pattern cannot be a family here (throwaway email).
        ``boosted``: a weak kind of link that stands alone here (throwaway addresses on both
        sides, or a numbered series of one stem).
        ``counted``: the two addresses count up one name (a series), which no family does.
        A household-shaped link (one device, one IP, at most a name not counted up) is
        discounted but kept as a weak ring member, even when a crowded IP (carrier NAT) adds
        almost nothing to it: a family stays small, a ring on one device keeps growing.
        """
        linked = 1.0 - _miss(strength for _, strength in parts)
        kinds = {kind for kind, _ in parts}
        household = kinds - {"stem"} <= HOUSEHOLD and not counted
        if "dev" in kinds and "ip" in kinds and household and not no_household:
            linked = max(linked * HOUSEHOLD_DISCOUNT, self.min_link)
        # a link crowded to almost nothing (a campus /24) corroborates nothing
        weight = {kind for kind, strength in parts if strength >= MIN_CORROBORATION}
        one_weak_link = len(weight) <= 1 and weight <= WEAK and not boosted
        return linked if linked >= self.min_link and not one_weak_link else None

    def _second_hop(self, obs, verdicts, ring, their_keys) -> dict[str, float]:
        """Accounts linked to a ring member: as strong as the weaker of the two links."""
        owners: dict[str, list[str]] = {}
        for account in ring:
            for key in their_keys[account]:
                owners.setdefault(key, []).append(account)
        pairs: dict[tuple[str, str], list[tuple[str, float]]] = {}
        standalone: set[tuple[str, str]] = set()  # pairs in a series that stands on its own
        counted: set[tuple[str, str]] = set()  # pairs in a series
        for verdict in verdicts:
            evidence = verdict.evidence
            if evidence["hop"] != 2:
                continue
            kind = evidence["kind"]
            strength = _key_strength(kind, evidence)
            if kind == "stem":
                strength = min(strength, PLAIN_STEM_STRENGTH)
            for member in owners.get(evidence["key"], ()):
                in_series, alone = set(), set()
                if kind == "stem":
                    own = _keys_mailbox(their_keys[member])
                    in_series = _series(_address_number(own), evidence["candidates"])
                    alone = _standalone(evidence, in_series, own)
                for account, _, _ in evidence["candidates"]:
                    if account != member and account != obs.account_id:
                        link = (_series_strength(evidence, len(in_series))
                                if account in in_series else strength)
                        pairs.setdefault((member, account), []).append((kind, link))
                        if account in alone:
                            standalone.add((member, account))
                        if account in in_series:
                            counted.add((member, account))
        via: dict[str, float] = {}
        for (member, account), parts in pairs.items():
            # one hop on, a series stands alone only where it would have at the member's own
            # signup: a namesake of the member's is not one of this signup's
            linked = self._link(parts, False, (member, account) in standalone,
                                (member, account) in counted)
            if linked is not None:
                via[account] = max(via.get(account, 0.0), min(ring[member], linked))
        return via

    def _verdict(self, obs, score, disposable, *, ring, links, members, support,
                 burst) -> Verdict:
        event = obs.event
        keys_of = dict(zip(_kinds(), _link_values(event), strict=True))
        related = tuple(sorted(members, key=lambda a: (-members[a], a)))
        shared: dict[str, list[str]] = {}
        for account in sorted(ring, key=lambda a: (-ring[a], a)):
            for kind, _ in links[account]:
                shared.setdefault(kind, []).append(account)
        reasons = [
            f"{_DESCRIBE[kind].format(value=keys_of[kind])} shared with {len(accounts)} earlier "
            f"unconverted trial account{'s' if len(accounts) > 1 else ''}"
            for kind, accounts in sorted(shared.items(), key=lambda kv: -LINK_STRENGTH[kv[0]])
        ]
        indirect = len(members) - len(ring)
        if indirect:
            reasons.append(f"linked through them to {indirect} more unconverted trial "
                           f"account{'s' if indirect > 1 else ''}")
        if burst:
            reasons.append(f"{len(burst) + 1} addresses of one name at "
                           f"{email_domain(event.email)} among {max(burst.values()) + 2} "
                           "consecutive trial signups: strangers' names do not bunch up like that")
        if support:
            reasons.append(f"weaker links (a shared name, IP or subnet alone) to {len(support)} "
                           f"more unconverted trial account{'s' if len(support) > 1 else ''}")
        if disposable:
            reasons.append(f"disposable email domain {email_domain(event.email)}")
        severity = "high" if len(members) >= 3 or score >= 0.97 else "medium"
        return Verdict(
            score=round(score, 4),
            reasons=tuple(reasons),
            evidence={
                "ring_size": len(members) + 1,
                "link_strength": {a: round(members[a], 3) for a in related},
                "direct_links": len(ring),
                "weak_links": {a: round(support[a], 3) for a in sorted(support)},
                "name_burst": dict(sorted(burst.items())),  # account: trial signups since
                "shared": {kind: {"value": keys_of[kind], "accounts": accts}
                           for kind, accts in shared.items()},
                "plan": event.plan,
                "email_domain": email_domain(event.email),
            },
            related_accounts=related,
            severity=severity,
        )


def _triangles(verdicts: list[Verdict], members: Mapping[str, float],
               support: Mapping[str, float],
               links: Mapping[str, list[tuple[str, float]]]) -> dict[str, float]:
    """Weakly linked accounts that also share a key with a ring member join the ring.

    Two weak links closing a triangle (the signup and an account share an IP; that account and
    a ring member share a name) are independent evidence; network links alone never count: a
    /24 is shared by a whole neighbourhood.
    """
    joined: dict[str, float] = {}
    for verdict in verdicts:
        evidence = verdict.evidence
        if evidence["hop"] != 2 or evidence["kind"] == "net":
            continue
        on_key = {account for account, _, _ in evidence["candidates"]}
        if not on_key & members.keys():
            continue
        for account in on_key & support.keys():
            if {kind for kind, _ in links[account]} != {"net"}:
                joined[account] = support[account]
    return joined


def _recent_signups(state: SignupTimes, obs: Observation) -> Verdict | None:
    """The latest trial signups up to this one's time (by event time, not arrival, as on every
    key)."""
    end = bisect_right(state.times, obs.t)
    if not end:
        return None
    times = state.times[max(0, end - RECENT_SIGNUPS):end]
    return Verdict(score=0.0, reasons=(),
                   evidence={"hop": 1, "key": state.key, "kind": state.key, "times": times})


def _signup_times(verdicts: list[Verdict]) -> list[float]:
    return next((v.evidence["times"] for v in verdicts
                 if v.evidence["kind"] == SIGNUPS_KEY), [])


def _name_burst(evidence: Mapping[str, Any], times: list[float],
                own: str | None) -> dict[str, int]:
    """Accounts that, with this signup, make a burst of one distinctive name at one free-mail
    provider (each with the trial signups since it): at least NAME_BURST_ACCOUNTS accounts with
    at most NAME_BURST_SIGNUPS trial signups between. Strangers sign up at a free-mail provider
    independently of each other; at a company or university they come in cohorts (a class, a
    team), so namesakes there cluster in time, and across providers they are left to the other
    links.

    ``times`` are the latest trial signups before this one; an account older than all of them
    is more than RECENT_SIGNUPS signups back.
    """
    domain = email_domain(own or "")
    if domain not in FREE_MAIL_DOMAINS or len(evidence["key"].split(":", 1)[1]) < DISTINCTIVE_STEM:
        return {}
    signed_up = evidence["signed_up"]
    since = {account: len(times) - bisect_right(times, signed_up[account])
             for account, _, keys in evidence["candidates"]
             if email_domain(_keys_mailbox(keys) or "") == domain}
    near = {account: n for account, n in since.items() if n <= NAME_BURST_SIGNUPS}
    return near if len(near) + 1 >= NAME_BURST_ACCOUNTS else {}


def _miss(strengths: Iterable[float]) -> float:
    """The chance that independent links all fail to connect (noisy-OR is one minus it)."""
    miss = 1.0
    for strength in strengths:
        miss *= 1.0 - strength
    return miss


def _kinds() -> tuple[str, ...]:
    return ("mbox", "card", "dev", "stem", "ip", "net")


def _link_values(event: Any) -> tuple[str | None, ...]:
    return (
        mailbox(event.email),
        event.card_fingerprint or None,
        event.device_id,
        email_stem(event.email),
        event.ip,
        subnet24(event.ip),
    )


def _link_keys(email: str | None, card: str | None, device: str | None, ip: str | None):
    values = (
        mailbox(email) if email else None,
        card or None,
        device,
        email_stem(email) if email else None,
        ip,
        subnet24(ip) if ip else None,
    )
    return tuple(f"{kind}:{value}" for kind, value in zip(_kinds(), values, strict=True) if value)


def _stem_strength(stem: str, email: str, crowd_weighted: float) -> float:
    numbered = any(c.isdigit() for c in email.split("@", 1)[0])
    if len(stem) >= DISTINCTIVE_STEM and numbered:
        return NUMBERED_STEM_STRENGTH * crowd_weighted / LINK_STRENGTH["stem"]
    return min(crowd_weighted, PLAIN_STEM_STRENGTH)


def _address_number(email: str | None) -> int | None:
    """The number an address ends with (``agreen12@`` -> 12; none: 0), ``+tags`` and dots
    ignored; ``None`` without an address or for long digit runs (phone numbers, ids)."""
    if not email:
        return None
    local = mailbox(email).split("@", 1)[0]
    digits = len(local) - len(local.rstrip("0123456789"))
    return int(local[-digits:]) if 0 < digits <= 6 else 0 if digits == 0 else None


def _keys_mailbox(keys: Sequence[str]) -> str | None:
    """An account's normalised mailbox, from its link keys."""
    return next((k[5:] for k in keys if k.startswith("mbox:")), None)


def _keys_number(keys: Sequence[str]) -> int | None:
    """The address number of an account, from its link keys (its mailbox key)."""
    return _address_number(_keys_mailbox(keys))


def _standalone(evidence: Mapping[str, Any], in_series: set[str], own: str | None) -> set[str]:
    """Series links that stand alone: a distinctive stem counted up at one free-mail provider.
    Across providers, on a short stem, at an institution that numbers its namesakes, with a
    plain name, or between two years of birth, strangers' numbers meet too often; those need
    another link.
    """
    domain = email_domain(own or "")
    if domain not in FREE_MAIL_DOMAINS or len(evidence["key"].split(":", 1)[1]) < DISTINCTIVE_STEM:
        return set()
    number = _address_number(own)
    if not number:
        return set()  # the plain name is the one most often someone else's
    return {account for account, _, keys in evidence["candidates"] if account in in_series
            and email_domain(_keys_mailbox(keys) or "") == domain
            and _keys_number(keys)
            and not (_year_like(number) and _year_like(_keys_number(keys)))}


def _year_like(number: int | None) -> bool:
    """``bettyjansen95``, ``bettyjansen1998``: a year of birth, which namesakes share, not a
    counter."""
    return number is not None and (40 <= number <= 99 or 1930 <= number <= 2015)


def _series(number: int | None, candidates: Sequence[Any]) -> set[str]:
    """Candidates on a stem key numbered in one series with ``number``: numbers that reach it
    in steps of at most SERIES_GAP (``agreen15`` -> 13 -> 12 -> 9 -> ... -> 1 -> ``agreen``),
    and the same number at another provider."""
    if number is None:
        return set()
    numbered = sorted((n, account) for account, _, keys in candidates
                      if (n := _keys_number(keys)) is not None)
    found: set[str] = set()
    for direction in (1, -1):
        reach = number
        for n, account in (numbered if direction == 1 else reversed(numbered)):
            if (n - number) * direction < 0 or (n == number and (direction == -1 or n == 0)):
                continue  # the other side; one number at two providers counts once, and two
                # plain addresses ("carol.wang" at two providers) are two people, not a series
            if (n - reach) * direction > SERIES_GAP:
                break
            found.add(account)
            reach = n
    return found


def _series_strength(evidence: Mapping[str, Any], in_series: int) -> float:
    """A series link: crowded only by the strangers on the stem, not by the series itself."""
    strangers = evidence["accounts_on_key"] - in_series
    return _discounted(SERIES_STRENGTH, evidence, CROWD_SIZE["stem"], strangers)


def _key_strength(kind: str, evidence: Mapping[str, Any]) -> float:
    """One key's link strength after discounts for crowding and for converted accounts."""
    return _discounted(LINK_STRENGTH[kind], evidence, CROWD_SIZE[kind],
                       evidence["accounts_on_key"])


def _discounted(strength: float, evidence: Mapping[str, Any], crowd: int | None,
                crowded_by: int) -> float:
    """``strength`` less the key's converted accounts and ``crowded_by`` accounts beyond
    ``crowd``.

    Converted accounts discount what people share (a family computer, a card, an office
    network); on a name they are namesakes, who only crowd it: someone else called Morgan
    Perez paying says nothing of morgan.perez1, 2 and 3.
    """
    on_key = evidence["accounts_on_key"]
    shared = evidence["kind"] != "stem"
    unconverted = 1.0 - evidence["converted_on_key"] / on_key if on_key and shared else 1.0
    crowding = min(1.0, crowd / crowded_by) if crowd and crowded_by else 1.0
    return strength * unconverted * crowding
