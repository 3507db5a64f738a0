"""login_frequency at the engine level: logins in, flags out.

Every scenario asserts exactly which accounts are flagged. Timing is irregular (human) unless
the scenario is about machine regularity.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict

from detectors import build
from detectors.base import DAY, HOUR
from detectors.testing import EPOCH, make_event
from pipeline.engine import Engine

NAME = "login_frequency"
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}
MINUTE = 60.0


def replay(events) -> dict[str, list]:
    """Feed events in time order through a fresh engine; return {account_id: [flags]}."""
    engine = Engine(build([NAME]), clock=lambda: "2026-11-02T00:00:00.000Z")
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


def login(account: str, t: float, *, ip: str, device: str, success: bool = True,
          country: str = "US", agent: str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"):
    return make_event("login", account_id=account, t=t, ip=ip, device_id=device,
                      success=success, country=country, user_agent=agent)


def ordinary_users(rng: random.Random, start: float, hours: float, n: int = 6):
    """Unrelated people logging in normally around the same time, from their own homes."""
    events = []
    for i in range(n):
        ip = f"{rng.randrange(60, 220)}.{rng.randrange(256)}.{rng.randrange(256)}.{i + 10}"
        for _ in range(rng.randint(1, 3)):
            events.append(login(f"user-{i}", start + rng.uniform(0, hours) * HOUR, ip=ip,
                                device=f"d-home-{i}"))
    return events


def rhythm(rng: random.Random, account: str, start: float, *, every: float, jitter: float,
           n: int, ip: str, device: str):
    """``n`` logins ``every`` seconds apart, each gap off by up to ``jitter`` (a share)."""
    times = itertools.accumulate(every * (1 + rng.uniform(-jitter, jitter)) for _ in range(n))
    return [login(account, start + t, ip=ip, device=device) for t in times]


def clockwork(rng: random.Random, account: str, start: float, *, every: float, n: int,
              jitter_s: float, ip: str, device: str, agent: str):
    """``n`` logins on a clock: every ``every`` seconds, each up to ``jitter_s`` off."""
    return [login(account, start + every * i + rng.uniform(-jitter_s, jitter_s), ip=ip,
                  device=device, agent=agent) for i in range(n)]


def scripted_flag(flags: dict[str, list], account: str, *, every: float):
    """The one account flagged, as scripted logins ``every`` seconds: its first flag."""
    assert set(flags) == {account}
    flag = flags[account][0]
    assert flag.evidence["pattern"] == "scripted"
    assert abs(flag.evidence["mean_interval_s"] - every) < 2
    return flag


def accounts_in(flags: dict[str, list], pattern: str) -> set[str]:
    return {a for a, own in flags.items() if any(f.evidence.get("pattern") == pattern
                                                 for f in own)}


# -- abuse ----------------------------------------------------------------------------------
STUFFER_IP = "185.220.101.47"
VICTIMS = [f"victim{i:02d}" for i in range(30)]


def stuffing_attack(rng: random.Random, start: float):
    """One IP failing against 30 distinct accounts within 40 minutes, in shuffled order."""
    times = sorted(rng.uniform(0, 40 * MINUTE) for _ in VICTIMS)
    return [login(v, start + t, ip=STUFFER_IP, device=f"hb-{rng.getrandbits(32):08x}",
                  success=False, country="NL", agent="python-requests/2.31")
            for v, t in zip(VICTIMS, times, strict=True)]


class TestCredentialStuffing:
    def test_every_account_hit_by_one_ip_is_flagged_including_the_first(self):
        rng = random.Random(11)
        start = 2 * DAY + 3 * HOUR
        attack = stuffing_attack(rng, start)
        flags = replay(attack + ordinary_users(rng, start - HOUR, 3))
        assert set(flags) == set(VICTIMS)
        # The first victims were flagged through the later evidence (also_flag).
        first = [e.account_id for e in attack[:4]]
        for victim in first:
            flag = flags[victim][0]
            assert flag.evidence["triggering_account"] != victim
            assert flag.related_accounts[0] == flag.evidence["triggering_account"]
        for own in flags.values():
            for flag in own:
                assert flag.evidence["pattern"] == "credential_stuffing"
                assert flag.evidence["ip"] == STUFFER_IP
                assert flag.reasons[0].startswith(f"IP {STUFFER_IP} failed logins against ")
                assert flag.evidence["accounts_failed"] >= 5
        assert max(f.evidence["accounts_failed"] for o in flags.values() for f in o) == 30
        # No victim is flagged twice at one severity.
        assert all(len(own) == len({f.severity for f in own}) for own in flags.values())

    def test_a_success_from_the_attacking_ip_is_a_high_severity_takeover(self):
        rng = random.Random(12)
        start = 5 * DAY + 22 * HOUR
        attack = stuffing_attack(rng, start)
        early = attack[2]  # failed early on, then the attacker finds its password
        takeover_t = start + 25 * MINUTE
        events = [*attack,
                  login(early.account_id, takeover_t, ip=STUFFER_IP, device="hb-77aa01fe",
                        country="NL", agent="python-requests/2.31"),
                  # An account that was not tried before: its first attempt succeeds.
                  login("fresh-hit", takeover_t + 83, ip=STUFFER_IP, device="hb-77aa0200",
                        country="NL", agent="python-requests/2.31")]
        flags = replay(events)
        assert set(flags) == {*VICTIMS, "fresh-hit"}
        victim = flags[early.account_id]
        assert victim[0].severity != "high"
        assert victim[-1].severity == "high"
        assert victim[-1].ts.startswith("2026-11-06T22:25")
        assert any("likely takeover" in r for r in victim[-1].reasons)
        assert [f.severity for f in flags["fresh-hit"]] == ["high"]
        assert flags["fresh-hit"][0].score >= 0.95

    def test_a_neighbour_at_home_on_the_attacking_subnet_is_no_takeover(self):
        # the attack rotates through hosts of one residential /24; a customer living on it
        # logs in as every day, from the device and IP they always use
        rng = random.Random(19)
        start = 3 * DAY + 7 * HOUR
        home = dict(ip="70.216.147.104", device="d-home-pc", country="CA")
        events = [login("neighbour", day * DAY + 7 * HOUR + rng.uniform(0, HOUR), **home)
                  for day in range(3)]
        events += [login(v, start + rng.uniform(0, 40 * MINUTE),
                         ip=f"70.216.147.{rng.randrange(2, 250)}",
                         device=f"hb-{rng.getrandbits(32):08x}", success=False, country="CA")
                   for v in VICTIMS]
        events.append(login("neighbour", start + 30 * MINUTE, **home))
        flags = replay(events)
        assert set(flags) == set(VICTIMS)

    def test_a_stranger_who_got_in_before_the_ip_was_recognised_is_a_takeover(self):
        # the owner of "early-hit" has history; the attacker gets in at the first try from
        # the stuffing IP before five accounts failed from it
        rng = random.Random(18)
        start = 4 * DAY + 2 * HOUR
        attack = stuffing_attack(rng, start)
        first = min(e.ts for e in attack)
        hit_t = (first - EPOCH).total_seconds() - 60
        events = [login("early-hit", DAY, ip="100.9.7.20", device="own-early"),
                  login("colleague", DAY, ip="100.9.8.20", device="own-colleague"),
                  *attack,
                  login("early-hit", hit_t, ip=STUFFER_IP, device="hb-1", country="NL",
                        agent="python-requests/2.31"),
                  # the owner's own device behind the same IP is no stranger
                  login("colleague", hit_t + 5, ip=STUFFER_IP, device="own-colleague")]
        flags = replay(events)
        assert set(flags) == {*VICTIMS, "early-hit"}
        assert [f.severity for f in flags["early-hit"]] == ["high"]
        assert "at the first try" in flags["early-hit"][0].reasons[-1]

    def test_a_victim_of_a_large_attack_is_medium_until_it_is_taken_over(self):
        # the 30th account tried comes when the attack is already large; its password works
        # ten minutes later: that takeover must still raise a high flag
        rng = random.Random(17)
        start = 3 * DAY + 4 * HOUR
        attack = stuffing_attack(rng, start)
        last = max(attack, key=lambda e: e.ts).account_id
        takeover = login(last, start + 50 * MINUTE, ip=STUFFER_IP, device="hb-77aa0300",
                         country="NL", agent="python-requests/2.31")
        flags = replay([*attack, takeover])
        assert [f.severity for f in flags[last]] == ["medium", "high"]
        assert any("likely takeover" in r for r in flags[last][-1].reasons)
        assert all(f.severity != "high" for a, own in flags.items() if a != last for f in own)

    def test_stuffing_from_one_device_across_rotating_ips(self):
        rng = random.Random(13)
        start = 1 * DAY + 14 * HOUR
        targets = [f"mbx-{i:02d}" for i in range(15)]
        times = sorted(rng.uniform(0, 35 * MINUTE) for _ in targets)
        attack = [login(a, start + t, ip=f"{rng.randrange(23, 220)}.{rng.randrange(256)}."
                                         f"{rng.randrange(256)}.{rng.randrange(2, 250)}",
                        device="hb-chrome-4f1a", success=False, country=rng.choice(
                            ["BR", "VN", "IN", "US"]))
                  for a, t in zip(targets, times, strict=True)]
        flags = replay(attack + ordinary_users(rng, start, 1))
        assert set(flags) == set(targets)
        assert all(any(r.startswith("device hb-chrome-4f1a failed logins against") for r in
                       f.reasons) for own in flags.values() for f in own)


    def test_slow_stuffing_from_one_ip_over_hours_is_flagged(self):
        # four accounts an hour, under the five a one-hour window needs: over the hours the
        # IP still fails against 16 accounts that never get in
        rng = random.Random(14)
        start = 3 * DAY + 20 * HOUR
        targets = [f"slow-{i:02d}" for i in range(16)]
        attack = [login(a, start + i * 15 * MINUTE + rng.uniform(0, 60), ip=STUFFER_IP,
                        device=f"hb-{rng.getrandbits(32):08x}", success=False, country="NL")
                  for i, a in enumerate(targets)]
        flags = replay(attack + ordinary_users(rng, start, 4))
        assert set(flags) == set(targets)
        assert all(f.evidence["pattern"] == "credential_stuffing"
                   for own in flags.values() for f in own)

    def test_slow_stuffing_rotating_through_one_subnet_is_flagged(self):
        # 8 addresses of one /24, 20 accounts over 5 hours: no address reaches five accounts
        rng = random.Random(16)
        start = 6 * DAY + 9 * HOUR
        hosts = rng.sample(range(2, 254), 8)
        targets = [f"rot-{i:02d}" for i in range(20)]
        attack = [login(a, start + i * 15 * MINUTE + rng.uniform(0, 60),
                        ip=f"193.94.66.{hosts[i % 8]}", device=f"hb-{rng.getrandbits(32):08x}",
                        success=False, country="DE")
                  for i, a in enumerate(targets)]
        flags = replay(attack + ordinary_users(rng, start, 5))
        assert set(flags) == set(targets)
        assert any(r.startswith("subnet 193.94.66.0/24 failed logins against") for own in
                   flags.values() for f in own for r in f.reasons)

    def test_a_script_failing_on_seven_accounts_from_three_addresses_of_a_subnet(self):
        # below every count for people: at most three accounts an address, seven on the /24;
        # but a script's failures are nobody's mistype
        rng = random.Random(18)
        start = 3 * DAY + 2 * HOUR
        targets = [f"api-victim-{i}" for i in range(7)]
        attack = [login(a, start + i * 9 * MINUTE + rng.uniform(0, 60),
                        ip=f"45.137.21.{(17, 88, 203)[i % 3]}",
                        device=f"hb-{rng.getrandbits(32):08x}", success=False, country="NL",
                        agent="Go-http-client/2.0")
                  for i, a in enumerate(targets)]
        flags = replay(attack + ordinary_users(rng, start, 2))
        assert set(flags) == set(targets)
        reasons = [r for own in flags.values() for f in own for r in f.reasons]
        assert any(r.startswith("automated clients on subnet 45.137.21.0/24 failed logins "
                                "against") for r in reasons)
        assert any("'Go-http-client/2.0' is a script" in r for r in reasons)

    def test_integrations_failing_after_a_password_rotation_then_fixed_are_quiet(self):
        # eight customers' API clients in one data centre /24 fail through a morning after
        # their passwords changed, each getting in once its owner configures the new one
        rng = random.Random(19)
        start = 5 * DAY + 10 * HOUR
        events = []
        for i in range(8):
            ip, device = f"45.137.21.{30 + i}", f"d-int-{i}"
            t = start + i * 20 * MINUTE + rng.uniform(0, 5 * MINUTE)
            for k in range(3):
                events.append(login(f"integration{i}", t + k * 4 * MINUTE, ip=ip, device=device,
                                    success=False, agent="python-requests/2.32.3"))
            events.append(login(f"integration{i}", t + rng.uniform(15, 25) * MINUTE, ip=ip,
                                device=device, agent="python-requests/2.32.3"))
        assert replay(events) == {}

    def test_a_subnet_where_a_dozen_strangers_mistype_over_hours_is_quiet(self):
        # a busy residential /24: twelve people fail once in six hours and log in from home
        # later; fewer than three times what one address needs
        rng = random.Random(17)
        start = 7 * DAY + 8 * HOUR
        events = []
        for i in range(12):
            t = start + rng.uniform(0, 6) * HOUR
            events.append(login(f"resident{i:02d}", t, ip=f"86.181.107.{10 + i}",
                                device=f"d-res-{i}", success=False, country="GB"))
            events.append(login(f"resident{i:02d}", t + 2 * HOUR, ip=f"31.94.{i}.7",
                                device=f"d-res-{i}", country="GB"))
        assert replay(events) == {}

    def test_hotel_wifi_where_a_few_guests_give_up_over_a_day_is_quiet(self):
        rng = random.Random(15)
        events = []
        for i in range(80):
            t = 4 * DAY + rng.uniform(7, 23) * HOUR
            device = f"d-guest-{i:02d}"
            if i % 11 == 0:  # a wrong password, then no login from here
                events.append(login(f"guest{i:02d}", t, ip="81.2.69.160", device=device,
                                    success=False, country="GB"))
                continue
            for k in range(rng.randint(1, 3)):
                events.append(login(f"guest{i:02d}", t + k * HOUR, ip="81.2.69.160",
                                    device=device, country="GB"))
        assert sum(not e.success for e in events) >= 7
        assert replay(events) == {}


class TestOneAccount:
    def test_brute_force_25_failures_in_20_minutes_from_two_ips(self):
        rng = random.Random(14)
        start = 3 * DAY + 2 * HOUR
        ips = ["91.204.14.2", "91.204.14.3"]
        events = [login("target", start + rng.uniform(0, 20 * MINUTE), ip=rng.choice(ips),
                        device="d-attacker", success=False, country="RU")
                  for _ in range(25)]
        # The owner's normal history on the days before.
        events += [login("target", d * DAY + rng.uniform(8, 20) * HOUR, ip="73.14.88.2",
                         device="d-owner-mac") for d in range(3)]
        flags = replay(events + ordinary_users(rng, start, 1))
        assert set(flags) == {"target"}
        own = flags["target"]
        assert own[0].evidence["pattern"] == "brute_force"
        assert own[0].reasons[0].startswith("10 failed logins in 60 min")
        assert own[-1].evidence["failures"] <= 25
        assert own[-1].severity in {"medium", "high"}

    def test_slow_brute_force_over_hours_is_flagged(self):
        # a guess every 8-16 minutes (irregular, so no script rhythm): never ten in one hour
        rng = random.Random(33)
        start = 4 * DAY + 1 * HOUR
        times = list(itertools.accumulate(rng.uniform(8, 16) * MINUTE for _ in range(30)))
        events = [login("target", start + t, ip="91.204.14.2", device="d-attacker",
                        success=False, country="RU") for t in times]
        events += [login("target", d * DAY + rng.uniform(8, 20) * HOUR, ip="73.14.88.2",
                         device="d-owner-mac") for d in range(3)]
        flags = replay(events + ordinary_users(rng, start, 5))
        assert set(flags) == {"target"}
        first = flags["target"][0]
        assert first.evidence["pattern"] == "brute_force"
        assert first.reasons[0].startswith("20 failed logins in 6 h")

    def test_brute_force_at_a_guess_an_hour_for_two_days_is_flagged(self):
        # 40 guesses, 20-100 minutes apart (no machine rhythm), from three attacker devices:
        # far fewer in 6 h than the windows need; the attacker's success at the end is a
        # takeover
        rng = random.Random(42)
        start = 4 * DAY
        times = list(itertools.accumulate(rng.uniform(20, 100) * MINUTE for _ in range(40)))
        events = [login("target", start + t, ip=f"91.204.14.{k % 5}", device=f"d-atk-{k % 3}",
                        success=False, country="RU") for k, t in enumerate(times)]
        events.append(login("target", start + times[-1] + HOUR, ip="91.204.14.9",
                            device="d-atk-0", country="RU"))
        events += [login("target", d * DAY + rng.uniform(8, 20) * HOUR, ip="73.14.88.2",
                         device="d-owner-mac") for d in range(3)]
        flags = replay(events + ordinary_users(rng, start, 40))
        assert set(flags) == {"target"}
        first, last = flags["target"][0], flags["target"][-1]
        assert first.reasons[0].startswith("30 failed logins in a row over ")
        assert "3 device(s) the owner never used" in first.reasons[0]
        assert last.severity == "high" and "possible takeover" in last.reasons[-1]

    def test_a_client_with_a_stale_password_on_the_owners_device_is_quiet(self):
        # an old laptop the owner used retries a saved password, about every 45 minutes for
        # two days: 64 failures in a row, but from the owner's own device
        rng = random.Random(43)
        events = [login("stale", 3 * DAY, ip="73.14.88.2", device="d-old-laptop")]
        for k in range(64):
            t = 4 * DAY + k * 45 * MINUTE + rng.uniform(-10, 10) * MINUTE
            events.append(login("stale", t, ip="73.14.88.2", device="d-old-laptop",
                                success=False))
        assert replay(events) == {}

    def test_a_forgetful_owner_failing_a_dozen_times_over_a_day_is_quiet(self):
        rng = random.Random(34)
        events = []
        for hour in range(9, 21):  # a wrong saved password on one device, hour after hour
            t = 5 * DAY + hour * HOUR + rng.uniform(0, 600)
            events += [login("forgetful", t, ip="73.14.88.2", device="d-old-laptop",
                             success=False),
                       login("forgetful", t + 90, ip="73.14.88.2", device="d-phone")]
        assert replay(events) == {}

    def test_account_shared_from_five_devices_in_four_countries_in_a_day(self):
        places = [("US", "d-iphone-a1", "67.180.2.9", 0.0),
                  ("DE", "d-win-b2", "84.152.9.40", 3 * HOUR + 1170),
                  ("BR", "d-android-c3", "177.33.4.21", 8 * HOUR + 2400),
                  ("JP", "d-mac-d4", "126.59.7.3", 15 * HOUR + 660),
                  ("US", "d-ipad-e5", "67.180.2.77", 22 * HOUR + 1980)]
        events = [login("shared-acct", 1 * DAY + t, ip=ip, device=dev, country=c)
                  for c, dev, ip, t in places]
        flags = replay(events)
        assert set(flags) == {"shared-acct"}
        flag = flags["shared-acct"][0]
        assert flag.evidence["pattern"] == "account_sharing"
        # Three devices and two impossible trips (US -> DE -> BR in 9 h) already suffice.
        assert flag.evidence["devices"] >= 3
        assert flag.evidence["impossible_trips"] >= 2
        assert set(flag.evidence["countries"]) >= {"US", "DE", "BR"}
        assert flag.reasons[0].startswith(f"{flag.evidence['devices']} devices in ")
        assert "countries within" in flag.reasons[0]
        assert any("impossible trips" in r for r in flag.reasons)
        assert all(f.evidence["pattern"] == "account_sharing" for f in flags["shared-acct"])

    def test_account_shared_across_neighbouring_countries_without_impossible_trips(self):
        places = [("BE", "d-lenovo-01", "81.246.3.10", 0.0),
                  ("NL", "d-iphone-02", "145.53.9.2", 2 * HOUR + 1200),
                  ("FR", "d-galaxy-03", "90.112.4.77", 7 * HOUR + 150),
                  ("DE", "d-macbook-04", "84.152.61.3", 13 * HOUR + 2900),
                  ("BE", "d-ipad-05", "81.246.3.99", 20 * HOUR + 480)]
        events = [login("netflixish", 3 * DAY + t, ip=ip, device=dev, country=c)
                  for c, dev, ip, t in places]
        flags = replay(events)
        assert set(flags) == {"netflixish"}
        flag = flags["netflixish"][0]
        assert flag.evidence == {**flag.evidence, "pattern": "account_sharing",
                                 "impossible_trips": 0}
        assert flag.evidence["devices"] >= 4 and len(flag.evidence["countries"]) >= 3
        assert flag.reasons[0].startswith("4 devices in 4 countries within")

    def test_scripted_logins_every_300_seconds(self):
        rng = random.Random(15)
        start = 4 * DAY + 1 * HOUR + 17
        events = clockwork(rng, "bot-acct", start, every=300, n=30, jitter_s=1,
                           ip="34.89.12.6", device="d-vps-01", agent="curl/8.4")
        flags = replay(events + ordinary_users(rng, start, 3))
        flag = scripted_flag(flags, "bot-acct", every=300)
        assert "logins every 300 s" in flag.reasons[0]
        assert "machine-regular" in flag.reasons[0]
        assert len(flags["bot-acct"]) == 1


    def test_scripted_logins_with_jitter_are_still_machine_regular(self):
        # every 10 minutes give or take 12 % (a bot hiding its clock): a coefficient of
        # variation near 0.07, where people stay above 0.3 over 16 logins
        rng = random.Random(16)
        start = 5 * DAY + 3 * HOUR
        events = rhythm(rng, "jittery-bot", start, every=600, jitter=0.12, n=40,
                        ip="34.89.12.7", device="d-vps-02")
        flags = replay(events + ordinary_users(rng, start, 3))
        assert set(flags) == {"jittery-bot"}
        assert flags["jittery-bot"][0].evidence["pattern"] == "scripted"

    def test_a_script_with_its_owner_logging_in_beside_it_is_machine_regular(self):
        # every 747 s from a server, and the owner from their phone now and then: each of the
        # owner's logins splits one of the script's gaps in two
        rng = random.Random(17)
        start = 6 * DAY + 16 * HOUR
        events = clockwork(rng, "shared-bot", start, every=747, n=26, jitter_s=0.5,
                           ip="85.161.169.146", device="d-srv", agent="python-requests/2.32.3")
        events += [login("shared-bot", start + hours * HOUR, ip="23.69.251.145",
                         device="d-owner-phone") for hours in (0.7, 2.55, 4.4)]
        flags = replay(events + ordinary_users(rng, start, 3))
        flag = scripted_flag(flags, "shared-bot", every=747)
        assert "14 of the last 16 intervals" in flag.reasons[0]

    def test_a_session_timeout_rhythm_with_logins_in_between_is_quiet(self):
        # a person signed out every ~30 minutes (give or take 20 %) who logs in again, and on
        # a second device now and then: regular-ish, but far from a machine's rhythm
        rng = random.Random(18)
        start = 6 * DAY + 9 * HOUR
        events = rhythm(rng, "office-worker", start, every=1800, jitter=0.2, n=30,
                        ip="73.14.88.2", device="d-work-laptop")
        events += [login("office-worker", start + hours * HOUR, ip="73.14.88.2",
                         device="d-phone") for hours in (2.2, 7.9)]
        assert replay(events) == {}


# -- benign look-alikes ---------------------------------------------------------------------
def test_office_nat_with_three_mistypers_is_quiet():
    rng = random.Random(21)
    events = []
    day = 2 * DAY
    for i in range(40):
        device = f"d-acme-{i:03d}"
        for _ in range(rng.randint(1, 4)):
            t = day + rng.uniform(8.5, 18) * HOUR
            if i < 3:  # three people mistype once or twice before getting in
                for k in range(rng.randint(1, 2)):
                    events.append(login(f"emp{i:02d}", t - 20 - 15 * k, ip="62.140.3.10",
                                        device=device, success=False, country="DE"))
            events.append(login(f"emp{i:02d}", t, ip="62.140.3.10", device=device,
                                country="DE"))
    assert sum(not e.success for e in events) >= 3
    assert replay(events) == {}


def test_mistyper_three_failures_then_success_on_two_days_is_quiet():
    events = []
    for base in (1 * DAY + 9 * HOUR + 720, 4 * DAY + 20 * HOUR + 2400):
        events += [login("clumsy", base + dt, ip="86.12.40.7", device="d-clumsy-pc",
                         success=False, country="GB") for dt in (0, 14, 41)]
        events.append(login("clumsy", base + 77, ip="86.12.40.7", device="d-clumsy-pc",
                            country="GB"))
    assert replay(events) == {}


def test_traveller_france_then_us_then_japan_is_quiet():
    trips = [("FR", "90.84.1.12", 0.0), ("FR", "90.84.1.12", 2 * HOUR + 300),
             ("US", "172.58.3.91", 10 * HOUR), ("US", "172.58.3.91", 1 * DAY + 1500),
             ("US", "98.42.7.3", 2 * DAY + 4 * HOUR),
             ("JP", "126.12.80.4", 10 * HOUR + 3 * DAY), ("JP", "126.12.80.4", 4 * DAY + 2 * HOUR)]
    events = [login("flyer", 6 * DAY + t, ip=ip, device="d-pixel7-ab12", country=c)
              for c, ip, t in trips]
    assert replay(events) == {}


def test_family_sharing_one_device_is_quiet():
    rng = random.Random(22)
    events = []
    for member in ("fam-mom", "fam-dad", "fam-kid"):
        for day in range(5):
            for _ in range(rng.randint(1, 3)):
                events.append(login(member, day * DAY + rng.uniform(7, 23) * HOUR,
                                    ip="24.5.61.7", device="d-family-ipad"))
    assert replay(events) == {}


def test_human_logging_in_irregularly_for_two_weeks_is_quiet():
    rng = random.Random(23)
    events = []
    for day in range(14):
        for _ in range(rng.randint(1, 4)):
            t = day * DAY + rng.uniform(7, 23.5) * HOUR
            device = rng.choice(["d-own-phone", "d-own-laptop"])
            if rng.random() < 0.08:
                events.append(login("human", t - 25, ip="81.4.9.120", device=device,
                                    success=False, country="ES"))
            events.append(login("human", t, ip="81.4.9.120", device=device, country="ES"))
    assert len(events) >= 20
    assert replay(events) == {}


# -- weaknesses found while writing these tests ------------------------------------------------
def test_small_office_after_a_password_rotation_is_quiet():
    rng = random.Random(24)
    events = []
    for i in range(6):
        t = 2 * DAY + 9 * HOUR + i * 240 + rng.uniform(0, 60)
        device = f"d-office-{i}"
        events += [login(f"emp{i}", t, ip="62.140.3.10", device=device, success=False,
                         country="DE"),
                   login(f"emp{i}", t + 25, ip="62.140.3.10", device=device, success=False,
                         country="DE"),
                   login(f"emp{i}", t + 70, ip="62.140.3.10", device=device, country="DE")]
    assert replay(events) == {}


def test_brute_force_after_a_single_mistype_yesterday_is_flagged():
    rng = random.Random(25)
    events = [login("u-anna", 9 * HOUR, ip="24.1.19.7", device="d-anna-mac", success=False),
              login("u-anna", 9 * HOUR + 40, ip="24.1.19.7", device="d-anna-mac")]
    start = 1 * DAY + 14 * HOUR
    events += [login("u-anna", start + rng.uniform(0, 20 * MINUTE),
                     ip=rng.choice(["91.204.14.2", "91.204.14.3"]), device="d-attacker",
                     success=False, country="RU")
               for _ in range(25)]
    assert set(replay(events)) == {"u-anna"}


# -- stuffing spread over rotating proxies and device fingerprints ---------------------------
def owners_at_home(accounts, day: float):
    """Each account's owner logs in from their own device and home network: their history."""
    return [login(a, day + (i + 1) * 97.0, ip=f"100.{i}.7.20", device=f"own-{a}")
            for i, a in enumerate(accounts)]


