"""trial_cycling at the engine level: signups (and conversions) in, flags out.

"Flagged" follows the contract: the account of a trial_cycling flag, or one of its
``related_accounts``. Every scenario asserts exactly who is flagged and who is not.
"""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from detectors import build
from detectors.base import DAY, HOUR
from detectors.testing import make_event
from pipeline.engine import Engine

NAME = "trial_cycling"
SEVERITY_RANK = {"low": 0, "medium": 1, "high": 2}


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
    assert flag.related_accounts, "a ring flag names the ring"


def flagged(flags: dict[str, list]) -> set[str]:
    return set(flags) | {a for own in flags.values() for f in own for a in f.related_accounts}


def reasons(flags: dict[str, list]) -> list[str]:
    return [r for own in flags.values() for f in own for r in f.reasons]


def signup(account: str, t: float, *, email: str, ip: str, device: str, plan: str = "trial",
           card: str | None = None, country: str = "US"):
    return make_event("signup", account_id=account, t=t, email=email, ip=ip, device_id=device,
                      plan=plan, card_fingerprint=card, country=country)


def purchase(account: str, t: float, amount: float = 29.0):
    return make_event("purchase", account_id=account, t=t, order_id=f"ord-{account}-{t:.0f}",
                      amount=amount)


# A few strangers signing up for trials at the same time: never part of any ring.
BYSTANDERS = [
    signup("by-olga", 5 * HOUR, email="olga.petrova@yandex.ru", ip="95.31.18.119",
           device="d-3a7f10c2", country="RU"),
    signup("by-sam", 29 * HOUR, email="sam.okafor@outlook.com", ip="102.89.33.4",
           device="d-b81e44d9", country="NG"),
    signup("by-lena", 53 * HOUR, email="lena.fischer@web.de", ip="84.152.7.201",
           device="d-0c9d2e67", country="DE"),
]
BYSTANDER_IDS = {e.account_id for e in BYSTANDERS}


def background(hours: float, per_hour: float, *, seed: int = 5) -> list:
    """Strangers' trial signups, evenly spread: ``per_hour`` 4 is a SaaS with 5,000 accounts
    (about 100 trials a day), 150 one with 50,000 accounts over four days. Each has its own
    name, device and address, so they link to nothing; they only set how many signups pass."""
    rng = random.Random(seed)
    count = int(hours * per_hour)
    return [signup(f"bg-{i}", i * HOUR / per_hour + 1.0,
                   email="".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=12)) + "@mail.com",
                   ip=f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                   device=f"d-bg{i}") for i in range(count)]


