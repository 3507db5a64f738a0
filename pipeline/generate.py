"""Synthetic SaaS traffic with labelled abuse scenarios and benign look-alikes.

Most accounts (about 70 %) existed before the stream starts and have no signup event; the rest
sign up on trial, free or paid plans during the window and about 30 % of trials convert. People
live in countries with their own time zones (diurnal and weekly rhythms), write real-looking
email addresses, use one or two devices and user agents, log in from their ISP's addresses,
now and then mistype a password, use features with heavy-tailed units, renew subscriptions,
buy credits and, rarely, ask for a refund.

Into this population go abuse scenarios, each in several variants with randomised sizes and
timings, and benign groups that resemble abuse (offices behind one NAT, families on one device,
campuses, travellers, power users, ...). ``labels`` says which detector should catch which
accounts, and which accounts are benign look-alikes; the two sets are disjoint.

The stream is ordered per account; across accounts events are up to two minutes out of order,
and about 0.1 % of events are delivered a second time (same ``event_id``) up to a minute of
stream time later. Everything is drawn from ``random.Random(seed)``: the same arguments give the
same events and labels.

Examples
--------
>>> events, labels = generate(accounts=200, days=2, seed=1)
>>> events == generate(accounts=200, days=2, seed=1)[0]
True
>>> events == generate(accounts=200, days=2, seed=2)[0]
False
>>> sorted({e["type"] for e in events})
['login', 'purchase', 'refund', 'signup', 'usage']
>>> events[0]["ts"][:11], events[0]["ts"][-1], labels["counts"]["events"] == len(events)
('2026-11-01T', 'Z', True)
>>> sorted({g["detector"] for g in labels["abuse"]})
['login_frequency', 'refund_abuse', 'trial_cycling']
>>> len({e["account_id"] for e in events}) <= labels["generator"]["accounts"] == 200
True
"""

from __future__ import annotations

import gzip
import math
import os
import random
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import accumulate
from typing import Any

import numpy as np
import orjson

__all__ = ["generate", "write_events", "write_labels"]

DAY = 86_400.0
HOUR = 3_600.0
MINUTE = 60.0
START = datetime(2026, 11, 1, tzinfo=UTC)
JITTER = 120.0  # seconds: how far events of different accounts may arrive out of order
DUPLICATE_RATE = 0.001
DUPLICATE_DELAY = 60.0  # seconds of stream time after the original, at most
TRIAL_DAYS = 14

FIRST = """
james mary john patricia robert jennifer michael linda william elizabeth david barbara
richard susan joseph jessica thomas sarah charles karen daniel nancy matthew lisa anthony
betty mark sandra paul ashley steven kimberly andrew emily joshua donna kevin michelle brian
carol george amanda timothy melissa ronald deborah jason laura lucas emma noah olivia liam
mia ethan sofia mateo chloe hugo lea luca giulia jan anna pierre camille diego lucia yuki
hana arjun priya wei min omar fatima ivan olga alex sam chris jordan taylor morgan nina
oscar felix clara julia marco elena tomas sara ali leila kenji aiko raj ananya chen li
""".split()
LAST = """
smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
flores green adams nelson baker hall rivera campbell mitchell carter roberts muller schmidt
schneider fischer weber meyer dubois moreau laurent bernard rossi russo ferrari esposito
bianchi tanaka suzuki sato kumar sharma patel singh chen wang zhang novak kowalski nowak
ivanov petrov silva santos oliveira kim park choi yilmaz demir tran pham ali khan hansen
johansson lindberg jansen devries okafor adeyemi
""".split()
WEBMAIL = (("gmail.com", 40), ("outlook.com", 10), ("yahoo.com", 8), ("hotmail.com", 7),
           ("icloud.com", 5), ("proton.me", 2), ("aol.com", 1))
LOCAL_MAIL = {"DE": ("gmx.de", "web.de", "t-online.de"), "FR": ("orange.fr", "free.fr"),
              "GB": ("btinternet.com", "hotmail.co.uk"), "JP": ("yahoo.co.jp",),
              "BR": ("uol.com.br", "bol.com.br"), "IN": ("rediffmail.com",),
              "RU": ("yandex.ru", "mail.ru"), "IT": ("libero.it",), "KR": ("naver.com",),
              "PL": ("wp.pl", "onet.pl"), "ES": ("telefonica.net",)}
DISPOSABLE = ("mailinator.com", "guerrillamail.com", "10minutemail.com", "yopmail.com",
              "trashmail.com", "sharklasers.com", "getnada.com", "maildrop.cc", "tempmail.dev")
COMPANY_WORDS = """
acme northwind globex initech contoso fabrikam hooli vandelay umbrella wayne stark soylent
tyrell cyberdyne aperture blueriver greenleaf redwood silverline brightpath clearview
ironbridge oakridge pinecrest summit harbor lumen quanta vertex nimbus helix orbit pixel
""".split()
COMPANY_SUFFIX = ("", "labs", "corp", "group", "systems", "tech", "consulting", "analytics",
                  "media", "logistics", "health", "studio", "-partners", "hq")
CAMPUS = """
lakeside northfield riverton westbrook clearwater fairview kingsport eastmont hillcrest
maplewood stonebridge ashford brookhaven cedarville glenwood highland
""".split()
CAMPUS_FORM = ("{}.edu", "{}u.edu", "{}state.edu", "u{}.edu", "{}college.edu")
# country -> (weight, UTC offsets of its people, first octets of its ISPs' address blocks)
COUNTRIES: dict[str, tuple[float, tuple[float, ...], tuple[int, ...]]] = {
    "US": (28, (-5, -5, -5, -6, -6, -7, -8, -8), (23, 24, 50, 63, 66, 68, 71, 73, 98, 108)),
    "GB": (8, (0,), (2, 31, 51, 81, 86, 109)), "DE": (8, (1,), (5, 46, 77, 84, 91, 93)),
    "FR": (6, (1,), (2, 37, 78, 86, 90, 92)), "CA": (5, (-5, -5, -6, -8), (24, 70, 99, 142)),
    "IN": (7, (5.5,), (49, 103, 106, 117, 122)), "BR": (5, (-3,), (177, 179, 187, 189)),
    "JP": (4, (9,), (60, 114, 126, 133, 153)), "AU": (3, (10, 10, 8), (1, 27, 49, 101, 120)),
    "ES": (3, (1,), (2, 79, 83, 88)), "IT": (3, (1,), (2, 79, 87, 93, 151)),
    "NL": (3, (1,), (31, 77, 84, 145)), "PL": (2, (1,), (31, 46, 83, 89)),
    "MX": (3, (-6,), (187, 189, 201)), "SE": (2, (1,), (31, 78, 81, 90)),
    "SG": (2, (8,), (27, 42, 116, 175)), "ZA": (1, (2,), (41, 102, 105, 197)),
    "KR": (2, (9,), (58, 121, 175, 211)), "TR": (2, (3,), (78, 85, 88, 176)),
    "RU": (1.5, (3, 3, 5, 7), (5, 31, 37, 95, 178)), "ID": (1.5, (7,), (36, 110, 114, 180)),
    "VN": (1, (7,), (14, 27, 113, 171)), "AR": (1, (-3,), (181, 186, 190)),
    "NG": (1, (1,), (41, 102, 105, 197)), "UA": (1, (2,), (31, 46, 91, 176)),
}
COUNTRY_NAMES = tuple(COUNTRIES)
COUNTRY_CUM = tuple(accumulate(COUNTRIES[c][0] for c in COUNTRY_NAMES))
EUR = frozenset({"DE", "FR", "ES", "IT", "NL"})
HOSTING = (5, 23, 31, 37, 45, 46, 62, 80, 85, 91, 94, 104, 134, 138, 139, 141, 146, 157, 159,
           162, 164, 167, 170, 178, 185, 188, 193, 194, 195, 206, 209, 212, 217)