def spread_attack(rng: random.Random, accounts, start: float, minutes: float = 90.0):
    """Each attempt from a fresh residential IP and a fresh device: no IP, device or /24 is
    shared by two victims."""
    return [login(a, start + rng.uniform(0, minutes * MINUTE),
                  ip=f"{rng.randrange(11, 99)}.{rng.randrange(256)}.{n}.{rng.randrange(2, 250)}",
                  device=f"fp-{rng.getrandbits(40):010x}", success=False,
                  country=rng.choice(("BR", "VN", "DE")))  # the owners live in the US
            for n, a in enumerate(accounts)]


class TestSpreadStuffing:
    victims = [f"spread{i:02d}" for i in range(14)]
    start = 3 * DAY + 2 * HOUR

    def test_every_established_account_a_stranger_failed_on_is_flagged(self):
        rng = random.Random(31)
        events = [*owners_at_home(self.victims, DAY), *spread_attack(rng, self.victims, self.start),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert set(flags) == set(self.victims)  # the ordinary users who revealed it are not
        for own in flags.values():
            flag = own[0]
            assert flag.severity in {"low", "medium"}
            assert flag.evidence["spread"] is True
            assert "never used" in flag.reasons[0]
            assert "triggering_account" not in flag.evidence  # a bystander's login
            assert flag.evidence["accounts_failed"] >= 8

    def test_without_history_nothing_is_a_strangers_attempt(self):
        rng = random.Random(32)
        flags = replay([*spread_attack(rng, self.victims, self.start),
                        *ordinary_users(rng, self.start, 3)])
        assert flags == {}

    def test_an_owner_on_a_new_phone_who_mistypes_during_the_attack_is_quiet(self):
        rng = random.Random(33)
        owner = "new-phone"
        events = [*owners_at_home([*self.victims, owner], DAY),
                  *spread_attack(rng, self.victims, self.start),
                  # fails twice from the new phone on mobile data, then gets in from it
                  login(owner, self.start + 20 * MINUTE, ip="172.58.3.9", device="new-ph",
                        success=False),
                  login(owner, self.start + 21 * MINUTE, ip="172.58.3.9", device="new-ph",
                        success=False),
                  login(owner, self.start + 23 * MINUTE, ip="172.58.3.9", device="new-ph"),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert owner not in flags
        assert set(flags) == set(self.victims)

    def test_an_owner_who_fails_on_a_new_phone_and_gives_up_during_the_attack_is_quiet(self):
        # at home in the US or on mobile data: a stranger's device and /24, but the owner's
        # country and one device, as the owner on a new phone
        rng = random.Random(36)
        events = [*owners_at_home([*self.victims, "gives-up"], DAY),
                  *spread_attack(rng, self.victims, self.start),
                  login("gives-up", self.start + 30 * MINUTE, ip="172.58.3.9", device="new-ph",
                        success=False),
                  login("gives-up", self.start + 31 * MINUTE, ip="172.58.3.9", device="new-ph",
                        success=False),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert set(flags) == set(self.victims)

    def test_a_stranger_getting_in_after_failing_is_a_high_severity_takeover(self):
        rng = random.Random(34)
        attack = spread_attack(rng, self.victims, self.start)
        hit = attack[0]
        takeover = login(hit.account_id, (hit.ts - EPOCH).total_seconds() + 4 * MINUTE,
                         ip="77.12.40.9", device="fp-another", country="VN")
        flags = replay([*owners_at_home(self.victims, DAY), *attack, takeover,
                        *ordinary_users(rng, self.start, 3)])
        assert set(flags) == set(self.victims)
        assert flags[hit.account_id][-1].severity == "high"
        assert "likely takeover" in flags[hit.account_id][-1].reasons[-1]

    def test_the_owner_getting_in_from_home_does_not_explain_a_failure_from_abroad(self):
        rng = random.Random(37)
        attack = spread_attack(rng, self.victims, self.start)
        first = min(attack, key=lambda e: e.ts)
        home = int(first.account_id[-2:])
        back = login(first.account_id, (first.ts - EPOCH).total_seconds() + 3 * MINUTE,
                     ip=f"100.{home}.7.20", device=f"own-{first.account_id}")
        flags = replay([*owners_at_home(self.victims, DAY), *attack, back,
                        *ordinary_users(rng, self.start, 3)])
        assert set(flags) == set(self.victims)

    def test_an_owner_failing_on_a_tablet_then_getting_in_on_a_new_laptop_at_home_is_quiet(self):
        # two devices the owner never used before, on two networks, both in the owner's country
        rng = random.Random(41)
        t = self.start + 20 * MINUTE
        events = [*owners_at_home([*self.victims, "two-devices"], DAY),
                  *spread_attack(rng, self.victims, self.start),
                  *(login("two-devices", t + k * 20, ip="172.58.3.9", device="new-tablet",
                          success=False) for k in range(3)),
                  login("two-devices", t + 2 * HOUR, ip="96.8.4.30", device="new-laptop"),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert set(flags) == set(self.victims)

    def test_a_traveller_failing_on_a_new_phone_abroad_then_getting_in_there_is_quiet(self):
        rng = random.Random(38)
        t = self.start + 20 * MINUTE
        events = [*owners_at_home([*self.victims, "traveller"], DAY),
                  *spread_attack(rng, self.victims, self.start),
                  login("traveller", t, ip="81.2.69.160", device="new-ph", success=False,
                        country="DE"),
                  login("traveller", t + 2 * MINUTE, ip="81.2.70.9", device="own-traveller",
                        country="DE"),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert set(flags) == set(self.victims)

    def test_a_stranger_getting_in_at_the_first_try_from_abroad_is_a_takeover(self):
        # before the attack is recognised (the first attempt of all) and during it
        rng = random.Random(39)
        attack = spread_attack(rng, self.victims, self.start)
        first = (min(e.ts for e in attack) - EPOCH).total_seconds()
        events = [*owners_at_home([*self.victims, "taken-early", "taken-late"], DAY), *attack,
                  login("taken-early", first - 60, ip="41.58.3.9", device="fp-x1",
                        country="NG"),
                  login("taken-late", self.start + 100 * MINUTE, ip="41.58.4.9",
                        device="fp-x2", country="NG"),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert set(flags) == {*self.victims, "taken-early", "taken-late"}
        for account in ("taken-early", "taken-late"):
            assert [f.severity for f in flags[account]] == ["high"]
            assert "at the first try" in flags[account][0].reasons[-1]
        # named in one verdict with the takeover, the victims only tried keep their own reasons
        for account in self.victims:
            assert not any("takeover" in r for f in flags[account] for r in f.reasons)

    def test_an_unseen_account_is_flagged_when_its_owner_shows_up_elsewhere(self):
        # "cold-*" accounts had no login before the attack: nothing to be a stranger to, until
        # the owner's first login, days later, from another device and country
        rng = random.Random(40)
        cold = ["cold-abroad", "cold-same-country", "cold-same-device"]
        attack = spread_attack(rng, self.victims + cold, self.start)
        tried = {e.account_id: e for e in attack if e.account_id in cold}
        later = self.start + 2 * DAY
        events = [*owners_at_home(self.victims, DAY), *attack,
                  login("cold-abroad", later, ip="100.50.7.20", device="own-cold",
                        country="US"),
                  login("cold-same-country", later, ip="100.51.7.20", device="own-cold2",
                        country=tried["cold-same-country"].country),
                  login("cold-same-device", later, ip="100.52.7.20",
                        device=tried["cold-same-device"].device_id, country="US"),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert set(flags) == {*self.victims, "cold-abroad"}
        flag = flags["cold-abroad"][0]
        assert flag.ts.startswith("2026-11-06")  # at the owner's login, not the attack
        assert flag.evidence["failed_from"] == tried["cold-abroad"].country
        assert "first login since came from US" in flag.reasons[1]

    def test_an_unseen_account_failed_from_two_devices_is_flagged_at_once(self):
        # "cold-rotated" had no login before the attack, which tried it from two fingerprints:
        # not one owner on a new device, whatever country the owner turns out to live in.
        # "cold-owner" fails on a phone and a laptop, then gets in on the laptop at home.
        rng = random.Random(42)
        attack = spread_attack(rng, self.victims, self.start)
        t = self.start + 30 * MINUTE
        events = [*owners_at_home(self.victims, DAY), *attack,
                  login("cold-rotated", t, ip="51.9.1.7", device="fp-r1", success=False),
                  login("cold-rotated", t + 40, ip="177.4.2.9", device="fp-r2", success=False),
                  login("cold-owner", t, ip="172.58.3.9", device="phone", success=False),
                  login("cold-owner", t + 60, ip="96.8.4.30", device="laptop", success=False),
                  login("cold-owner", t + 3 * MINUTE, ip="96.8.4.30", device="laptop"),
                  *ordinary_users(rng, self.start, 3)]
        flags = replay(events)
        assert set(flags) == {*self.victims, "cold-rotated"}
        flag = flags["cold-rotated"][0]
        assert flag.ts < "2026-11-04T06"  # during the attack, not at a later owner's login
        assert "credential stuffing spread" in flag.reasons[0]

    def test_where_many_accounts_always_fail_from_new_places_the_usual_count_is_learned(self):
        # 3 accounts an hour fail from a new device, network and country and never get in,
        # for 3 days (a population that forgets passwords on trips): 18 in any 6 h
        rng = random.Random(35)
        accounts = [f"forgetful{i:03d}" for i in range(220)]
        events = owners_at_home(accounts, 0.0)
        for n, account in enumerate(accounts):
            t = DAY + n * 20 * MINUTE + rng.uniform(0, 10 * MINUTE)
            events.append(login(account, t, ip=f"90.{n % 250}.{n // 250}.5", device=f"lap-{n}",
                                success=False, country="CA"))
            events.append(login(f"bystander{n}", t + 5 * MINUTE, ip=f"80.0.{n % 250}.1",
                                device=f"b-{n}"))
        flags = replay(events)
        flagged_at = sorted(f.ts for own in flags.values() for f in own)
        assert flagged_at, "the first hours, before the usual count is known, do flag"
        # a day into the new habit it is the usual count (a median over 48 hours)
        assert all(ts < "2026-11-03T06" for ts in flagged_at), flagged_at[-3:]