# -- abuse ----------------------------------------------------------------------------------
class TestRings:
    def test_four_trials_on_one_device_over_three_days(self):
        ring = [
            signup("ring-a", 0.0, email="kate.owens@outlook.com", ip="203.0.113.7",
                   device="d-7f2c91"),
            signup("ring-b", 17 * HOUR, email="b.ruiz@yahoo.com", ip="198.51.100.23",
                   device="d-7f2c91"),
            signup("ring-c", 41 * HOUR + 1260, email="zed.harlow@proton.me",
                   ip="192.0.2.144", device="d-7f2c91"),
            signup("ring-d", 66 * HOUR + 300, email="m.nguyen84@gmail.com",
                   ip="100.43.9.61", device="d-7f2c91"),
        ]
        flags = replay(ring + BYSTANDERS)
        assert flagged(flags) == {"ring-a", "ring-b", "ring-c", "ring-d"}
        assert set(flags) <= {"ring-c", "ring-d"}  # a pair on one device is not yet a ring
        last = flags["ring-d"][-1]
        assert set(last.related_accounts) == {"ring-a", "ring-b", "ring-c"}
        assert "device d-7f2c91 shared with 3 earlier unconverted trial accounts" in last.reasons
        assert last.evidence["ring_size"] == 4
        assert last.evidence["shared"]["dev"]["value"] == "d-7f2c91"
        assert all("d-7f2c91" in f.reasons[0] for own in flags.values() for f in own)

    def test_gmail_alias_ring_on_different_devices(self):
        aliases = ["j.ohn.smith@gmail.com", "johnsmith+2@gmail.com",
                   "john.smith+trial@googlemail.com", "jo.hns.mith@gmail.com"]
        events = [signup(f"alias{i}", i * 26 * HOUR + 611 * i, email=email,
                         ip=f"{71 + 13 * i}.{20 + i}.4.{9 + i}", device=f"d-gm{i}x{7 * i}")
                  for i, email in enumerate(aliases)]
        # Another John, another mailbox, another device: not one of them.
        events.append(signup("john-smyth", 30 * HOUR, email="john.smyth@gmail.com",
                             ip="81.7.14.2", device="d-5521aa"))
        flags = replay(events + BYSTANDERS)
        assert flagged(flags) == {"alias0", "alias1", "alias2", "alias3"}
        assert "alias1" in flags  # one shared mailbox is already a ring
        assert all(any("mailbox johnsmith@gmail.com" in r for r in f.reasons)
                   for own in flags.values() for f in own)
        assert set(flags["alias3"][-1].related_accounts) == {"alias0", "alias1", "alias2"}

    def test_one_card_reused_across_three_trials(self):
        events = [
            signup("card-1", 2 * HOUR, email="pia.larsen@hotmail.com", ip="77.241.3.18",
                   device="d-a19c", card="fp_9c1e77ab"),
            signup("card-2", 1 * DAY + 7 * HOUR, email="tom.vidal@gmail.com",
                   ip="88.12.200.4", device="d-f03b", card="fp_9c1e77ab"),
            signup("card-3", 4 * DAY + 3 * HOUR, email="ines.moura@sapo.pt",
                   ip="94.63.41.77", device="d-77de", card="fp_9c1e77ab"),
            # Someone else's card on the same day: not linked.
            signup("card-other", 1 * DAY + 8 * HOUR, email="rui.alves@sapo.pt",
                   ip="94.63.41.90", device="d-3c10", card="fp_41aa02c7"),
        ]
        flags = replay(events + BYSTANDERS)
        assert flagged(flags) == {"card-1", "card-2", "card-3"}
        assert any("card fp_9c1e77ab shared with 1 earlier" in r for r in reasons(flags))
        assert any("card fp_9c1e77ab shared with 2 earlier" in r for r in reasons(flags))
        assert set(flags["card-3"][-1].related_accounts) == {"card-1", "card-2"}

    def test_numbered_email_stem_on_one_subnet_with_new_devices(self):
        events = [
            signup("stem-1", 0.0, email="alex.miller1@outlook.com", ip="81.2.69.14",
                   device="d-1b7e"),
            signup("stem-2", 22 * HOUR, email="alexmiller02@gmail.com", ip="81.2.69.87",
                   device="d-c60a"),
            signup("stem-3", 2 * DAY + 5 * HOUR, email="alex.miller3@yahoo.com",
                   ip="81.2.69.203", device="d-9f42"),
            # A different Alex on the same subnet: a plain name, not one of the series.
            signup("stem-other", 1 * DAY, email="alex.morgan@outlook.com", ip="81.2.69.40",
                   device="d-4d11"),
        ]
        flags = replay(events + BYSTANDERS)
        assert flagged(flags) == {"stem-1", "stem-2", "stem-3"}
        text = " ".join(reasons(flags))
        assert "email stem 'alexmiller'" in text and "subnet 81.2.69.0/24" in text
        assert set(flags["stem-3"][-1].related_accounts) == {"stem-1", "stem-2"}

    def test_disposable_domains_from_one_ip_with_new_devices(self):
        events = [
            signup("disp-1", 1 * HOUR, email="qwe.rty@mailinator.com", ip="45.12.77.9",
                   device="d-e01"),
            signup("disp-2", 3 * HOUR + 420, email="tmp.k9@yopmail.com", ip="45.12.77.9",
                   device="d-e02"),
            signup("disp-3", 9 * HOUR + 1500, email="zz.signup@guerrillamail.com",
                   ip="45.12.77.9", device="d-e03"),
            # An ordinary address that used the same VPN exit *before* the ring: one IP and
            # its /24 (0.2 and 0.08) are too weak a link to pull it in.
            signup("disp-earlier", 0.5 * HOUR, email="maria.lopez@gmail.com",
                   ip="45.12.77.9", device="d-e99"),
        ]
        flags = replay(events + BYSTANDERS)
        assert flagged(flags) == {"disp-1", "disp-2", "disp-3"}
        assert any("disposable email domain yopmail.com" in r for r in flags["disp-2"][0].reasons)
        assert any("IP 45.12.77.9" in r for r in reasons(flags))
        assert set(flags["disp-3"][-1].related_accounts) == {"disp-1", "disp-2"}

    def test_an_ordinary_address_after_the_ring_started_is_not_pulled_in(self):
        # Regression: the disposable boost of one candidate (ip 0.6, net 0.5) once leaked to
        # every later candidate on the same key, pulling this gmail account in at link 0.8.
        events = [
            signup("disp-1", 1 * HOUR, email="qwe.rty@mailinator.com", ip="45.12.77.9",
                   device="d-e01"),
            signup("disp-2", 3 * HOUR + 420, email="tmp.k9@yopmail.com", ip="45.12.77.9",
                   device="d-e02"),
            signup("disp-neighbour", 5 * HOUR, email="maria.lopez@gmail.com",
                   ip="45.12.77.9", device="d-e99"),
            signup("disp-3", 9 * HOUR + 1500, email="zz.signup@guerrillamail.com",
                   ip="45.12.77.9", device="d-e03"),
        ]
        assert flagged(replay(events)) == {"disp-1", "disp-2", "disp-3"}

    def test_numbered_series_at_one_free_mail_provider_from_unrelated_networks(self):
        # Counting up one distinctive name at gmail, each signup from a new device and a new
        # network: the numbers themselves (14, 15, 17) tie the accounts together.
        events = [signup(f"series-{n}", i * 30 * HOUR, email=f"hugo.laurent{n}@gmail.com",
                         ip=f"{60 + 23 * i}.{7 * i + 1}.{40 + i}.9", device=f"d-se{i}")
                  for i, n in enumerate((14, 15, 17))]
        flags = replay(events + BYSTANDERS)
        assert flagged(flags) == {"series-14", "series-15", "series-17"}
        assert "email stem 'hugolaurent'" in " ".join(reasons(flags))

    def test_short_stem_series_needs_another_link_and_gets_it_from_one_subnet(self):
        # "agreen" (an initial and a surname) is shared by strangers; counted up 1, 2, 4, 5
        # from one /24 it is one person. The same numbers from scattered networks are not.
        ring = [signup(f"ag-{n}", i * 20 * HOUR, email=f"agreen{n}@gmail.com",
                       ip=f"84.21.213.{30 + 40 * i}", device=f"d-ag{i}")
                for i, n in enumerate((1, 2, 4, 5))]
        assert flagged(replay(ring + BYSTANDERS)) == {"ag-1", "ag-2", "ag-4", "ag-5"}
        scattered = [signup(f"ag-{n}", i * 20 * HOUR, email=f"agreen{n}@gmail.com",
                            ip=f"{70 + 31 * i}.{3 + i}.{90 + i}.12", device=f"d-ag{i}")
                     for i, n in enumerate((1, 2, 4, 5))]
        assert flagged(replay(scattered)) == set()

    def test_a_device_shared_with_a_member_of_a_numbered_series_joins_it(self):
        # mia.muller4..6 count up at gmail (a ring on their own); a later account with another
        # name shares only mia.muller6's device: one hop on, the series still stands.
        series = [signup(f"mm-{n}", i * 30 * HOUR, email=f"mia.muller{n}@gmail.com",
                         ip=f"{66 + 40 * i}.{128 + i}.{236 - 9 * i}.{10 + i}", device=f"d-mm{i}")
                  for i, n in enumerate((4, 5, 6))]
        mate = signup("mate", 120 * HOUR, email="richardchen89@outlook.com", ip="24.184.46.220",
                      device="d-mm2")
        flags = replay([*series, mate, *BYSTANDERS])
        assert flagged(flags) == {"mm-4", "mm-5", "mm-6", "mate"}
        assert {"mm-4", "mm-5", "mm-6"} <= set(flags["mate"][-1].related_accounts)

    def test_a_paying_namesake_does_not_weaken_a_numbered_series(self):
        # morganperez@gmail.com is a customer; morgan.perez1..3 count up from one /24 in 13 h
        owner = [signup("mp-owner", 10 * HOUR, email="morganperez@gmail.com",
                        ip="90.36.192.41", device="d-mpo", plan="free"),
                 purchase("mp-owner", 30 * HOUR)]
        ring = [signup(f"mp-{n}", 71 * HOUR + n * 6 * HOUR, email=f"morgan.perez{n}@gmail.com",
                       ip=f"27.212.225.{4 + 30 * n}", device=f"d-mp{n}", country="SG")
                for n in (1, 2, 3)]
        assert flagged(replay([*owner, *ring, *BYSTANDERS])) == {"mp-1", "mp-2", "mp-3"}

    def test_an_account_weakly_linked_to_two_ring_members_joins_the_ring(self):
        # "solo" shares only a name with ring member dev-2 (not a series: 90 and 6) and, later,
        # only an IP with the signup that flags the ring: two weak links closing a triangle.
        events = [
            signup("dev-1", 0.0, email="kara.quinn@gmail.com", ip="31.4.5.6", device="d-77aa"),
            signup("dev-2", 9 * HOUR, email="diegonowak90@orange.fr", ip="62.8.9.10",
                   device="d-77aa"),
            signup("solo", 20 * HOUR, email="diegonowak6@orange.fr", ip="90.211.188.188",
                   device="d-5010"),
            signup("dev-3", 40 * HOUR, email="b.roberts@gmail.com", ip="90.211.188.188",
                   device="d-77aa"),
        ]
        flags = replay(events + BYSTANDERS)
        assert flagged(flags) == {"dev-1", "dev-2", "dev-3", "solo"}
        assert "solo" in flags["dev-3"][-1].related_accounts

    @pytest.mark.parametrize("domain", [
        "0-mail.com",  # not in our seed list; the maintained blocklist knows it
        "tempmail.dev",  # in no list: its name gives it away
    ])
    def test_a_throwaway_domain_from_the_maintained_list_or_by_its_name_counts(self, domain):
        events = [signup(f"thr-{i}", i * 5 * HOUR, email=f"{name}@{domain}", ip="45.12.77.9",
                         device=f"d-t{i}") for i, name in enumerate(["qq.x1", "zz.b7", "kk.m3"])]
        flags = replay(events + BYSTANDERS)
        assert flagged(flags) == {"thr-0", "thr-1", "thr-2"}
        assert any(f"disposable email domain {domain}" in r for r in reasons(flags))

    def test_a_ring_of_six_gives_at_most_four_flags_none_twice(self):
        events = [signup(f"six{i}", i * 13 * HOUR + 977 * i, email=f"{name}@outlook.com",
                         ip=f"{31 + 17 * i}.{i + 2}.8.{40 + i}", device="d-6ee1")
                  for i, name in enumerate(["ada.k", "bo.v", "cy.r", "di.w", "ed.q", "fy.t"])]
        # The platform re-delivers one signup (same event id) and resends another under a
        # new id: neither may add a flag.
        events.append(events[3])
        events.append(signup("six4", 4 * 13 * HOUR + 977 * 4 + 600, email="ed.q@outlook.com",
                             ip="99.6.8.44", device="d-6ee1"))
        flags = replay(events)
        assert flagged(flags) == {f"six{i}" for i in range(6)}
        all_flags = [f for own in flags.values() for f in own]
        assert len(all_flags) <= 4
        assert len({f.account_id for f in all_flags}) == len(all_flags)


