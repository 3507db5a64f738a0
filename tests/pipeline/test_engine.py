"""The engine: de-duplication, deterministic ids, episodes, allow-lists, shadow mode, memory."""

import pytest

from detectors import build
from detectors.base import DAY, Observation, Verdict, merge, new_profile
from detectors.testing import make_event
from pipeline.allowlist import Allowlist
from pipeline.engine import Engine

CLOCK = "2026-12-01T00:00:00.000Z"


def brute_force(account="a1", start=0.0, n=12, prefix="bf"):
    return [make_event("login", account_id=account, t=start + 30.0 * i, success=False,
                       event_id=f"{prefix}{account}{start}-{i}", ip="198.51.100.7")
            for i in range(n)]


def ring(prefix="r", n=4, start=0.0):
    return [make_event("signup", account_id=f"{prefix}{i}", t=start + 3600.0 * i,
                       device_id=f"dev-{prefix}", email=f"{prefix}{i}q@example.com",
                       ip=f"198.51.{i}.1", event_id=f"s-{prefix}{i}")
            for i in range(n)]


def run(events, **kwargs):
    engine = Engine(build(), clock=lambda: CLOCK, **kwargs)
    return engine, [f for e in events for f in engine.process(e)]


def test_redelivered_events_are_dropped_once_seen():
    events = brute_force()
    engine, flags = run(events + events[:5])
    assert engine.stats.duplicates == 5
    assert engine.stats.events == len(events)
    assert len(flags) == 1


def test_a_busy_account_drops_redeliveries_from_a_day_back_and_forgets_older_ids():
    # 6,000 events in 60 h (one every 36 s), no sweep: the ids of the last 24 h are always
    # remembered, and the account never holds more than two windows of them.
    usage = [make_event("usage", account_id="busy", t=36.0 * i, units=1.0, event_id=f"u{i}")
             for i in range(6000)]
    engine = Engine(build(), clock=lambda: CLOCK, sweep_hours=1000.0)
    most = 0
    for event in usage:
        engine.process(event)
        most = max(most, len(engine.state.profiles["busy"].recent_ids))
    assert most <= 2 * DAY / 36.0 + 1
    day_back = [e for e in usage if e.ts.timestamp() >= usage[-1].ts.timestamp() - DAY + 60]
    for event in day_back:
        engine.process(event)
    assert engine.stats.duplicates == len(day_back) > 2000
    assert engine.stats.events == len(usage)


def test_flag_ids_are_deterministic_and_independent_of_the_clock():
    _, first = run(ring())
    engine = Engine(build(), clock=lambda: "2030-01-01T00:00:00.000Z")
    second = [f for e in ring() for f in engine.process(e)]
    assert [f.flag_id for f in first] == [f.flag_id for f in second]
    assert [f.reasons for f in first] == [f.reasons for f in second]
    assert {f.detected_at for f in first} == {CLOCK}


def test_one_flag_per_account_and_episode_until_severity_rises():
    # 12 failures flag once; 60 more in the same hour raise the severity, step by step.
    events = brute_force(n=12) + brute_force(start=400.0, n=60, prefix="more")
    _, flags = run(events)
    assert [f.severity for f in flags] == ["low", "medium", "high"]


def test_a_new_episode_flags_again_after_a_quiet_gap():
    events = brute_force() + brute_force(start=10 * DAY, prefix="later")
    _, flags = run(events)
    assert len(flags) == 2 and flags[0].flag_id != flags[1].flag_id


def test_allowlist_always_wins_and_is_counted():
    engine, flags = run(brute_force(), allowlist=Allowlist(accounts={"a1"}))
    assert flags == []
    assert engine.stats.suppressed_by_allowlist == 1


def test_an_allowlisted_ip_clears_every_account_it_implicates_not_only_the_last():
    # an IP failing against 12 accounts (a QA script): its earlier accounts are flagged
    # through the later ones' events, which carry the allow-listed IP
    attempts = [make_event("login", account_id=f"v{i}", ip="203.0.113.9", device_id=f"d{i}",
                           success=False, t=30.0 * i) for i in range(12)]
    engine, flags = run(attempts, allowlist=Allowlist(ips={"203.0.113.9"}))
    assert flags == []
    assert engine.stats.suppressed_by_allowlist == 12
    _, unlisted = run(attempts)
    assert {f.account_id for f in unlisted} == {f"v{i}" for i in range(12)}