DESKTOP_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
)
MOBILE_AGENTS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Linux; Android 14; SM-S921B) AppleWebKit/537.36 (KHTML, like Gecko) "
    "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Mobile/15E148 Safari/604.1",
    "SaaSApp/4.12.0 (iOS 18.1; iPhone15,2)",
    "SaaSApp/4.12.0 (Android 14; Pixel 7)",
)
SCRIPT_AGENTS = (  # API clients: integrations of honest customers use them too
    "python-requests/2.32.3", "okhttp/4.12.0", "curl/8.5.0", "Go-http-client/2.0",
    "axios/1.7.7", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "HeadlessChrome/131.0.0.0 Safari/537.36",
)
FEATURES = ("api_call", "report", "export", "ai_summary", "storage_gb", "render", "seat")
FEATURE_WEIGHTS = (30, 20, 15, 12, 10, 8, 5)
PLAN_PRICES = (9.0, 12.0, 19.0, 29.0, 49.0, 99.0)
CREDIT_PRICES = (5.0, 10.0, 20.0, 25.0, 50.0, 100.0)
ORDINARY_REASONS = ("accidental purchase", "accidental purchase", "duplicate charge",
                    "bought the wrong plan", "changed my mind", "forgot to cancel", None)
ABUSE_REASONS = ("not as described", "not as described", "did not work for me",
                 "not what I expected", "technical issues", "changed my mind", None)
RING_VARIANTS = ("device_reuse", "email_alias", "numbered_stem", "card_reuse", "disposable",
                 "mixed")
STUFFING_VARIANTS = ("one_ip", "one_subnet", "one_device")
# every attempt through another residential proxy with another device fingerprint: no IP,
# device or /24 gathers the victims (drawn after the others, so their scenarios stay the same)
SPREAD_VARIANT = "rotating"


@lru_cache(maxsize=4096)
def _date(day: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(days=day)).strftime("%Y-%m-%d")


def _ts(t: float) -> str:
    """Epoch seconds -> RFC 3339 UTC with milliseconds."""
    secs, ms = divmod(round(t * 1000), 1000)
    day, rem = divmod(secs, 86_400)
    hour, rem = divmod(rem, 3600)
    return f"{_date(day)}T{hour:02d}:{rem // 60:02d}:{rem % 60:02d}.{ms:03d}Z"


@dataclass(slots=True)
class Person:
    """One account and its owner: where they are, how they write, what they use."""

    account_id: str
    country: str
    offset: float  # hours from UTC
    email: str
    devices: list[str]
    agents: list[str]  # one per device
    ips: list[str]
    card: str | None
    currency: str
    activity: float  # chance of being active on a weekday
    weekend: float  # activity multiplier on Saturdays and Sundays
    intensity: float  # scale of usage units
    volume: float  # scale of usage events per session
    features: tuple[str, ...]
    feature_cum: tuple[float, ...]