# -- benign look-alikes ---------------------------------------------------------------------
FAMILY = [("mom", "emma.jones@gmail.com"), ("son", "liam.jones2009@gmail.com"),
          ("daughter", "mia.j@outlook.com")]


@pytest.mark.parametrize("payer", ["paid_at_signup", "converts_first", "converts_after_all"])
def test_family_on_one_device_and_home_ip_with_one_payer_is_quiet(payer):
    times = [0.0, 30 * HOUR, 80 * HOUR]
    events = [signup(account, t, email=email, ip="24.5.61.7", device="d-home-imac",
                     plan="paid" if payer == "paid_at_signup" and account == "mom" else "trial")
              for (account, email), t in zip(FAMILY, times, strict=True)]
    if payer == "converts_first":
        events.append(purchase("mom", 20 * HOUR, amount=12.0))
    elif payer == "converts_after_all":
        events.append(purchase("mom", 5 * DAY + 2 * HOUR, amount=12.0))
    assert replay(events + BYSTANDERS) == {}


@pytest.mark.parametrize(("second", "ring"), [
    ("jferrari26@hotmail.com", False),  # Julia after Jorge: one surname, one initial
    ("j.ferrari3@gmail.com", True),  # j.ferrari2 then 3: one person counting up
])
def test_a_name_on_one_home_computer_is_a_family_unless_counted_up(second, ring):
    first = "j.ferrari2@gmail.com" if ring else "j.ferrari@gmail.com"
    events = [signup("fe-1", 0.0, email=first, ip="88.102.15.240", device="d-fe1", country="ES"),
              signup("fe-2", 12 * HOUR, email=second, ip="88.102.15.240", device="d-fe1",
                     country="ES")]
    assert flagged(replay(events + BYSTANDERS)) == ({"fe-1", "fe-2"} if ring else set())