def test_allowlisted_accounts_leave_related_accounts():
    allow = Allowlist(email_domains={"example.com"})
    events = ring(n=4)
    # only r3's own domain is not allow-listed: the others vanish from its ring
    events[3] = make_event("signup", account_id="r3", t=3 * 3600.0, device_id="dev-r",
                           email="r3q@other.org", ip="198.51.3.1", event_id="s-r3")
    engine, flags = run(events, allowlist=allow)
    assert all("r0" not in f.related_accounts for f in flags)
    assert engine.stats.suppressed_by_allowlist >= 1


def test_shadow_mode_marks_flags_but_keeps_them():
    _, flags = run(brute_force(), shadow=["login_frequency"])
    assert [f.mode for f in flags] == ["shadow"]
    _, enforced = run(brute_force())
    assert [f.mode for f in enforced] == ["enforce"]


def test_also_flagged_accounts_name_the_trigger():
    events = [make_event("login", account_id=f"v{i}", t=20.0 * i, ip="203.0.113.5",
                         device_id=f"d{i}", success=False) for i in range(6)]
    _, flags = run(events)
    assert sorted(f.account_id for f in flags) == [f"v{i}" for i in range(6)]
    earlier = [f for f in flags if f.account_id in {"v0", "v1", "v2", "v3"}]
    assert all(f.evidence["triggering_account"] == "v4" for f in earlier)
    assert all(f.related_accounts[0] == "v4" for f in earlier)


def test_expired_state_is_swept_by_event_time():
    engine, _ = run(ring() + brute_force())
    assert engine.state.keyed["trial_cycling"] and engine.state.keyed["login_frequency"]
    late = make_event("usage", account_id="someone", t=400 * DAY)
    engine.process(late)
    assert not engine.state.keyed["trial_cycling"]
    # only the one population-wide state stays (bounded, its hourly baseline kept)
    assert set(engine.state.keyed["login_frequency"]) == {"pop"}
    assert set(engine.state.profiles) == {"someone"}


def test_bad_configuration_is_refused_clearly():
    with pytest.raises(ValueError, match="unique"):
        Engine(build(["trial_cycling", "trial_cycling"]))
    with pytest.raises(ValueError, match="shadow"):
        Engine(build(), shadow=["nope"])
    with pytest.raises(ValueError, match="unknown detector"):
        build(["nope"])


def test_each_account_is_flagged_with_the_reasons_of_the_verdict_that_named_it():
    account_view = Verdict(score=0.9, reasons=("brute force on this account",),
                           evidence={"pattern": "brute_force"})
    population_view = Verdict(score=0.7, reasons=("stuffing across accounts",),
                              evidence={"pattern": "credential_stuffing"},
                              also_flag=("x1", "x2"), flag_account=False)
    merged = merge([population_view, account_view])
    assert merged.flag_account and merged.reasons == ("brute force on this account",)
    assert merged.also_flag == ("x1", "x2")
    assert merged.naming("x1") is population_view and merged.naming("a0") is merged
    engine = Engine([], clock=lambda: CLOCK)
    obs = Observation(event=make_event("login", account_id="a0", success=False), t=0.0,
                      seq=1, profile=engine.state.profiles.setdefault("a0", new_profile(0.0)))
    flags = {f.account_id: f for f in engine._flags("login_frequency", obs, merged)}
    assert set(flags) == {"a0", "x1", "x2"}
    assert flags["a0"].reasons == ["brute force on this account"]
    assert flags["x1"].reasons == ["stuffing across accounts"]
    assert flags["x1"].evidence["pattern"] == "credential_stuffing"
    # the population view alone: the account whose event revealed it is a bystander
    bystander = {f.account_id: f for f in engine._flags("other", obs, population_view)}
    assert set(bystander) == {"x1", "x2"}
    assert "triggering_account" not in bystander["x1"].evidence
    assert "a0" not in bystander["x1"].related_accounts


def test_a_merged_verdict_merged_again_still_names_each_account_by_its_own_part():
    tried = Verdict(score=0.7, reasons=("tried",), also_flag=("x1",), flag_account=False)
    taken = Verdict(score=0.95, reasons=("taken over",), also_flag=("x2",), flag_account=False)
    one_key = merge([tried, taken])  # one key's view: both outcomes of one attack
    other_key = Verdict(score=0.8, reasons=("brute force",))
    merged = merge([one_key, other_key])  # the detector's verdicts over all its keys
    assert merged.naming("x1") is tried and merged.naming("x2") is taken
    assert merged.reasons == ("brute force",)
