"""Refund abuse: serial purchase -> heavy use -> refund cycles, and rings sharing a card.

Three kinds of key meet in ``combine``:

- ``acct:`` keeps the account's recent refunds with what was consumed between each order and
  its refund (the engine's account profile knows the units used since the purchase).
- ``card:`` keeps the accounts that refunded with one card fingerprint: a ring of linked
  accounts that each refund shows up there whatever partitions the accounts live on.
- ``pop`` learns, from every purchase, the population's daily usage of paying accounts with
  online quantiles (``river.stats.Quantile``). A refund is *heavy* when the units consumed
  since the order are far above what the population uses over the same time.

One ordinary refund never flags; repeated refunds, repeated heavy refunds, or a card whose
accounts refund one after another do.

Examples
--------
>>> from detectors.testing import make_observation, run
>>> events = []
>>> for cycle in range(3):
...     t = cycle * 86_400.0 * 3
...     events += [make_observation("purchase", account_id="a1", order_id=f"o{cycle}", t=t),
...                make_observation("usage", account_id="a1", units=500.0, t=t + 3600),
...                make_observation("refund", account_id="a1", order_id=f"o{cycle}",
...                                 t=t + 86_400)]
>>> [(account, v.reasons[0]) for account, v in run(RefundAbuse(), events)]
[('a1', '3 refunds in 180 days against 3 purchases')]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from river import stats

from detectors.base import (
    DAY,
    DetectorBase,
    Observation,
    SlotState,
    Verdict,
    check_positive,
    check_unit_interval,
)

__all__ = ["RefundAbuse"]

POPULATION_KEY = "pop"


class RefundsState(msgspec.Struct):
    """Recent refunds of one account or one card: ``[account, t, units, days, order]`` rows."""

    key: str
    rows: list[list[Any]] = msgspec.field(default_factory=list)


class PopulationState(SlotState):
    """Daily usage of paying accounts, as online quantiles."""

    __slots__ = ("key", "last_t", "n", "p50", "p90")

    def __init__(self, key: str) -> None:
        self.key = key
        self.p50 = stats.Quantile(0.5)
        self.p90 = stats.Quantile(0.9)
        self.n = 0
        self.last_t = 0.0



class RefundAbuse(DetectorBase):
    """Flag serial refunders, consume-then-refund cycles and card rings that refund.

    Parameters
    ----------
    window_days
        How far back refunds count; also the state's time to live.
    serial_min_refunds
        Refunds in the window that make a serial refunder whatever the usage.
    heavy_factor
        A refund is heavy when the units used since the order exceed this many times the
        population's median daily usage over the days the order was held.
    min_population
        Purchases the population baseline needs before heaviness is judged (a median of ten
        clean purchases is close enough for a test at ``heavy_factor`` times it).
    baseline_min_days
        How long an account must have been seen before its purchase teaches the baseline.
    threshold
        Score at which a verdict becomes a flag.
    """

    name = "refund_abuse"
    event_types = frozenset({"purchase", "refund"})

    def __init__(
        self,
        *,
        window_days: float = 180.0,
        serial_min_refunds: int = 3,
        heavy_factor: float = 3.0,
        min_population: int = 10,
        baseline_min_days: float = 0.5,
        threshold: float = 0.7,
    ) -> None:
        check_positive(window_days=window_days, serial_min_refunds=serial_min_refunds,
                       heavy_factor=heavy_factor, min_population=min_population)
        check_unit_interval(threshold=threshold)
        self.window_days = window_days
        self.serial_min_refunds = serial_min_refunds
        self.heavy_factor = heavy_factor
        self.min_population = min_population
        self.baseline_min_days = baseline_min_days
        self.threshold = threshold

    def keys(self, obs: Observation) -> Sequence[str]:
        kind = obs.event.kind
        if kind == "purchase":
            return (POPULATION_KEY,)
        if kind != "refund":
            return ()
        keys = [f"acct:{obs.account_id}", POPULATION_KEY]
        if obs.profile.card:
            keys.append(f"card:{obs.profile.card}")
        return keys

    def new_state(self, key: str) -> RefundsState | PopulationState:
        return PopulationState(key) if key == POPULATION_KEY else RefundsState(key=key)

    def expired(self, state, now: float) -> bool:
        if isinstance(state, PopulationState):
            return False  # one small state for everyone
        return not state.rows or state.rows[-1][1] < now - self.window_days * DAY

    # -- per key ------------------------------------------------------------------------
    def score_one(self, state, obs: Observation) -> Verdict | None:
        if obs.event.kind != "refund":
            return None
        if isinstance(state, PopulationState):
            rate = state.p50.get() if state.n >= self.min_population else None
            rate = rate if rate else None  # a zero median says nothing about heaviness
            return Verdict(score=0.0, reasons=(), evidence={"role": "population",
                                                            "daily_units_p50": rate,
                                                            "purchases_seen": state.n})
        mine = _consumption(obs)
        since = obs.t - self.window_days * DAY
        rows = [r for r in state.rows if r[1] >= since]
        if state.key.startswith("acct:"):
            return Verdict(score=0.0, reasons=(), evidence={"role": "account",
                                                            "refunds": [*rows, mine]})
        others = [r for r in rows if r[0] != obs.account_id]
        if not others:
            return None
        return Verdict(score=0.0, reasons=(), evidence={"role": "card",
                                                        "card": state.key.split(":", 1)[1],
                                                        "refunds": [*others, mine]})

    def learn_one(self, state, obs: Observation, verdict: Verdict | None) -> None:
        if isinstance(state, PopulationState):
            profile = obs.profile
            # Only accounts seen for a while say what a day of use is (a new customer who
            # buys before using would teach the baseline "zero"); half a day covers most of
            # a day's activity, so a stream that starts today judges heaviness by tonight.
            # Accounts that refunded are left out: early in a stream a few serial refunders'
            # repurchases outnumber ordinary ones and would teach "heavy" as normal.
            if obs.event.kind == "purchase" and not profile.refunds and \
                    obs.t - profile.first_t >= self.baseline_min_days * DAY:
                rate = profile.units_total / ((obs.t - profile.first_t) / DAY)
                state.p50.update(rate)
                state.p90.update(rate)
                state.n += 1
                state.last_t = obs.t
            return
        since = obs.t - self.window_days * DAY
        state.rows = [r for r in state.rows if r[1] >= since][-31:]
        state.rows.append(_consumption(obs))

    # -- the event ----------------------------------------------------------------------
    def combine(self, obs: Observation, verdicts: list[Verdict]) -> Verdict | None:
        parts = {v.evidence["role"]: v.evidence for v in verdicts}
        rate = parts.get("population", {}).get("daily_units_p50")
        findings: list[tuple[float, str]] = []
        related: tuple[str, ...] = ()
        evidence: dict[str, Any] = {"population_daily_units_p50": rate}
        account = parts.get("account")
        if account:
            findings += self._serial(account["refunds"], obs, rate, evidence)
        card = parts.get("card")
        if card:
            found, related = self._ring(card, obs, rate, evidence)
            findings += found
        if not findings:
            return None
        score = max(score for score, _ in findings)
        if score < self.threshold:
            return None
        return Verdict(
            score=round(score, 4),
            reasons=tuple(reason for _, reason in sorted(findings, key=lambda f: -f[0])),
            evidence=evidence,
            related_accounts=related,
            also_flag=related,
            severity="high" if score >= 0.9 else "medium",
        )

    def _heavy(self, row: list[Any], rate: float | None) -> bool:
        units, days = row[2], row[3]
        if units is None or rate is None:
            return False
        return units > self.heavy_factor * max(rate, 1e-9) * max(1.0, days)

    def _serial(self, refunds, obs, rate, evidence) -> list[tuple[float, str]]:
        # Count refunded orders, not refund events: one order refunded in three partial
        # credits is one refund. The latest row of an order has its full consumption.
        by_order = {row[4]: row for row in refunds}
        count = len(by_order)
        heavy = [r for r in by_order.values() if self._heavy(r, rate)]
        purchases = max(obs.profile.purchases, count)
        evidence.update(refunds=count, heavy_refunds=len(heavy), purchases=purchases,
                        units_since_order=refunds[-1][2], days_since_order=refunds[-1][3])
        findings = []
        if count >= self.serial_min_refunds:
            score = min(0.99, 0.8 + 0.05 * (count - self.serial_min_refunds) + 0.05 * len(heavy))
            findings.append((score, f"{count} refunds in {self.window_days:.0f} days against "
                                    f"{purchases} purchases"))
        if len(heavy) >= 2:
            findings.append((0.8, f"{len(heavy)} refunds after heavy use (above "
                                  f"{self.heavy_factor:g}x the population's daily usage)"))
        if self._heavy(refunds[-1], rate):
            units, days = refunds[-1][2], refunds[-1][3]
            findings.append((0.5, f"refund after using {units:.0f} units in {days:.1f} days "
                                  f"(population median {rate:.1f} a day)"))
        return findings

    def _ring(self, card, obs, rate, evidence) -> tuple[list[tuple[float, str]], tuple[str, ...]]:
        refunds = card["refunds"]
        others = tuple(dict.fromkeys(r[0] for r in refunds[:-1]))
        heavy = sum(1 for r in refunds if self._heavy(r, rate))
        evidence.update(card=card["card"], card_refunders=len(others) + 1, card_heavy=heavy)
        if len(others) >= 2:
            score = 0.85
        elif heavy >= 1:
            score = 0.75
        else:
            return [], ()
        reason = f"card {card['card']} used for refunds by {len(others) + 1} accounts"
        return [(score, reason)], others


def _consumption(obs: Observation) -> list[Any]:
    """``[account, t, units used since the order, days since it, order id]`` for a refund."""
    order_id = obs.event.order_id
    order = obs.profile.orders.get(order_id)
    if order is None:  # bought before the stream began: consumption unknown
        return [obs.account_id, obs.t, None, None, order_id]
    units, days = obs.profile.units_total - order[2], (obs.t - order[0]) / DAY
    return [obs.account_id, obs.t, units, days, order_id]