def test_trials_that_convert_then_another_trial_on_the_same_device_is_quiet():
    events = [
        signup("lap-1", 0.0, email="noah.becker@gmail.com", ip="92.117.4.30", device="d-lap9"),
        purchase("lap-1", 6 * DAY + 3 * HOUR),
        signup("lap-2", 9 * DAY, email="becker.design@outlook.com", ip="92.117.4.30",
               device="d-lap9"),
        purchase("lap-2", 12 * DAY + 5 * HOUR, amount=49.0),
        signup("lap-3", 15 * DAY + 2 * HOUR, email="noah@becker-studio.de", ip="92.117.9.8",
               device="d-lap9"),
        purchase("lap-3", 20 * DAY, amount=99.0),
        signup("lap-4", 23 * DAY, email="n.becker.clients@gmail.com", ip="92.117.9.8",
               device="d-lap9"),
    ]
    assert replay(events + BYSTANDERS) == {}


FIRSTS = ["ana", "ben", "chen", "dara", "eli", "fatima", "gus", "hana", "ivo", "jun", "kofi",
          "lucia", "mateo", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tariq"]
LASTS = ["kowalski", "okafor", "lindqvist", "moreau", "tanaka", "ruiz", "patel", "novak",
         "haddad", "osei", "brennan", "yamamoto"]


def test_university_week_of_trials_from_one_campus_subnet_is_quiet():
    rng = random.Random(2026)
    pairs = rng.sample([(f, la) for f in FIRSTS for la in LASTS], 40)
    nat = ["128.10.4.2", "128.10.4.3", "128.10.4.77"]
    events = []
    for i, (first, last) in enumerate(pairs):
        style = i % 3
        email = (f"{first}.{last}@stateu.edu" if style == 0 else
                 f"{first}{last}@gmail.com" if style == 1 else
                 f"{first[0]}{last}{rng.randrange(1, 99)}@stateu.edu")
        events.append(signup(f"student{i:02d}", rng.uniform(8, 7 * 24 - 2) * HOUR, email=email,
                             ip=rng.choice(nat), device=f"d-{rng.getrandbits(32):08x}"))
    assert len({e.email for e in events}) == 40
    assert replay(events) == {}


def test_office_nat_of_paid_and_converted_accounts_is_quiet():
    rng = random.Random(30)
    events = []
    for i in range(30):
        t = rng.uniform(0, 10) * DAY
        trial = i % 3 == 0
        events.append(signup(f"emp{i:02d}", t, email=f"{FIRSTS[i % 20]}.{LASTS[i % 12]}@acme.io",
                             ip="62.140.3.10", device=f"d-acme-{i:03d}",
                             plan="trial" if trial else "paid"))
        if trial:
            events.append(purchase(f"emp{i:02d}", t + rng.uniform(0.5, 3) * DAY, amount=15.0))
    assert replay(events) == {}


# -- weaknesses found while writing these tests ------------------------------------------------
CGNAT = "172.56.21.14"
STRANGERS = ["olsen", "pryce", "quade", "ramos", "sokol", "tarik", "ulmer", "vance", "wendt",
             "yilmaz", "zhao", "abbot", "baker", "cohen", "dietz", "ekwe", "fabre", "grieg",
             "hollis", "ibarra"]


def test_device_ring_behind_a_busy_carrier_ip_is_flagged():
    # Regression: the household discount once applied to a crowded IP too, so the link
    # (1-0.4*(1-0.048)*(1-0.038))*0.6 = 0.38 fell under min_link 0.4 and a ring of any size
    # on one device behind a carrier NAT was never flagged.
    rng = random.Random(1)
    events = [signup(f"stranger{i:02d}", rng.uniform(0, 2) * DAY,
                     email=f"{name}.{rng.choice('abcdefgh')}@example.com", ip=CGNAT,
                     device=f"d-s{rng.getrandbits(24):06x}")
              for i, name in enumerate(STRANGERS)]
    ring = [f"cyc{i}" for i in range(6)]
    events += [signup(account, 8 * HOUR + i * 9 * HOUR + 400 * i, email=f"{name}@outlook.com",
                      ip=CGNAT, device="d-cyc-55aa")
               for i, (account, name) in enumerate(zip(ring, ["ola.k", "kip.m", "ren.t",
                                                              "tao.s", "uma.p", "vik.r"],
                                                       strict=True))]
    flags = replay(events)
    assert flagged(flags) == set(ring)
    assert all(any("device d-cyc-55aa" in r for r in f.reasons)
               for own in flags.values() for f in own)


def test_namesakes_with_close_numbers_at_different_providers_are_quiet():
    # Three people called J. Schmidt, numbered 12, 17 and 31 at three universities, from three
    # countries: close numbers across providers are a coincidence, not a series.
    events = [signup(f"js-{n}", i * 2 * DAY, email=f"jschmidt{n}@{domain}", ip=ip,
                     device=f"d-js{i}", country=country)
              for i, (n, domain, ip, country) in enumerate([
                  (31, "highlandu.edu", "24.176.32.95", "CA"),
                  (17, "lakesideu.edu", "46.114.202.125", "UA"),
                  (12, "uashford.edu", "114.12.211.201", "JP")])]
    assert replay(events + BYSTANDERS) == {}


def test_a_ring_members_namesake_is_not_pulled_in():
    # A card ring; one member is bettyjansen95@gmail.com. Another Betty Jansen, born in '98,
    # signed up a day earlier: one hop on from the signup, a close number alone is a namesake.
    ring = [signup(f"card-{i}", 30 * HOUR + i * 9 * HOUR, email=email, ip=f"{40 + 50 * i}.2.3.4",
                   device=f"d-c{i}", card="card_b810")
            for i, email in enumerate(["libernard62@outlook.com", "bettyjansen95@gmail.com",
                                       "sara_wright@gmail.com", "priya.lee@outlook.com"])]
    betty = signup("betty-98", 6 * HOUR, email="bettyjansen98@gmail.com", ip="66.125.87.21",
                   device="d-b98", plan="free")
    flags = replay([*ring, betty, *BYSTANDERS])
    assert flagged(flags) == {"card-0", "card-1", "card-2", "card-3"}


def test_the_plain_name_is_not_pulled_into_a_numbered_ring():
    # kevin.garcia2..5 count up from one subnet; kevin_garcia, elsewhere and 14 hours (56
    # signups) after all but one of them, is the name's owner.
    ring = [signup(f"kg-{n}", n * 9 * HOUR, email=f"kevin.garcia{n}@gmail.com",
                   ip=f"70.6.109.{30 + n}", device=f"d-kg{n}") for n in (2, 3, 4, 5)]
    owner = signup("kg-plain", 50 * HOUR, email="kevin_garcia@gmail.com", ip="179.102.190.138",
                   device="d-kgp")
    flags = replay([*ring, owner, *background(51, per_hour=4)])
    assert flagged(flags) == {"kg-2", "kg-3", "kg-4", "kg-5"}


def test_two_namesakes_at_one_provider_are_quiet():
    # charles_bianchi and charlesbianchi04 at gmail, plus a stranger on the same subnet later:
    # a pair of namesakes and a weak link do not make a ring. charlesbianchi06 comes 40
    # signups after 04 but 160 after the plain name: not one burst of three.
    events = [signup("cb-plain", 0.0, email="charles_bianchi@gmail.com", ip="23.44.55.180",
                     device="d-cb1", card="card_f68c"),
              signup("cb-04", 30 * HOUR, email="charlesbianchi04@gmail.com", ip="24.48.133.88",
                     device="d-cb2"),
              signup("cb-06", 40 * HOUR, email="charlesbianchi06@gmail.com", ip="91.8.7.6",
                     device="d-cb3"),
              signup("near", 41 * HOUR, email="olga.m@yandex.ru", ip="91.8.7.6",
                     device="d-n1")]
    assert replay(events + background(42, per_hour=4)) == {}


def test_a_burst_of_one_name_at_one_provider_is_one_person():
    # Three addresses of one name at outlook in three hours, nothing else shared, with 12
    # strangers signing up meanwhile: a name even one signup in a thousand has does not turn
    # up three times that close. The numbers (a birth year, then 7 and 6) do not matter.
    names = [("nb-90", "ninabianchi90"), ("nb-7", "ninabianchi7"), ("nb-6", "ninabianchi6")]
    ring = [signup(account, 20 * HOUR + i * 1.5 * HOUR, email=f"{name}@outlook.com",
                   ip=f"78.102.{40 + i}.{15 + i}", device=f"d-nb{i}", country="FR")
            for i, (account, name) in enumerate(names)]
    flags = replay(ring + background(24, per_hour=4))
    assert flagged(flags) == {"nb-90", "nb-7", "nb-6"}
    last = flags["nb-6"][-1]
    assert set(last.related_accounts) == {"nb-90", "nb-7"}
    assert last.evidence["name_burst"] == {"nb-7": 6, "nb-90": 13}  # trial signups since
    assert ("3 addresses of one name at outlook.com among 15 consecutive trial signups: "
            "strangers' names do not bunch up like that") in last.reasons


@pytest.mark.parametrize("per_hour", [4, 150])
def test_namesakes_at_one_provider_many_signups_apart_are_quiet(per_hour):
    # jferrari44, 12 and 63 at gmail over 18 hours. At 150 signups an hour (50,000 accounts)
    # thousands of strangers sign up between them, and among thousands a common name meets
    # itself. At 4 an hour (5,000 accounts) they are 72 signups apart: not one burst either.
    events = [signup(f"jf-{n}", t * HOUR, email=f"jferrari{n}@gmail.com", ip=ip,
                     device=f"d-jf{n}", country="IT")
              for n, t, ip in [(44, 3.5, "98.109.122.108"), (12, 9.4, "70.214.98.248"),
                               (63, 21.8, "24.48.186.147")]]
    assert replay(events + background(22, per_hour=per_hour)) == {}


def test_namesakes_numbered_by_their_university_are_quiet():
    # The university hands the second and third Ana Kowalski numbered addresses.
    events = [signup(f"ak-{n}", i * 7 * HOUR, email=f"ana.kowalski{n}@stateu.edu",
                     ip=f"128.10.{4 + i}.{20 + i}", device=f"d-ak{i}")
              for i, n in enumerate((2, 3, 4))]
    assert replay(events) == {}


def test_family_on_one_device_behind_a_cgnat_home_ip_is_quiet():
    rng = random.Random(1)
    events = [signup(f"stranger{i:02d}", rng.uniform(0, 6) * DAY,
                     email=f"{name}.{rng.choice('abcdefgh')}@example.com", ip="100.64.12.9",
                     device=f"d-s{rng.getrandbits(24):06x}")
              for i, name in enumerate(STRANGERS[:8])]
    events += [signup(account, 2 * DAY + t, email=email, ip="100.64.12.9",
                      device="d-home-imac")
               for (account, email), t in zip(FAMILY, [0.0, 30 * HOUR, 80 * HOUR], strict=True)]
    events.append(purchase("mom", 7 * DAY, amount=12.0))
    assert replay(events) == {}