class _World:
    """The random source, the clock window and everything emitted so far."""

    def __init__(self, rng: random.Random, start: float, days: int) -> None:
        self.rng = rng
        self.start = start
        self.days = days
        self.window = days * DAY
        self.end = start + self.window
        self.weekday0 = datetime.fromtimestamp(start, UTC).weekday()
        self.events: list[tuple[float, str, str, dict[str, Any]]] = []
        self.abuse: list[dict[str, Any]] = []
        self.benign: list[dict[str, Any]] = []
        self.used: set[str] = set()
        self.made = 0  # accounts created
        self.emitted: dict[str, int] = {}  # account -> events in the window
        self.nets: set[str] = set()
        self.isps = {c: self._isps(c) for c in COUNTRY_NAMES}
        self.companies = self._pool(400, self._company)
        self.campuses = self._pool(40, self._campus)
        self.vpn_exits = [self.hosting_ip() for _ in range(40)]  # shared by their customers

    # -- identifiers ------------------------------------------------------------------------
    def hexid(self, prefix: str, n: int) -> str:
        while True:
            value = f"{prefix}{self.rng.getrandbits(4 * n):0{n}x}"
            if value not in self.used:
                self.used.add(value)
                return value

    def device(self) -> str:
        return self.hexid("d-", 12)

    def card(self) -> str:
        return self.hexid("card_", 16)

    def country(self) -> str:
        return self.rng.choices(COUNTRY_NAMES, cum_weights=COUNTRY_CUM)[0]

    # -- addresses --------------------------------------------------------------------------
    def _net16(self, octets: Iterable[int]) -> str:
        octets = tuple(octets)
        while True:
            net = f"{self.rng.choice(octets)}.{self.rng.randrange(256)}"
            if net not in self.nets:
                self.nets.add(net)
                return net

    def _isps(self, country: str) -> list[list[str]]:
        """A country's ISPs, biggest first, each owning a few /16 blocks; the last is mobile."""
        octets = COUNTRIES[country][2]
        return [[self._net16(octets) for _ in range(self.rng.randint(1, 4))]
                for _ in range(self.rng.randint(3, 6))]

    def home_ip(self, country: str, isp: list[str] | None = None) -> str:
        rng = self.rng
        if isp is None:
            fixed = self.isps[country][:-1]
            isp = fixed[min(len(fixed) - 1, int(rng.expovariate(0.9)))]
        return f"{rng.choice(isp)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"

    def mobile_ip(self, country: str) -> str:
        return self.home_ip(country, self.isps[country][-1])

    def subnet(self, country: str) -> str:
        """A /24 prefix ("a.b.c") of one of the country's fixed-line ISPs."""
        return self.home_ip(country).rsplit(".", 1)[0]

    def hosting_ip(self) -> str:
        """A data-centre address (VPNs, proxies, cloud hosts)."""
        rng = self.rng
        return f"{self._net16(HOSTING)}.{rng.randrange(256)}.{rng.randrange(2, 254)}"

    def host(self, net24: str) -> str:
        return f"{net24}.{self.rng.randrange(2, 254)}"

    # -- names ------------------------------------------------------------------------------
    def _pool(self, n: int, make) -> list[str]:
        pool: list[str] = []
        while len(pool) < n:
            name = make()
            if name not in pool:
                pool.append(name)
        return pool

    def _company(self) -> str:
        rng = self.rng
        word = rng.choice(COMPANY_WORDS) if rng.random() < 0.6 else rng.choice(LAST)
        tld = rng.choice((".com", ".com", ".com", ".io", ".co", ".net", ".co.uk", ".de"))
        return f"{word}{rng.choice(COMPANY_SUFFIX)}{tld}"

    def _campus(self) -> str:
        return self.rng.choice(CAMPUS_FORM).format(self.rng.choice(CAMPUS))

    def webmail(self, country: str | None = None) -> str:
        rng = self.rng
        if country in LOCAL_MAIL and rng.random() < 0.35:
            return rng.choice(LOCAL_MAIL[country])
        return rng.choices([d for d, _ in WEBMAIL], [w for _, w in WEBMAIL])[0]

    def claim(self, address: str) -> bool:
        """Reserve a mailbox; Gmail ignores dots and +tags, so one canonical form per owner."""
        local, domain = address.split("@")
        key = "gmail:" + local.split("+")[0].replace(".", "") if domain == "gmail.com" else address
        if key in self.used or address in self.used:
            return False
        self.used.update((key, address))
        return True

    def local_part(self, first: str, last: str) -> str:
        rng = self.rng
        style = rng.random()
        if style < 0.28:
            return f"{first}.{last}"
        if style < 0.43:
            return f"{first[0]}{last}{rng.randrange(1, 100)}"
        if style < 0.53:
            return f"{first[0]}{last}"
        if style < 0.66:
            return f"{first}{last}{rng.randrange(60, 106) % 100:02d}"
        if style < 0.74:
            return f"{first}{last}"
        if style < 0.81:
            return f"{first}_{last}"
        if style < 0.86:
            return f"{first[0]}.{last}"
        if style < 0.92:
            return f"{last}.{first}"
        return f"{first}{last[0]}{rng.randrange(1, 1000)}"

    def email(self, first: str | None = None, last: str | None = None, *,
              domain: str | None = None, country: str | None = None) -> str:
        rng = self.rng
        for attempt in range(100):
            f, la = first or rng.choice(FIRST), last or rng.choice(LAST)
            local = self.local_part(f, la)
            if attempt > 3:
                local += str(rng.randrange(1, 1000))
            if domain is not None:
                where = domain
            else:
                r = rng.random()
                where = (self.webmail(country) if r < 0.8 else rng.choice(self.companies)
                         if r < 0.95 else rng.choice(self.campuses))
            address = f"{local}@{where}"
            if self.claim(address):
                return address
        raise RuntimeError("no free mailbox")  # pragma: no cover

    # -- people -----------------------------------------------------------------------------
    def person(self, *, country: str | None = None, email: str | None = None,
               card: bool = False, mobile_only: bool | None = None) -> Person:
        """A new account (counted against the requested total)."""
        rng = self.rng
        self.made += 1
        country = country or self.country()
        if mobile_only is None:
            mobile_only = rng.random() < 0.15
        if mobile_only:
            agents = [rng.choice(MOBILE_AGENTS)]
        else:
            agents = [rng.choice(DESKTOP_AGENTS)]
            if rng.random() < 0.4:
                agents.append(rng.choice(MOBILE_AGENTS))
        ips = [self.home_ip(country)]
        if rng.random() < 0.3:  # a dynamic address that changed, or a second place
            ips.append(self.home_ip(country))
        if mobile_only or len(agents) == 2:
            ips.append(self.mobile_ip(country))
        if rng.random() < 0.03:  # a commercial VPN, its exit addresses shared with strangers
            ips.append(rng.choice(self.vpn_exits))
        if not mobile_only and rng.random() < 0.03:  # an integration through the API
            agents.append(rng.choice(SCRIPT_AGENTS))
        features = tuple(rng.sample(FEATURES, rng.randint(2, 5)))
        weights = [FEATURE_WEIGHTS[FEATURES.index(f)] * rng.uniform(0.3, 2.0) for f in features]
        tier = rng.random()
        activity = (rng.uniform(0.1, 0.35) if tier < 0.2 else rng.uniform(0.4, 0.8)
                    if tier < 0.7 else rng.uniform(0.8, 0.98))
        return Person(
            account_id=self.hexid("acct_", 10), country=country,
            offset=rng.choice(COUNTRIES[country][1]),
            email=email if email is not None else self.email(country=country),
            devices=[self.device() for _ in agents], agents=agents, ips=ips,
            card=self.card() if card else None,
            currency="EUR" if country in EUR else "GBP" if country == "GB" else "USD",
            activity=activity, weekend=rng.choice((0.25, 0.5, 1.0)),
            intensity=rng.lognormvariate(0, 0.5), volume=rng.lognormvariate(0, 0.45),
            features=features, feature_cum=tuple(accumulate(weights)),
        )

    # -- events -----------------------------------------------------------------------------
    def emit(self, kind: str, account: str, t: float, fields: dict[str, Any]) -> bool:
        if self.start <= t < self.end:
            self.events.append((t, kind, account, fields))
            self.emitted[account] = self.emitted.get(account, 0) + 1
            return True
        return False

    def signup(self, p: Person, t: float, plan: str, *, ip: str | None = None,
               device: int = 0, country: str | None = None) -> bool:
        return self.emit("signup", p.account_id, t, {
            "email": p.email, "ip": ip or p.ips[0], "device_id": p.devices[device],
            "card_fingerprint": p.card, "plan": plan, "country": country or p.country})

    def login(self, account: str, t: float, ip: str, device: str, success: bool,
              country: str | None, agent: str | None) -> None:
        fields: dict[str, Any] = {"ip": ip, "device_id": device, "success": success}
        if country is not None:
            fields["country"] = country
        if agent is not None:
            fields["user_agent"] = agent
        self.emit("login", account, t, fields)

    def units(self, feature: str, scale: float) -> float:
        rng = self.rng
        if feature == "api_call":
            return float(int(rng.lognormvariate(1.4, 1.2) * scale))
        if feature == "storage_gb":
            return round(rng.lognormvariate(-0.7, 1.1) * scale, 3)
        if feature == "render":
            return round(rng.lognormvariate(0.3, 0.9) * scale, 1)
        if feature == "seat":
            return float(1 if rng.random() < 0.8 else rng.randint(0, 4))
        if feature == "ai_summary":
            return float(max(1, int(rng.lognormvariate(0.2, 0.8) * scale)))
        return float(max(1, round(rng.paretovariate(2.2) * min(scale, 1.0) + scale - 1)))

    def usage(self, p: Person, t: float, scale: float | None = None,
              feature: str | None = None) -> None:
        feature = feature or self.rng.choices(p.features, cum_weights=p.feature_cum)[0]
        units = self.units(feature, p.intensity if scale is None else scale)
        self.emit("usage", p.account_id, t, {"feature": feature, "units": units})

    def purchase(self, p: Person, t: float, amount: float) -> tuple[str, float, str] | None:
        order = (self.hexid("ord_", 12), amount, p.currency)
        if self.emit("purchase", p.account_id, t,
                     {"order_id": order[0], "amount": amount, "currency": order[2]}):
            return order
        return None

    def refund(self, p: Person, t: float, order: tuple[str, float, str], reason: str | None,
               amount: float | None = None) -> bool:
        fields: dict[str, Any] = {"order_id": order[0], "amount": amount or order[1],
                                  "currency": order[2]}
        if reason is not None:
            fields["reason"] = reason
        return self.emit("refund", p.account_id, t, fields)

    # -- rhythms ----------------------------------------------------------------------------
    def local_time(self, p: Person, day: int) -> float:
        """A moment of local ``day`` (days since the start) when ``p`` is likely awake."""
        rng = self.rng
        r = rng.random()
        hour = (rng.gauss(10.5, 1.7) if r < 0.42 else rng.gauss(15.0, 1.9) if r < 0.84
                else rng.gauss(20.5, 1.6)) % 24
        return self.start + day * DAY + (hour - p.offset) * HOUR

    def weekend(self, day: int) -> bool:
        return (self.weekday0 + day) % 7 >= 5

    def session(self, p: Person, t: float, *, mistype: float = 0.03, n_usage: int | None = None,
                ip: str | None = None, device: int | None = None, scale: float | None = None,
                country: str | None = None) -> float:
        """Log in (maybe after one mistyped password), then use a few features."""
        rng = self.rng
        i = rng.randrange(len(p.devices)) if device is None else device
        ip = ip or rng.choice(p.ips)
        country = country or p.country
        if rng.random() < mistype:
            self.login(p.account_id, t, ip, p.devices[i], False, country, p.agents[i])
            t += rng.uniform(4, 45)
        self.login(p.account_id, t, ip, p.devices[i], True, country, p.agents[i])
        if n_usage is None:
            n_usage = 1 + int(rng.lognormvariate(1.7, 0.9) * p.volume)
        for _ in range(n_usage):
            t += 2 + rng.expovariate(1 / 90)
            self.usage(p, t, scale)
        return t

    def live(self, p: Person, from_t: float, until: float | None = None, *,
             ip: str | None = None, mistype: float = 0.03, scale: float | None = None,
             sessions: tuple[int, ...] = (1, 1, 2, 2, 3)) -> None:
        """Ordinary life between ``from_t`` and ``until``: 1-3 sessions on active days."""
        rng = self.rng
        until = min(until or self.end, self.end)
        first = max(-1, int((from_t - self.start) // DAY) - 1)
        for day in range(first, self.days + 1):
            chance = p.activity * (p.weekend if self.weekend(day) else 1.0)
            if rng.random() >= chance:
                continue
            for _ in range(rng.choice(sessions)):
                t = self.local_time(p, day)
                if from_t <= t < until:
                    self.session(p, t, ip=ip, mistype=mistype, scale=scale)

    def at(self, lo: float, hi: float) -> float:
        """A moment between fractions ``lo`` and ``hi`` of the window."""
        return self.start + self.rng.uniform(lo, hi) * self.window


# -- ordinary customers -----------------------------------------------------------------------
def _bill(w: _World, p: Person, *, paid: bool, refunds: bool = True) -> None:
    """Renewals of a subscription bought before the stream, one-off credits, rare refunds."""
    rng = w.rng
    orders = []
    if paid:
        price = rng.choice(PLAN_PRICES)
        annual = rng.random() < 0.1
        period = 365 * DAY if annual else 30 * DAY
        t = w.start + rng.uniform(0, period) + rng.uniform(-2, 2) * HOUR
        while t < w.end:
            orders.append(w.purchase(p, t, price * 10 if annual else price))
            t += period
        if refunds and rng.random() < 0.004:  # a refund of an order bought before the stream
            old = (f"ord_{rng.getrandbits(48):012x}", price, p.currency)
            w.refund(p, w.at(0.0, 1.0), old, rng.choice(("forgot to cancel", "duplicate charge")))
    for day in range(w.days):
        if rng.random() < 0.004 * (0.5 + p.activity):
            orders.append(w.purchase(p, w.local_time(p, day), rng.choice(CREDIT_PRICES)))
    for order in orders:
        if order and refunds and rng.random() < 0.015:
            _ordinary_refund(w, p, order)


def _ordinary_refund(w: _World, p: Person, order: tuple[str, float, str]) -> None:
    rng = w.rng
    t = _order_time(w, order) + rng.uniform(0.2, 48) * HOUR
    partial = round(order[1] * rng.uniform(0.3, 0.9), 2) if rng.random() < 0.15 else None
    w.refund(p, t, order, rng.choice(ORDINARY_REASONS), partial)


def _order_time(w: _World, order: tuple[str, float, str]) -> float:
    for t, kind, _, fields in reversed(w.events):
        if kind == "purchase" and fields["order_id"] == order[0]:
            return t
    raise KeyError(order[0])  # pragma: no cover


def _existing(w: _World, *, paid: float = 0.55, **kwargs: Any) -> Person:
    """An account from before the stream: no signup, ordinary life and billing."""
    p = w.person(card=True, **kwargs)
    w.live(p, w.start)
    _bill(w, p, paid=w.rng.random() < paid)
    return p


def _newcomer(w: _World, plan: str, *, converts: bool | None = None, at: float | None = None,
              person: Person | None = None, ip: str | None = None,
              signup_ip: str | None = None) -> Person:
    """Signs up during the window; trials convert (~30 %) within their trial period."""
    rng = w.rng
    card = plan == "paid" or rng.random() < (0.55 if plan == "trial" else 0.1)
    p = person or w.person(card=card)
    if converts is None:
        converts = rng.random() < 0.3
    t = at if at is not None else w.at(0.0, 0.97)
    if plan == "trial" and converts:  # a conversion the window shows
        t = min(t, w.end - 6 * HOUR)
    if plan == "paid" and p.card is None:
        p.card = w.card()
    w.signup(p, t, plan, ip=signup_ip or ip)
    end = w.session(p, t + rng.uniform(15, 300), ip=signup_ip or ip, n_usage=rng.randint(2, 9),
                    device=0)
    if plan == "paid":
        order = w.purchase(p, end + rng.uniform(20, 600), rng.choice(PLAN_PRICES))
        if order and rng.random() < 0.015:
            _ordinary_refund(w, p, order)
    elif plan == "trial" and converts:
        if p.card is None:
            p.card = w.card()
        latest = min(TRIAL_DAYS * DAY, w.end - t - 600)
        moment = t + rng.uniform(min(HOUR, latest / 2), latest)
        w.purchase(p, moment, rng.choice(PLAN_PRICES))
    elif plan == "free" and rng.random() < 0.05:
        w.purchase(p, w.at((t - w.start) / w.window, 1.0), rng.choice(PLAN_PRICES))
    w.live(p, end + HOUR, ip=ip)
    return p


def _normal(w: _World, n: int) -> None:
    rng = w.rng
    for _ in range(n):
        if rng.random() < 0.7:
            _existing(w)
        else:
            _newcomer(w, rng.choices(("trial", "free", "paid"), (60, 25, 15))[0])


# -- abuse: trial cycling ---------------------------------------------------------------------
def _dotted(local: str, rng: random.Random) -> str:
    out = local[0]
    for c in local[1:]:
        if rng.random() < 0.3 and out[-1] != ".":
            out += "."
        out += c
    return out


def _random_local(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789")
                       for _ in range(rng.randint(6, 11)))
    return f"{rng.choice(FIRST)}{rng.choice(('', '.', '_'))}{rng.choice(LAST)}" \
           f"{rng.randrange(1, 9999)}"


def _trial_ring(w: _World, variant: str) -> list[str]:
    """3-9 trial/free accounts of one actor, spread over hours to days, never converting."""
    rng = w.rng
    size = rng.randint(3, 9)
    country = w.country()
    first, last = rng.choice(FIRST), rng.choice(LAST)
    ring_device = w.device()
    ring_agent = rng.choice(DESKTOP_AGENTS + MOBILE_AGENTS)
    ring_card = w.card()
    net24 = w.subnet(country)
    home = w.host(net24)
    mailbox = f"{first}{last}{rng.randrange(1, 99) if rng.random() < 0.4 else ''}"
    while not w.claim(f"{mailbox}@gmail.com"):
        mailbox += str(rng.randrange(10))
    stem = rng.choice((f"{first}.{last}{{}}", f"{first}{last}{{:02d}}", f"{first[0]}{last}{{}}",
                       f"{first}_{last}{{}}", f"{last}.{first}{{}}"))
    number = rng.choice((1, 1, 2, rng.randint(3, 40)))
    stem_domain = w.webmail(country)
    plans = rng.choice((("trial",), ("trial",), ("trial",), ("free",), ("trial", "free")))
    # the timeline: signups hours to days apart, the whole ring inside the window
    gap = rng.choice((1.5, 4.0, 9.0, 20.0, 30.0, 48.0)) * HOUR
    offsets = list(accumulate([0.0] + [gap * rng.uniform(0.4, 1.6) for _ in range(size - 1)]))
    if offsets[-1] > 0.75 * w.window:
        offsets = [o * 0.75 * w.window / offsets[-1] for o in offsets]
    t0 = w.start + rng.uniform(0, w.window * 0.95 - offsets[-1] - 2 * HOUR)
    accounts: list[str] = []
    prev: dict[str, Any] = {}
    for i, offset in enumerate(offsets):
        p = w.person(country=country, email="", mobile_only=False)
        email, device, agent, ip, card = None, None, None, None, None
        if rng.random() < 0.3:
            card = w.card()  # some trials ask for a card
        if variant == "device_reuse":
            device, agent = ring_device, ring_agent
            ip = rng.choice((w.home_ip(country), w.mobile_ip(country), w.hosting_ip()))
        elif variant == "email_alias":
            while True:
                tag = rng.choice(("", f"+{i + 1}", f"+{i}", f"+trial{i}",
                                  f"+{rng.choice(('x', 'promo', 'new', 'work'))}{i}"))
                email = f"{_dotted(mailbox, rng)}{tag}@gmail.com"
                if email not in w.used:
                    w.used.add(email)
                    break
            ip = w.home_ip(country) if rng.random() < 0.7 else w.mobile_ip(country)
        elif variant == "numbered_stem":
            while True:
                domain = stem_domain if rng.random() < 0.8 else w.webmail(country)
                email = f"{stem.format(number)}@{domain}"
                number += 1 if rng.random() < 0.8 else rng.randint(2, 4)
                if w.claim(email):
                    break
            ip = w.host(net24)
        elif variant == "card_reuse":
            card = ring_card
            ip = rng.choice((w.home_ip(country), w.mobile_ip(country), w.hosting_ip()))
        elif variant == "disposable":
            email = f"{_random_local(rng)}@{rng.choice(DISPOSABLE)}"
            while not w.claim(email):
                email = f"{_random_local(rng)}@{rng.choice(DISPOSABLE)}"
            ip = home if rng.random() < 0.55 else w.host(net24)
            if rng.random() < 0.5:
                device, agent = ring_device, ring_agent
        elif variant == "mixed":
            if i == 0:
                card = ring_card
            else:
                for attribute in rng.sample(("device", "card", "ip", "email"),
                                            rng.choice((1, 1, 2))):
                    if attribute == "device":
                        device, agent = prev["device"], prev["agent"]
                    elif attribute == "card":
                        card = prev["card"] or ring_card
                    elif attribute == "ip":
                        ip = prev["ip"] if rng.random() < 0.6 else \
                            w.host(prev["ip"].rsplit(".", 1)[0])
                    else:
                        local, domain = prev["email"].split("@")
                        local = local.split("+")[0].rstrip("0123456789")
                        while not w.claim(email := f"{local}{i + rng.randint(1, 3)}@{domain}"):
                            local += rng.choice("0123456789")
        if email is None:
            email = w.email(country=country)
        if device is None:
            device, agent = w.device(), rng.choice(DESKTOP_AGENTS + MOBILE_AGENTS)
        ip = ip or rng.choice((w.home_ip(country), w.home_ip(country), w.mobile_ip(country)))
        p.email, p.devices, p.agents, p.ips, p.card = email, [device], [agent], [ip], card
        prev = {"device": device, "agent": agent, "card": card, "ip": ip, "email": email}
        t = t0 + offset
        w.signup(p, t, rng.choice(plans))
        # use the product through part of the trial, then go silent
        scale = rng.uniform(1.0, 3.0)
        t = w.session(p, t + rng.uniform(20, 400), n_usage=rng.randint(3, 14), scale=scale)
        for day in range(1, rng.randint(2, 10)):
            moment = t + day * DAY * rng.uniform(0.7, 1.1) + rng.uniform(-3, 3) * HOUR
            if moment < t + TRIAL_DAYS * DAY:
                w.session(p, moment, n_usage=rng.randint(2, 14), scale=scale)
        accounts.append(p.account_id)
    return accounts


# -- abuse: logins ----------------------------------------------------------------------------
def _attacker_agent(rng: random.Random) -> str:
    return rng.choice(SCRIPT_AGENTS) if rng.random() < 0.4 else rng.choice(DESKTOP_AGENTS)


def _credential_stuffing(w: _World, variant: str, victims: int) -> list[str]:
    """One attacker tries leaked passwords against existing accounts; few succeed."""
    rng = w.rng
    people = [_existing(w) for _ in range(victims)]
    country = rng.choice(COUNTRY_NAMES)
    device = w.device()
    if variant == "one_ip":
        ips = [(w.hosting_ip(), country)]
    elif variant == "one_subnet":
        net = w.hosting_ip().rsplit(".", 1)[0]
        ips = [(f"{net}.{h}", country) for h in rng.sample(range(2, 254), rng.randint(2, 8))]
    elif variant == "one_device":  # one device behind residential proxies
        ips = []
        for _ in range(rng.randint(5, 30)):
            where = w.country()
            ips.append((w.home_ip(where), where))
    else:  # rotating: a fresh proxy and device each attempt (below)
        ips = []
    rotate = rng.random() < 0.3
    agent = _attacker_agent(rng)
    span = math.exp(rng.uniform(math.log(5 * MINUTE), math.log(6 * HOUR)))
    span = min(span, 0.8 * w.window)
    t0 = w.start + rng.uniform(0.02 * w.window, w.window - span - 10 * MINUTE)
    for p in people:
        t = t0 + rng.uniform(0, span)
        for _ in range(rng.choices((1, 2, 3), (55, 30, 15))[0]):
            if ips:
                ip, where = rng.choice(ips)
            else:
                where = w.country()
                ip = w.home_ip(where)
            success = rng.random() < 0.04
            w.login(p.account_id, t, ip, device if variant == "one_device" else w.device(),
                    success, where, rng.choice(DESKTOP_AGENTS) if rotate else agent)
            if success:
                for _ in range(rng.randint(0, 3)):  # a look around the taken-over account
                    t += rng.uniform(5, 120)
                    w.usage(p, t, 1.0, rng.choice(("export", "report", "api_call")))
                break
            t += rng.uniform(1, 30)
    return [p.account_id for p in people]


def _brute_force(w: _World, p: Person) -> None:
    """15-200 failed passwords on one account within an hour, sometimes a success at the end."""
    rng = w.rng
    attempts = rng.randint(15, 200)
    span = rng.uniform(2, 58) * MINUTE
    t0 = w.start + rng.uniform(0.02 * w.window, w.window - span - 5 * MINUTE)
    ips = []
    for _ in range(rng.randint(1, 3)):
        where = w.country()
        ips.append(rng.choice(((w.hosting_ip(), where), (w.home_ip(where), where))))
    device, agent = w.device(), _attacker_agent(rng)
    rotate_device = rng.random() < 0.3
    for offset in sorted(rng.uniform(0, span) for _ in range(attempts)):
        ip, where = rng.choice(ips)
        w.login(p.account_id, t0 + offset, ip, w.device() if rotate_device else device, False,
                where, agent)
    if rng.random() < 0.3:
        ip, where = ips[-1]
        w.login(p.account_id, t0 + span + rng.uniform(2, 60), ip, device, True, where, agent)


def _account_sharing(w: _World, p: Person) -> None:
    """One paid account used from 4-10 devices in 3+ countries within a day or two."""
    rng = w.rng
    devices = rng.randint(4, 10)
    others = [c for c in COUNTRY_NAMES if c != p.country]
    countries = [p.country, *rng.sample(others, rng.randint(2, min(5, devices - 1)))]
    span = rng.uniform(0.5, 2.0) * DAY
    span = min(span, 0.8 * w.window)
    t0 = w.start + rng.uniform(0.02 * w.window, w.window - span - HOUR)
    for k in range(devices):
        where = countries[k] if k < len(countries) else rng.choice(countries)
        device, agent = w.device(), rng.choice(DESKTOP_AGENTS + MOBILE_AGENTS)
        ip = w.home_ip(where)
        for _ in range(rng.randint(1, 3)):
            t = t0 + rng.uniform(0, span)
            w.login(p.account_id, t, ip, device, True, where, agent)
            for _ in range(rng.randint(1, 6)):
                t += 2 + rng.expovariate(1 / 90)
                w.usage(p, t)


def _scripted(w: _World, p: Person) -> None:
    """Logins at machine-regular intervals (60-900 s, jitter < 1 %) for hours to days."""
    rng = w.rng
    interval = rng.uniform(60, 900)
    jitter = rng.uniform(0.0005, 0.008)
    duration = min(math.exp(rng.uniform(math.log(3 * HOUR), math.log(3 * DAY))),
                   0.9 * w.window)
    t = w.start + rng.uniform(0, w.window - duration)
    until = t + duration
    device = w.device() if rng.random() < 0.6 else p.devices[0]
    ip = w.hosting_ip() if rng.random() < 0.5 else p.ips[0]
    agent = rng.choice(SCRIPT_AGENTS) if rng.random() < 0.6 else rng.choice(DESKTOP_AGENTS)
    while t < until:
        w.login(p.account_id, t, ip, device, True, p.country, agent)
        if rng.random() < 0.6:
            w.usage(p, t + rng.uniform(0.3, 3), None, rng.choice(("api_call", "export")))
        t += interval * (1 + rng.uniform(-jitter, jitter))


# -- abuse: refunds ---------------------------------------------------------------------------
def _refund_cycles(w: _World, p: Person, cycles: int, heavy: float, t0: float,
                   t1: float) -> int:
    """``cycles`` times: purchase, heavy usage over hours or days, full refund."""
    rng = w.rng
    budget = (t1 - t0) / cycles
    t = t0
    refunds = 0
    for _ in range(cycles):
        order = w.purchase(p, t, rng.choice(PLAN_PRICES[2:] + CREDIT_PRICES[3:]))
        hold = min(3 * DAY, max(1.5 * HOUR, budget * rng.uniform(0.3, 0.6)))
        for offset in sorted(rng.uniform(0.02, 0.97) for _ in range(rng.randint(8, 25))):
            w.usage(p, t + hold * offset, heavy * rng.uniform(0.5, 1.5))
        if order and w.refund(p, t + hold, order, rng.choice(ABUSE_REASONS)):
            refunds += 1
        t += hold + budget * rng.uniform(0.1, 0.35)
    return refunds


def _refunder(w: _World, cycles: int, heavy: float) -> Person:
    rng = w.rng
    if rng.random() < 0.7:
        p = _existing(w)
        t0 = w.at(0.0, 0.1)
    else:
        t0 = w.at(0.0, 0.05)
        p = _newcomer(w, rng.choice(("paid", "free")), at=t0)
        t0 += rng.uniform(0.2, 3) * HOUR
    p.features = tuple(rng.sample(FEATURES[:6], rng.randint(2, 4)))
    p.feature_cum = tuple(accumulate(rng.uniform(1, 3) for _ in p.features))
    _refund_cycles(w, p, cycles, heavy, t0, w.end - 2 * HOUR)
    return p


def _card_ring(w: _World) -> list[str]:
    """3-6 accounts sharing one card: each buys, uses heavily and asks for a refund."""
    rng = w.rng
    card = w.card()
    country = w.country()
    members = rng.randint(3, 6)
    gaps = [rng.uniform(0.5, 30) * HOUR for _ in range(members)]
    squeeze = min(1.0, 0.35 * w.window / sum(gaps))
    t = w.at(0.0, 0.25)
    accounts = []
    for gap in gaps:
        p = w.person(country=country if rng.random() < 0.7 else None)
        p.card = card
        w.signup(p, t, rng.choice(("paid", "free", "trial")))
        end = w.session(p, t + rng.uniform(30, 600), n_usage=rng.randint(1, 4), device=0)
        cycle_end = min(w.end - HOUR, end + rng.uniform(0.1, 0.35) * w.window)
        _refund_cycles(w, p, 1, rng.uniform(25, 80), end + rng.uniform(60, 3600), cycle_end)
        w.live(p, end + HOUR)
        accounts.append(p.account_id)
        t += gap * squeeze
    return accounts


# -- benign look-alikes -----------------------------------------------------------------------
def _office(w: _World, size: int) -> list[str]:
    """A company behind one NAT address: mostly paid or converted, office hours."""
    rng = w.rng
    country = w.country()
    company = rng.choice(w.companies)
    nat = w.home_ip(country)
    people = []
    for _ in range(size):
        p = w.person(country=country, email=w.email(domain=company), card=True,
                     mobile_only=False)
        p.ips, p.weekend = [nat], rng.uniform(0.0, 0.2)
        p.activity = rng.uniform(0.6, 0.95)
        if rng.random() < 0.3:  # joins during the window
            plan = rng.choices(("paid", "trial", "free"), (5, 4, 1))[0]
            _newcomer(w, plan, converts=True, person=p, ip=nat)
        else:
            w.live(p, w.start, ip=nat, mistype=0.06)
            _bill(w, p, paid=rng.random() < 0.85, refunds=False)
            if p.account_id not in w.emitted:  # a short window of weekend days
                t = w.local_time(p, rng.randrange(w.days))
                t += DAY if t < w.start else -DAY if t >= w.end else 0.0
                w.session(p, t, ip=nat, mistype=0.06)
        people.append(p.account_id)
    return people


def _family(w: _World) -> list[str]:
    """2-3 people at home sharing a computer; different mailboxes and cards."""
    rng = w.rng
    country = w.country()
    last = rng.choice(LAST)
    device, agent, home = w.device(), rng.choice(DESKTOP_AGENTS), w.home_ip(country)
    t = w.at(0.0, 0.4)
    people = []
    for i in range(rng.randint(2, 3)):
        p = w.person(country=country, email=w.email(last=last if rng.random() < 0.6 else None,
                                                    country=country))
        p.devices, p.agents, p.ips = [device, *p.devices[1:]], [agent, *p.agents[1:]], \
            [home, *p.ips[1:]]
        if i == 0:  # at least one of them pays
            plan = rng.choice(("paid", "trial"))
        else:
            plan = rng.choice(("trial", "trial", "free", "paid"))
        _newcomer(w, plan, converts=True if i == 0 else None, at=t, person=p, ip=home)
        t += min(rng.uniform(2, 72) * HOUR, 0.25 * w.window)
        people.append(p.account_id)
    return people


def _university(w: _World, size: int) -> list[str]:
    """Students signing up for trials in the same week from one campus network."""
    rng = w.rng
    country = rng.choice(("US", "US", "US", "CA"))
    school = rng.choice(w.campuses)
    net = w.subnet(country)
    nats = [w.host(net) for _ in range(rng.randint(2, 4))]
    week = min(7 * DAY, 0.8 * w.window)
    t0 = w.start + rng.uniform(0, w.window - week - 2 * HOUR)
    people = []
    for _ in range(size):
        p = w.person(country=country, email=w.email(domain=school))
        p.ips = [rng.choice(nats) if rng.random() < 0.7 else w.host(net), *p.ips]
        t = t0 + rng.uniform(0, week)
        _newcomer(w, "trial", converts=rng.random() < 0.25, at=t, person=p, signup_ip=p.ips[0])
        people.append(p.account_id)
    return people


def _gave_up(w: _World) -> str:
    """Fails a few times on a new device (at home or on mobile data), gives up for the day,
    and carries on from the usual device later."""
    rng = w.rng
    p = _existing(w)
    day = rng.randrange(w.days)
    t = w.local_time(p, day)
    device, agent = w.device(), rng.choice(MOBILE_AGENTS)
    ip = p.ips[0] if rng.random() < 0.5 else w.mobile_ip(p.country)
    for _ in range(rng.randint(1, 3)):
        w.login(p.account_id, t, ip, device, False, p.country, agent)
        t += rng.uniform(8, 60)
    return p.account_id


def _traveller(w: _World) -> str:
    """Logs in from 2-3 countries over days, on one device, with time to fly between."""
    rng = w.rng
    p = w.person(card=True)
    route = [p.country, *rng.sample([c for c in COUNTRY_NAMES if c != p.country],
                                    rng.randint(1, 2))]
    legs = len(route)
    stay = max(0.4 * DAY, (w.window - legs * 14 * HOUR) / legs)
    t = w.start + rng.uniform(0, 0.1) * w.window
    for country in route:
        leave = t + stay * rng.uniform(0.7, 1.0)
        moment = t + rng.uniform(1, 6) * HOUR
        ip = w.home_ip(country) if country == p.country else w.mobile_ip(country)
        while moment < leave:
            w.session(p, moment, ip=ip, device=0, country=country)
            moment += rng.uniform(5, 26) * HOUR
        t = leave + rng.uniform(10, 16) * HOUR  # the flight
    _bill(w, p, paid=True, refunds=False)
    return p.account_id


# -- the whole stream -------------------------------------------------------------------------
def _label(w: _World, kind: str, detector: str | None, accounts: Iterable[str]) -> None:
    group: dict[str, Any] = {"kind": kind}
    if detector:
        group["detector"] = detector
    group["accounts"] = sorted({a for a in accounts if a in w.emitted})  # those in the stream
    if group["accounts"]:
        (w.abuse if detector else w.benign).append(group)


def _finish(w: _World) -> tuple[list[dict[str, Any]], int]:
    """Order per account, jitter across accounts, re-deliver a few, assign ids."""
    rng = w.rng
    nrng = np.random.default_rng(rng.getrandbits(64))
    n = len(w.events)
    times = np.fromiter((e[0] for e in w.events), dtype=np.float64, count=n)
    order = np.argsort(times, kind="stable")
    events = [w.events[i] for i in order.tolist()]
    times = times[order]
    # each account's events keep their order; slots of different accounts interleave by
    # t + U(0, JITTER), so an event is never more than JITTER seconds late
    keys = times + nrng.uniform(0, JITTER, n)
    slots = np.argsort(keys, kind="stable")
    queues: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        queues.setdefault(event[2], []).append(i)
    for queue in queues.values():
        queue.reverse()
    stream_index = [queues[events[j][2]].pop() for j in slots.tolist()]
    slot_keys = keys[slots]
    ids = set()
    out: list[dict[str, Any]] = []
    for i in stream_index:
        t, kind, account, fields = events[i]
        event_id = f"evt_{rng.getrandbits(80):020x}"
        while event_id in ids:  # pragma: no cover - 80 random bits
            event_id = f"evt_{rng.getrandbits(80):020x}"
        ids.add(event_id)
        out.append({"event_id": event_id, "type": kind, "ts": _ts(t), "account_id": account,
                    **fields})
    # re-deliveries: a copy shortly after the original
    picks = sorted(rng.sample(range(n), round(n * DUPLICATE_RATE)))
    again = slot_keys[picks] + nrng.uniform(1, DUPLICATE_DELAY, len(picks))
    where = np.searchsorted(slot_keys, again, side="right").tolist()
    stream: list[dict[str, Any]] = []
    done = 0
    for position, pick in sorted(zip(where, picks, strict=True)):
        stream.extend(out[done:position])
        stream.append(dict(out[pick]))
        done = position
    stream.extend(out[done:])
    return stream, len(picks)


def generate(accounts: int, days: int, seed: int,
             start: datetime | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``accounts`` accounts (all kinds together) over ``days`` days: ``(events, labels)``.

    Deterministic for ``seed``; ``start`` defaults to 2026-11-01T00:00:00Z (a naive datetime
    is taken as UTC).
    """
    if accounts < 200 or days < 1:
        raise ValueError("generate needs at least 200 accounts and 1 day")
    start = start or START
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    rng = random.Random(seed)
    w = _World(rng, start.timestamp(), days)
    scale = accounts / 5000

    def count(n: float) -> int:
        return max(1, round(n * scale))

    def size(lo: int, hi: int, share: float) -> int:
        return rng.randint(lo, max(lo, min(hi, int(accounts * share))))

    # abuse: trial cycling rings, each variant several times
    for variant in RING_VARIANTS:
        for _ in range(count(3)):
            _label(w, variant, "trial_cycling", _trial_ring(w, variant))
    # abuse: logins
    first = rng.randrange(len(STUFFING_VARIANTS))
    for k in range(count(2)):
        variant = STUFFING_VARIANTS[(first + k) % len(STUFFING_VARIANTS)]
        victims = 20 + int((size(20, 150, 0.03) - 20) * rng.random() ** 0.7)
        _label(w, "credential_stuffing", "login_frequency",
               _credential_stuffing(w, variant, victims))
    for kind, action, paid in (("brute_force", _brute_force, 0.55),
                               ("account_sharing", _account_sharing, 1.0),
                               ("scripted", _scripted, 0.55)):
        group = []
        for _ in range(count(8)):
            p = _existing(w, paid=paid)
            action(w, p)
            group.append(p.account_id)
        _label(w, kind, "login_frequency", group)
    # abuse: refunds
    _label(w, "serial_refunder", "refund_abuse",
           [_refunder(w, rng.randint(3, 6), rng.uniform(20, 60)).account_id
            for _ in range(count(10))])
    _label(w, "consume_then_refund", "refund_abuse",
           [_refunder(w, 2, rng.uniform(40, 120)).account_id for _ in range(count(10))])
    for _ in range(count(4)):
        _label(w, "card_ring", "refund_abuse", _card_ring(w))
    # benign look-alikes
    for _ in range(count(2)):
        _label(w, "office_nat", None, _office(w, size(20, 60, 0.012)))
    for _ in range(count(2)):
        _label(w, "university", None, _university(w, size(30, 100, 0.02)))
    for _ in range(count(25)):
        _label(w, "family_device", None, _family(w))
    _label(w, "converting_trial", None,
           [_newcomer(w, "trial", converts=True).account_id for _ in range(count(40))])
    power = []
    for _ in range(count(25)):
        p = w.person(card=True, mobile_only=False)
        p.activity, p.weekend = rng.uniform(0.9, 1.0), rng.uniform(0.5, 1.0)
        p.intensity, p.volume = rng.uniform(8, 25), rng.uniform(2, 4)
        w.live(p, w.start, sessions=(2, 3, 4))
        _bill(w, p, paid=True, refunds=False)
        for week in range(0, w.days, 7):
            w.purchase(p, w.local_time(p, week + rng.randrange(min(7, w.days - week))),
                       rng.choice(CREDIT_PRICES[3:]))
        power.append(p.account_id)
    _label(w, "power_user", None, power)
    mistypers = []
    for _ in range(count(30)):
        p = w.person(card=True)
        w.live(p, w.start, mistype=0.0)
        _bill(w, p, paid=rng.random() < 0.55, refunds=False)
        for day in rng.sample(range(w.days), min(w.days, rng.randint(1, 3))):
            t = w.local_time(p, day)
            for _ in range(rng.randint(2, 4)):
                w.login(p.account_id, t, p.ips[0], p.devices[0], False, p.country, p.agents[0])
                t += rng.uniform(8, 50)
            w.session(p, t, ip=p.ips[0], device=0, mistype=0.0)
        mistypers.append(p.account_id)
    _label(w, "mistyper", None, mistypers)
    _label(w, "traveller", None, [_traveller(w) for _ in range(count(20))])
    refunders = []
    for _ in range(count(30)):
        p = w.person(card=True)
        p.activity = rng.uniform(0.05, 0.4)
        w.live(p, w.start)
        t = w.at(0.0, 0.9)
        order = w.purchase(p, t, rng.choice(PLAN_PRICES + CREDIT_PRICES))
        assert order is not None
        if rng.random() < 0.5:
            w.usage(p, t + rng.uniform(60, 1800), 1.0)
        latest = min(30 * HOUR, w.end - t - 60)
        w.refund(p, t + rng.uniform(0.1, 1.0) * latest, order, rng.choice(ORDINARY_REASONS))
        refunders.append(p.account_id)
    _label(w, "one_refund", None, refunders)
    # drawn last, so that adding them left every scenario above as it was
    _label(w, "credential_stuffing", "login_frequency",
           _credential_stuffing(w, SPREAD_VARIANT, size(20, 80, 0.02)))
    _label(w, "gave_up", None, [_gave_up(w) for _ in range(count(30))])
    if w.made > accounts:
        raise ValueError(f"{accounts} accounts are too few for every scenario; try more")
    _normal(w, accounts - w.made)
    events, duplicates = _finish(w)
    labels = {
        "generator": {"accounts": accounts, "days": days, "seed": seed, "start": _ts(w.start)},
        "abuse": w.abuse,
        "benign": w.benign,
        "counts": {"events": len(events), "duplicates": duplicates},
    }
    return events, labels


def _open_out(path: str | os.PathLike[str]):
    path = os.fspath(path)
    if path == "-":
        return sys.stdout.buffer, False
    if path.endswith(".gz"):
        return gzip.open(path, "wb", compresslevel=5), True
    return open(path, "wb"), True


def write_events(events: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """JSONL, one event a line; gzip when ``path`` ends with ``.gz``; ``-`` for stdout."""
    file, close = _open_out(path)
    try:
        chunk: list[bytes] = []
        for event in events:
            chunk.append(orjson.dumps(event))
            if len(chunk) >= 10_000:
                file.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            file.write(b"\n".join(chunk) + b"\n")
        file.flush()
    finally:
        if close:
            file.close()


def write_labels(labels: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """The labels as indented JSON (``-`` for stdout)."""
    file, close = _open_out(path)
    try:
        file.write(orjson.dumps(labels, option=orjson.OPT_INDENT_2) + b"\n")
        file.flush()
    finally:
        if close:
            file.close()
