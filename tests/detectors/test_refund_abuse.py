"""refund_abuse at the engine level: purchases, usage and refunds in, flags out.

The population baseline needs 10 purchases before heaviness is judged, so every
scenario runs on top of 40 ordinary paying accounts that use the product a little (5-20 units
a day) before they renew, so their daily usage is known when they pay.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from detectors import build
from detectors.base import DAY, HOUR
from detectors.testing import make_event
from pipeline.engine import Engine

NAME = "refund_abuse"
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}


def replay(events, engine: Engine | None = None) -> dict[str, list]:
    """Feed events in time order through a fresh engine; return {account_id: [flags]}."""
    engine = engine or Engine(build([NAME]), clock=lambda: "2026-11-02T00:00:00.000Z")
    flags: dict[str, list] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.ts):
        for flag in engine.process(event):
            check_flag(flag)
            flags[flag.account_id].append(flag)
    for account, own in flags.items():
        # One flag per account per episode; a later one only when the severity rises.
        ranks = [SEVERITY_RANK[f.severity] for f in own]
        assert ranks == sorted(set(ranks)), (account, [f.severity for f in own])
    return dict(flags)


def check_flag(flag) -> None:
    assert flag.detector == NAME
    assert 0.0 <= flag.score <= 1.0
    assert flag.severity in SEVERITY_RANK
    assert flag.reasons and all(isinstance(r, str) and r.strip() for r in flag.reasons)
    assert flag.account_id not in flag.related_accounts
    assert len(set(flag.related_accounts)) == len(flag.related_accounts)


def population(*, buy_first: bool = False, n: int = 40, seed: int = 8):
    """Ordinary paying accounts using 5-20 units a day.

    By default each renews after four days of use (its daily usage is known when it pays);
    ``buy_first`` makes each buy first and use afterwards, as new customers do.
    """
    rng = random.Random(seed)
    events = []
    for i in range(n):
        account = f"pop{i:02d}"
        start = rng.uniform(0, 2) * DAY
        if buy_first:
            events.append(purchase(account, start, f"pop-ord-{i}", rng.choice([9.0, 19.0])))
        for day in range(4):
            events.append(usage(account, start + day * DAY + rng.uniform(1, 10) * HOUR,
                                rng.uniform(5, 20), feature=rng.choice(["export", "api"])))
        if not buy_first:
            events.append(purchase(account, start + 4 * DAY, f"pop-ord-{i}",
                                   rng.choice([9.0, 19.0])))
    return events


POPULATION_MEDIAN = (5, 20)  # what the baseline must learn from population()


def purchase(account: str, t: float, order: str, amount: float = 49.0):
    return make_event("purchase", account_id=account, t=t, order_id=order, amount=amount,
                      currency="EUR")


def usage(account: str, t: float, units: float, feature: str = "export"):
    return make_event("usage", account_id=account, t=t, units=units, feature=feature)


def refund(account: str, t: float, order: str, amount: float = 49.0, reason: str | None = None):
    fields = {"reason": reason} if reason else {}
    return make_event("refund", account_id=account, t=t, order_id=order, amount=amount,
                      currency="EUR", **fields)


def cycle(rng: random.Random, account: str, t: float, order: str, *, units: float,
          hold: float):
    """Buy, use ``units`` in a few irregular sessions over ``hold`` seconds, refund."""
    sessions = sorted(rng.uniform(0.05, 0.9) * hold for _ in range(5))
    return [purchase(account, t, order),
            *[usage(account, t + dt, units / 5) for dt in sessions],
            refund(account, t + hold, order, reason="not as described")]


# -- abuse ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cycles", [3, 4])
def test_serial_refunder(cycles):
    rng = random.Random(40 + cycles)
    events = population()
    t = 6 * DAY
    for n in range(cycles):
        events += cycle(rng, "serial", t, f"ser-{n}", units=rng.uniform(250, 400),
                        hold=rng.uniform(14, 30) * HOUR)
        t += rng.uniform(4, 9) * DAY
    flags = replay(events)
    assert set(flags) == {"serial"}
    last = flags["serial"][-1]
    assert last.evidence["refunds"] >= 3
    assert last.evidence["heavy_refunds"] >= 2
    assert any(f"refunds in 180 days against {last.evidence['purchases']} purchases" in r
               for r in last.reasons)
    low, high = POPULATION_MEDIAN
    assert low <= last.evidence["population_daily_units_p50"] <= high
    assert last.related_accounts == []


def test_consume_then_refund_twice():
    rng = random.Random(50)
    events = population()
    # Roughly 20x the population's ~12 units a day, used within a day of each order.
    first = cycle(rng, "consumer", 6 * DAY + 5 * HOUR, "con-1", units=240, hold=22 * HOUR)
    second = cycle(rng, "consumer", 15 * DAY + 13 * HOUR, "con-2", units=255, hold=20 * HOUR)
    flags = replay(events + first + second)
    assert set(flags) == {"consumer"}
    assert len(flags["consumer"]) == 1
    flag = flags["consumer"][0]
    assert flag.evidence["event_id"] == second[-1].event_id  # the second refund, not the first
    assert flag.evidence["heavy_refunds"] == 2
    assert "2 refunds after heavy use (above 3x the population's daily usage)" in flag.reasons
    assert any(r.startswith("refund after using 255 units in 0.8 days") for r in flag.reasons)


def test_consume_then_refund_on_the_first_days_of_a_stream():
    # Nobody has been seen for a day yet: customers seen for half a day already say what a
    # day of use is (a stream that starts today must not wait a day to judge heaviness).
    rng = random.Random(51)
    events = []
    for i in range(40):
        account, start = f"new{i:02d}", rng.uniform(0, 3) * HOUR
        events += [usage(account, start + h * HOUR, rng.uniform(2, 7)) for h in (1, 5, 10)]
        events.append(purchase(account, start + 13 * HOUR, f"new-ord-{i}", 19.0))
    first = cycle(rng, "early", 17 * HOUR, "early-1", units=240, hold=9 * HOUR)
    second = cycle(rng, "early", 30 * HOUR, "early-2", units=260, hold=10 * HOUR)
    flags = replay(events + first + second)
    assert set(flags) == {"early"}
    assert flags["early"][-1].evidence["heavy_refunds"] == 2


def test_refunders_do_not_teach_the_population_baseline():
    # Early in a stream the serial refunders' repurchases can outnumber ordinary purchases;
    # what they use before refunding is not what a day of use is.
    rng = random.Random(52)
    events = population(n=12)
    for i in range(8):
        t = 5 * DAY + i * HOUR
        for n in range(3):
            events += cycle(rng, f"serial{i}", t, f"ser{i}-{n}", units=3000, hold=10 * HOUR)
            t += DAY
    events += cycle(rng, "consumer", 9 * DAY, "con-1", units=240, hold=20 * HOUR)
    events += cycle(rng, "consumer", 11 * DAY, "con-2", units=250, hold=20 * HOUR)
    flags = replay(events)
    assert flags["consumer"][-1].evidence["heavy_refunds"] == 2
    low, high = POPULATION_MEDIAN
    assert low <= flags["consumer"][-1].evidence["population_daily_units_p50"] <= high


def test_card_ring_flags_every_account_that_refunded():
    rng = random.Random(60)
    events = population()
    ring = ["ring-lea", "ring-max", "ring-noa"]
    for i, account in enumerate(ring):
        signed = 5 * DAY + i * 19 * HOUR
        events.append(make_event("signup", account_id=account, t=signed,
                                 email=f"{account[5:]}.{rng.randrange(100, 999)}@gmail.com",
                                 ip=f"{88 + i}.{rng.randrange(256)}.14.3",
                                 device_id=f"d-{account}", card_fingerprint="fp_c4rd_88e1",
                                 plan="free"))
        events += cycle(rng, account, signed + rng.uniform(2, 6) * HOUR, f"{account}-o1",
                        units=rng.uniform(200, 300), hold=rng.uniform(18, 40) * HOUR)
    flags = replay(events)
    assert set(flags) == set(ring)
    last = flags["ring-noa"][-1]
    assert "card fp_c4rd_88e1 used for refunds by 3 accounts" in last.reasons
    assert set(last.related_accounts) == {"ring-lea", "ring-max"}
    assert last.evidence["card"] == "fp_c4rd_88e1"
    # The first refunder is flagged by a later one's evidence, naming who triggered it.
    first = flags["ring-lea"][0]
    assert first.evidence["triggering_account"] in {"ring-max", "ring-noa"}
    assert first.related_accounts[0] == first.evidence["triggering_account"]
    assert all(any("card fp_c4rd_88e1" in r for r in f.reasons)
               for own in flags.values() for f in own)


# -- benign look-alikes ---------------------------------------------------------------------
def test_one_ordinary_refund_after_little_use_is_quiet():
    events = [*population(), purchase("once", 6 * DAY + 3 * HOUR, "once-o1"),
              usage("once", 6 * DAY + 5 * HOUR, 4), usage("once", 7 * DAY + 9 * HOUR, 2.5),
              refund("once", 8 * DAY + 1 * HOUR, "once-o1", reason="wrong plan")]
    assert replay(events) == {}


def test_power_user_with_monthly_purchases_and_no_refunds_is_quiet():
    rng = random.Random(70)
    events = population()
    for day in range(90):
        for _ in range(rng.randint(2, 5)):
            events.append(usage("power", day * DAY + rng.uniform(7, 23) * HOUR,
                                rng.uniform(300, 900), feature="render"))
        if day % 30 == 3:
            events.append(purchase("power", day * DAY + 8 * HOUR, f"pow-{day}", 499.0))
    assert replay(events) == {}


def test_refund_of_an_order_bought_before_the_stream_began_is_quiet():
    engine = Engine(build([NAME]), clock=lambda: "2026-11-02T00:00:00.000Z")
    events = [*population(),
              usage("veteran", 3 * DAY, 12.0),
              refund("veteran", 7 * DAY + 4 * HOUR, "ord-2025-10-31-88412", amount=240.0,
                     reason="annual plan cancelled"),
              refund("stranger", 8 * DAY, "ord-legacy-1", amount=19.0)]
    assert replay(events, engine) == {}
    assert engine.stats.events == len(events)


# -- weaknesses found while writing these tests ------------------------------------------------
def couple_sharing_a_card():
    """Two spouses' accounts on one card; each buys, uses a little, refunds once."""
    events = []
    for i, (account, email) in enumerate([("anna", "anna.berg@gmail.com"),
                                          ("erik", "erik.berg@gmail.com")]):
        t = 7 * DAY + i * 9 * DAY + 3 * HOUR
        events += [make_event("signup", account_id=account, t=t, email=email, ip="83.250.1.9",
                              device_id=f"d-{account}", card_fingerprint="fp-berg",
                              plan="free"),
                   purchase(account, t + HOUR, f"{account}-o1", 29.0),
                   usage(account, t + DAY, 6), usage(account, t + 2 * DAY + 5 * HOUR, 5),
                   refund(account, t + 3 * DAY, f"{account}-o1", 29.0)]
    return events


def test_couple_sharing_a_card_each_refunding_once_after_light_use_is_quiet():
    assert replay(population() + couple_sharing_a_card()) == {}


def test_couple_is_quiet_when_the_population_buys_before_it_uses():
    assert replay(population(buy_first=True) + couple_sharing_a_card()) == {}


def test_one_order_refunded_in_three_partial_credits_is_quiet():
    events = [*population(), purchase("cust", 6 * DAY, "ord-77", 120.0),
              usage("cust", 7 * DAY, 8.0)]
    events += [refund("cust", 10 * DAY + k * 12 * DAY + 3 * HOUR * k, "ord-77", 15.0,
                      reason="service credit") for k in range(3)]
    assert replay(events) == {}
