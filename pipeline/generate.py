"""Synthetic SaaS traffic with labelled abuse scenarios and benign look-alikes.

Most accounts existed before the stream starts (no signup event); new ones sign up on trial,
free or paid plans and some trials convert. People live in countries with diurnal rhythms, use
one or two devices and user agents, log in from their ISP's addresses and now and then mistype
a password. Into this population go abuse scenarios, each in several variants with randomised
sizes and timings, and benign groups that resemble abuse (offices behind one NAT, families on
one device, campuses, travellers, power users...). ``labels`` says which detector should catch
which accounts, and which accounts are benign look-alikes.

The stream is ordered per account; across accounts events are up to two minutes out of order,
and about 0.1 % of events are delivered twice.

Examples
--------
>>> events, labels = generate(accounts=300, days=2, seed=1)
>>> events == generate(accounts=300, days=2, seed=1)[0]
True
>>> sorted({e["type"] for e in events})
['login', 'purchase', 'refund', 'signup', 'usage']
>>> sorted({g["detector"] for g in labels["abuse"]})
['login_frequency', 'refund_abuse', 'trial_cycling']
"""

from __future__ import annotations

import gzip
import random
import sys
import time as _time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["generate", "write_events", "write_labels"]

DAY = 86_400.0
HOUR = 3_600.0
START = datetime(2026, 11, 1, tzinfo=UTC)

FIRST = """
james mary john patricia robert jennifer michael linda william elizabeth david barbara
richard susan joseph jessica thomas sarah charles karen daniel nancy matthew lisa anthony
betty mark sandra paul ashley steven kimberly andrew emily joshua donna kevin michelle brian
carol george amanda timothy melissa ronald deborah jason laura lucas emma noah olivia liam
mia ethan sofia mateo chloe hugo lea luca giulia jan anna pierre camille diego lucia yuki
hana arjun priya wei min omar fatima ivan olga
""".split()
LAST = """
smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez
gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris
sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill
flores green adams nelson baker hall rivera campbell mitchell carter roberts muller schmidt
schneider fischer weber meyer dubois moreau laurent bernard rossi russo ferrari esposito
bianchi tanaka suzuki sato kumar sharma patel singh chen wang zhang novak kowalski nowak
ivanov petrov silva santos oliveira
""".split()
MAIL = ("gmail.com", "gmail.com", "gmail.com", "outlook.com", "yahoo.com", "hotmail.com",
        "icloud.com", "proton.me", "gmx.de", "orange.fr")
DISPOSABLE = ("mailinator.com", "guerrillamail.com", "10minutemail.com", "yopmail.com",
              "trashmail.com", "sharklasers.com", "getnada.com", "maildrop.cc")
COUNTRIES = {  # country -> (weight, UTC offset hours, first IPv4 octets of its ISPs)
    "US": (30, -5, (23, 24, 50, 66, 68, 71, 73, 98, 104, 107)),
    "GB": (8, 0, (2, 31, 51, 81, 86)), "DE": (8, 1, (5, 46, 77, 84, 91)),
    "FR": (6, 1, (2, 37, 78, 86, 90)), "CA": (5, -5, (24, 70, 99, 142)),
    "IN": (8, 5, (49, 103, 106, 117)), "BR": (6, -3, (177, 179, 187, 189)),
    "JP": (4, 9, (60, 114, 126, 133)), "AU": (3, 10, (1, 27, 49, 101)),
    "ES": (3, 1, (2, 79, 83, 88)), "IT": (3, 1, (2, 79, 87, 93)),
    "NL": (3, 1, (31, 77, 84, 145)), "PL": (2, 1, (31, 46, 83, 89)),
    "MX": (3, -6, (187, 189, 201)), "SE": (2, 1, (31, 78, 81, 90)),
    "SG": (2, 8, (27, 42, 116, 175)), "ZA": (1, 2, (41, 102, 105, 197)),
}
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, "
    "like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    "abuse-pipeline-mobile/4.2.1 (Android 13)",
)
FEATURES = ("export", "api_call", "report", "seat", "storage_gb", "ai_summary", "render")
CURRENCIES = ("USD", "USD", "USD", "EUR", "EUR", "GBP")
REFUND_REASONS = ("accidental purchase", "not as described", "changed my mind",
                  "duplicate charge", "did not work for me", None)


def _ts(t: float) -> str:
    whole = int(t)
    ms = round((t - whole) * 1000)
    if ms == 1000:
        whole, ms = whole + 1, 0
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(whole)) + f".{ms:03d}Z"


@dataclass
class Person:
    """One account's owner: where they are, how they write, what they use."""

    account_id: str
    country: str
    offset: float  # hours from UTC
    email: str
    devices: list[str]
    ips: list[str]
    agents: list[str]
    card: str | None
    activity: float  # chance of being active on a day
    intensity: float  # usage scale


@dataclass
class _World:
    rng: random.Random
    start: float
    days: int
    events: list[dict[str, Any]] = field(default_factory=list)
    abuse: list[dict[str, Any]] = field(default_factory=list)
    benign: list[dict[str, Any]] = field(default_factory=list)
    used_ids: set[str] = field(default_factory=set)
    orders: int = 0

    @property
    def end(self) -> float:
        return self.start + self.days * DAY

    # -- identifiers --------------------------------------------------------------------
    def hexid(self, prefix: str, n: int) -> str:
        while True:
            value = f"{prefix}{self.rng.getrandbits(4 * n):0{n}x}"
            if value not in self.used_ids:
                self.used_ids.add(value)
                return value

    def account(self) -> str:
        return self.hexid("acct_", 10)

    def device(self) -> str:
        return self.hexid("d-", 12)

    def card(self) -> str:
        return self.hexid("card_", 16)

    def order(self) -> str:
        self.orders += 1
        return f"ord_{self.orders:07d}"

    def country(self) -> str:
        names = list(COUNTRIES)
        return self.rng.choices(names, weights=[COUNTRIES[c][0] for c in names])[0]

    def ip(self, country: str, *, net: str | None = None) -> str:
        rng = self.rng
        if net is None:
            first = rng.choice(COUNTRIES[country][2])
            net = f"{first}.{rng.randrange(256)}.{rng.randrange(256)}"
        return f"{net}.{rng.randrange(2, 254)}"

    def email(self, first: str | None = None, last: str | None = None, *, domain=None) -> str:
        rng = self.rng
        first, last = first or rng.choice(FIRST), last or rng.choice(LAST)
        style = rng.random()
        if style < 0.35:
            local = f"{first}.{last}"
        elif style < 0.55:
            local = f"{first[0]}{last}{rng.randrange(1, 99)}"
        elif style < 0.75:
            local = f"{first}{last}{rng.randrange(1950, 2008)}"
        elif style < 0.9:
            local = f"{first}_{last[:3]}{rng.randrange(10, 999)}"
        else:
            local = f"{last}.{first}{rng.randrange(1, 9)}"
        address = f"{local}@{domain or rng.choice(MAIL)}"
        if address in self.used_ids:  # a mailbox belongs to one person
            return self.email(first, last, domain=domain)
        self.used_ids.add(address)
        return address

    def person(self, *, country: str | None = None, email: str | None = None,
               card: bool = True) -> Person:
        rng = self.rng
        country = country or self.country()
        n_devices = 1 if rng.random() < 0.6 else 2
        return Person(
            account_id=self.account(), country=country, offset=COUNTRIES[country][1],
            email=email or self.email(), devices=[self.device() for _ in range(n_devices)],
            ips=[self.ip(country) for _ in range(rng.choice((1, 1, 2, 3)))],
            agents=rng.sample(USER_AGENTS, n_devices), card=self.card() if card else None,
            activity=rng.uniform(0.25, 0.9), intensity=rng.lognormvariate(0, 0.6),
        )

    # -- events -------------------------------------------------------------------------
    def emit(self, kind: str, account: str, t: float, **fields: Any) -> None:
        if t < self.start or t >= self.end:
            return
        self.events.append({"_t": t, "type": kind, "account_id": account, **fields})

    def signup(self, p: Person, t: float, plan: str, *, ip: str | None = None,
               device: str | None = None) -> None:
        self.emit("signup", p.account_id, t, email=p.email, ip=ip or p.ips[0],
                  device_id=device or p.devices[0], card_fingerprint=p.card, plan=plan,
                  country=p.country)

    def login(self, p: Person, t: float, *, success: bool = True, ip: str | None = None,
              device: str | None = None, country: str | None = None) -> None:
        index = self.rng.randrange(len(p.devices))
        self.emit("login", p.account_id, t, ip=ip or self.rng.choice(p.ips),
                  device_id=device or p.devices[index], success=success,
                  country=country or p.country,
                  user_agent=p.agents[index % len(p.agents)])

    def usage(self, p: Person, t: float, units: float | None = None) -> None:
        rng = self.rng
        if units is None:
            units = round(rng.lognormvariate(0.5, 0.9) * p.intensity, 2)
        self.emit("usage", p.account_id, t, feature=rng.choice(FEATURES), units=units)

    def purchase(self, p: Person, t: float, amount: float | None = None) -> str:
        order = self.order()
        amount = amount or self.rng.choice((9.0, 19.0, 29.0, 49.0, 99.0, 199.0))
        self.emit("purchase", p.account_id, t, order_id=order, amount=amount,
                  currency=self.rng.choice(CURRENCIES))
        return order

    def refund(self, p: Person, t: float, order: str, amount: float, reason=None) -> None:
        self.emit("refund", p.account_id, t, order_id=order, amount=amount, currency="USD",
                  reason=reason if reason is not None else self.rng.choice(REFUND_REASONS))

    def local_time(self, p: Person, day: int) -> float:
        """A moment on ``day`` when people are awake where ``p`` lives."""
        rng = self.rng
        hour = min(23.9, max(6.0, rng.gauss(14.5, 4.0)))
        return self.start + day * DAY + (hour - p.offset) * HOUR + rng.uniform(0, 3600)

    def session(self, p: Person, t: float, *, mistype: float = 0.03, usage: int | None = None,
                ip: str | None = None, device: str | None = None, scale: float = 1.0,
                country: str | None = None) -> None:
        rng = self.rng
        if rng.random() < mistype:
            self.login(p, t, success=False, ip=ip, device=device, country=country)
            t += rng.uniform(5, 40)
        self.login(p, t, ip=ip, device=device, country=country)
        for _ in range(usage if usage is not None else rng.randrange(1, 7)):
            t += rng.uniform(20, 900)
            units = None if scale == 1.0 else round(rng.lognormvariate(0.5, 0.9) * scale, 2)
            self.usage(p, t, units)

    def live(self, p: Person, from_t: float, *, until: float | None = None, scale: float = 1.0,
             ip: str | None = None, mistype: float = 0.03) -> None:
        """Ordinary daily life between ``from_t`` and ``until``."""
        rng = self.rng
        until = until or self.end
        for day in range(self.days):
            if rng.random() > p.activity:
                continue
            for _ in range(rng.choice((1, 1, 2, 3))):
                t = self.local_time(p, day)
                if from_t <= t < until:
                    self.session(p, t, ip=ip, mistype=mistype, scale=scale)


# -- populations ---------------------------------------------------------------------------
def _normal(w: _World, n: int) -> None:
    rng = w.rng
    for _ in range(n):
        if rng.random() < 0.7:  # existed before the stream
            p = w.person()
            w.live(p, w.start)
            if rng.random() < 0.45:  # a monthly renewal may fall in the window
                t = w.start + rng.uniform(0, 30) * DAY
                if t < w.end:
                    amount = rng.choice((9.0, 19.0, 49.0))
                    order = w.purchase(p, t, amount)
                    if rng.random() < 0.015:
                        w.refund(p, t + rng.uniform(1, 48) * HOUR, order, amount)
        else:
            _newcomer(w, rng.choices(("trial", "free", "paid"), (60, 25, 15))[0])


def _newcomer(w: _World, plan: str, *, converts: bool | None = None) -> Person:
    rng = w.rng
    p = w.person(card=plan == "paid" or rng.random() < (0.6 if plan == "trial" else 0.1))
    t = w.start + rng.uniform(0, w.days * DAY * 0.95)
    w.signup(p, t, plan)
    w.session(p, t + rng.uniform(10, 120), usage=rng.randrange(2, 8))
    if plan == "paid":
        w.purchase(p, t + rng.uniform(30, 600))
    elif plan == "trial" and (converts if converts is not None else rng.random() < 0.3):
        w.purchase(p, t + rng.uniform(1, 13) * DAY)
    w.live(p, t + HOUR)
    return p


# -- abuse: trial cycling ------------------------------------------------------------------
def _trial_ring(w: _World, variant: str) -> list[str]:
    rng = w.rng
    size = rng.randint(3, 9)
    country = w.country()
    first, last = rng.choice(FIRST), rng.choice(LAST)
    device, card = w.device(), w.card()
    net = w.ip(country).rsplit(".", 1)[0]
    home_ip = w.ip(country)
    plan = "trial" if rng.random() < 0.8 else "free"
    t = w.start + rng.uniform(0, max(DAY, (w.days - 3) * DAY))
    gap_hours = rng.choice((3.0, 10.0, 24.0, 48.0))
    accounts, previous = [], None
    for i in range(size):
        email = w.email()
        p = w.person(country=country, email=email, card=False)
        if variant == "device_reuse":
            p.devices = [device]
        elif variant == "email_alias":
            local = f"{first}{last}"
            dotted = "".join(c + ("." if rng.random() < 0.3 else "") for c in local).strip(".")
            p.email = f"{dotted}+{rng.choice(('trial', 'x', 'promo', ''))}{i}@gmail.com"
        elif variant == "numbered_stem":
            sep = rng.choice((".", "", "_"))
            p.email = f"{first}{sep}{last}{i + rng.choice((1, 10, 100))}@{rng.choice(MAIL)}"
            p.ips = [w.ip(country, net=net)]
        elif variant == "card_reuse":
            p.card = card
        elif variant == "disposable":
            p.email = w.email(domain=rng.choice(DISPOSABLE))
            p.ips = [home_ip if rng.random() < 0.6 else w.ip(country, net=net)]
            if rng.random() < 0.5:
                p.devices = [device]
        elif variant == "mixed" and previous is not None:
            for attribute in rng.sample(("device", "card", "ip", "email"), rng.choice((1, 2))):
                if attribute == "device":
                    p.devices = [previous.devices[0]]
                elif attribute == "card":
                    p.card = previous.card or card
                elif attribute == "ip":
                    p.ips = [previous.ips[0]]
                else:
                    local = previous.email.split("@")[0].rstrip("0123456789")
                    p.email = f"{local}{i + 2}@{previous.email.split('@')[1]}"
        if variant == "mixed" and previous is None:
            p.card = card
        signup_t = t + i * gap_hours * HOUR * rng.uniform(0.5, 1.5)
        if signup_t >= w.end - HOUR:
            break  # the stream ends before this account is made: it is not in the data
        w.signup(p, signup_t, plan)
        # use the product through the trial, then go silent
        for day in range(rng.randint(2, 10)):
            moment = signup_t + day * DAY + rng.uniform(600, 20_000)
            w.session(p, moment, usage=rng.randrange(3, 12), scale=2.0)
        accounts.append(p.account_id)
        previous = p
    return accounts if len(accounts) >= 2 else []  # one account in the window is no ring


# -- abuse: logins -------------------------------------------------------------------------
def _credential_stuffing(w: _World, victims: list[Person], variant: str) -> list[str]:
    rng = w.rng
    country = rng.choice(("RU", "VN", "BR", "US", "NL", "IN"))
    net = f"{rng.randrange(11, 220)}.{rng.randrange(256)}.{rng.randrange(256)}"
    ips = [f"{net}.{rng.randrange(2, 254)}" for _ in range(1 if variant == "one_ip" else 4)]
    device = w.device()
    t = w.start + rng.uniform(0.5, w.days - 0.5) * DAY
    span = rng.uniform(0.2, 5.0) * HOUR
    for p in victims:
        moment = t + rng.uniform(0, span)
        for attempt in range(rng.choice((1, 1, 2, 3))):
            success = rng.random() < 0.04
            w.emit("login", p.account_id, moment + attempt * rng.uniform(1, 20),
                   ip=rng.choice(ips), success=success, country=country if country in COUNTRIES
                   else None, device_id=device if variant == "one_device" else w.device(),
                   user_agent="python-requests/2.32.3" if rng.random() < 0.5 else USER_AGENTS[0])
            if success:
                break
    return [p.account_id for p in victims]


def _brute_force(w: _World, p: Person) -> None:
    rng = w.rng
    t = w.start + rng.uniform(0.5, w.days - 0.5) * DAY
    ips = [w.ip(w.country()) for _ in range(rng.randint(1, 3))]
    device = w.device()
    attempts = rng.randint(15, 200)
    span = rng.uniform(5, 55) * 60
    for i in range(attempts):
        w.emit("login", p.account_id, t + span * i / attempts, ip=rng.choice(ips),
               device_id=device, success=False, user_agent=USER_AGENTS[2])
    if rng.random() < 0.3:
        w.emit("login", p.account_id, t + span + 5, ip=ips[0], device_id=device, success=True)


def _account_sharing(w: _World, p: Person) -> None:
    rng = w.rng
    t = w.start + rng.uniform(0.5, max(1.0, w.days - 2)) * DAY
    countries = rng.sample(list(COUNTRIES), rng.randint(3, 6))
    sharers = [(w.device(), rng.choice(countries)) for _ in range(rng.randint(4, 10))]
    for device, country in sharers:
        for _ in range(rng.randint(1, 3)):
            moment = t + rng.uniform(0, rng.choice((1.0, 2.0)) * DAY)
            w.emit("login", p.account_id, moment, ip=w.ip(country), device_id=device,
                   success=True, country=country, user_agent=rng.choice(USER_AGENTS))
            w.usage(p, moment + 60)


def _scripted(w: _World, p: Person) -> None:
    rng = w.rng
    interval = rng.uniform(60, 900)
    t = w.start + rng.uniform(0, max(0.5, w.days - 2)) * DAY
    until = t + rng.uniform(6 * HOUR, 2 * DAY)
    ip, device = p.ips[0], p.devices[0]
    while t < until:
        w.emit("login", p.account_id, t, ip=ip, device_id=device, success=True,
               country=p.country, user_agent="okhttp/4.12.0")
        w.usage(p, t + 2)
        t += interval * rng.uniform(0.996, 1.004)


# -- abuse: refunds ------------------------------------------------------------------------
def _refund_cycles(w: _World, p: Person, cycles: int, *, heavy: float,
                   start: float | None = None) -> int:
    """Purchase, heavy use, refund, ``cycles`` times; return the refunds inside the window."""
    rng = w.rng
    t = start if start is not None else w.start + rng.uniform(0, 1.5) * DAY
    refunds = 0
    for _ in range(cycles):
        amount = rng.choice((29.0, 49.0, 99.0, 199.0))
        order = w.purchase(p, t, amount)
        hold = rng.uniform(3, 60) * HOUR
        for k in range(rng.randint(6, 20)):
            w.usage(p, t + hold * (k + 1) / 22, round(heavy * rng.uniform(0.5, 1.5), 2))
        w.refund(p, t + hold, order, amount, reason=rng.choice(("not as described",
                                                                "did not work for me")))
        refunds += t + hold < w.end
        t += hold + rng.uniform(6, 72) * HOUR
        if t > w.end:
            break
    return refunds


# -- benign look-alikes --------------------------------------------------------------------
def _office(w: _World) -> list[str]:
    rng = w.rng
    country = w.country()
    company = f"{rng.choice(LAST)}{rng.choice(('corp', 'labs', 'group', 'systems'))}.com"
    nat = w.ip(country)
    people = []
    for _ in range(rng.randint(20, 60)):
        p = w.person(country=country, email=w.email(domain=company))
        p.ips = [nat]
        p.activity = rng.uniform(0.6, 0.95)
        if rng.random() < 0.3:
            t = w.start + rng.uniform(0, w.days * 0.8) * DAY
            w.signup(p, t, "paid", ip=nat)
            w.purchase(p, t + 300)
            w.live(p, t + HOUR, ip=nat, mistype=0.06)
        else:
            w.live(p, w.start, ip=nat, mistype=0.06)
        people.append(p.account_id)
    return people


def _family(w: _World) -> list[str]:
    rng = w.rng
    country = w.country()
    last = rng.choice(LAST)
    device, home = w.device(), w.ip(country)
    t = w.start + rng.uniform(0, w.days * 0.7) * DAY
    people = []
    size = rng.randint(2, 3)
    for i in range(size):
        p = w.person(country=country, email=w.email(last=last))
        p.devices, p.ips = [device], [home]
        plan = "paid" if i == 0 and rng.random() < 0.5 else "trial"
        w.signup(p, t + i * rng.uniform(2, 72) * HOUR, plan)
        if plan == "paid" or i == 0:
            w.purchase(p, t + i * 72 * HOUR + rng.uniform(1, 5) * DAY)
        w.live(p, t + i * 72 * HOUR + HOUR)
        people.append(p.account_id)
    return people


def _university(w: _World) -> list[str]:
    rng = w.rng
    country = rng.choice(("US", "GB", "DE", "CA", "AU"))
    school = f"{rng.choice(('state', 'tech', 'city', 'north', 'lake'))}u.edu"
    net = w.ip(country).rsplit(".", 1)[0]
    nats = [f"{net}.{rng.randrange(2, 254)}" for _ in range(3)]
    week = w.start + rng.uniform(0, max(0.5, w.days - 7)) * DAY
    people = []
    for _ in range(rng.randint(30, 100)):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = w.email(first, last, domain=school)
        p = w.person(country=country, email=email, card=rng.random() < 0.3)
        p.ips = [rng.choice(nats), f"{net}.{rng.randrange(2, 254)}"]
        t = week + rng.uniform(0, 7) * DAY
        w.signup(p, t, "trial", ip=p.ips[0])
        if rng.random() < 0.25:
            w.purchase(p, t + rng.uniform(2, 12) * DAY)
        w.live(p, t + HOUR)
        people.append(p.account_id)
    return people


def _traveller(w: _World) -> str:
    rng = w.rng
    p = w.person()
    route = [p.country, *rng.sample([c for c in COUNTRIES if c != p.country], 2)]
    t = w.start + rng.uniform(0, 1) * DAY
    for leg, country in enumerate(route):
        for day in range(rng.randint(2, 4)):
            moment = t + day * DAY + rng.uniform(8, 20) * HOUR
            w.session(p, moment, ip=w.ip(country), device=p.devices[0], country=country)
        t += (day + 1) * DAY + rng.uniform(10, 16) * HOUR  # a flight takes most of a day
        if leg == len(route) - 1 or t > w.end:
            break
    return p.account_id


def _add_label(w: _World, kind: str, detector: str | None, accounts: Iterable[str]) -> None:
    group = {"kind": kind, "accounts": sorted(set(accounts))}
    if detector:
        w.abuse.append({**group, "detector": detector})
    else:
        w.benign.append(group)


def _finish(w: _World, seed: int) -> list[dict[str, Any]]:
    """Order per account, jitter across accounts, re-deliver a few, assign ids and times."""
    rng = w.rng
    events = sorted(w.events, key=lambda e: e["_t"])
    for n, event in enumerate(events):
        event["event_id"] = f"evt_{seed:x}_{n:08x}"
    jittered = sorted(events, key=lambda e: e["_t"] + rng.uniform(0, 120))
    queues: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        queues.setdefault(event["account_id"], []).append(event)
    for account_events in queues.values():
        account_events.reverse()
    stream = [queues[e["account_id"]].pop() for e in jittered]
    duplicates = 0
    for i in sorted(rng.sample(range(len(stream)), len(stream) // 1000), reverse=True):
        stream.insert(min(len(stream), i + rng.randrange(5, 500)), stream[i])
        duplicates += 1
    out = []
    for event in stream:
        out.append({"event_id": event["event_id"], "type": event["type"], "ts": _ts(event["_t"]),
                    "account_id": event["account_id"],
                    **{k: v for k, v in event.items()
                       if k not in ("_t", "event_id", "type", "account_id")}})
    return out, duplicates


def generate(accounts: int, days: int, seed: int,
             start: datetime | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``accounts`` accounts over ``days`` days: ``(events, labels)`` (deterministic)."""
    if accounts < 100 or days < 1:
        raise ValueError("generate needs at least 100 accounts and 1 day")
    rng = random.Random(seed)
    w = _World(rng=rng, start=(start or START).timestamp(), days=days)
    budget = accounts
    scale = accounts / 5000

    def count(n: float) -> int:
        return max(1, round(n * scale))

    # abuse: trial rings
    for variant in ("device_reuse", "email_alias", "numbered_stem", "card_reuse", "disposable",
                    "mixed"):
        ring_accounts = []
        for _ in range(count(4)):
            ring_accounts += _trial_ring(w, variant)
        _add_label(w, variant, "trial_cycling", ring_accounts)
        budget -= len(ring_accounts)
    # abuse: logins (victims of stuffing are ordinary accounts living their lives)
    for variant in ("one_ip", "one_subnet", "one_device"):
        for _ in range(count(1)):
            victims = []
            for _ in range(rng.randint(20, 150 if scale >= 1 else 40)):
                p = w.person()
                w.live(p, w.start)
                victims.append(p)
            _add_label(w, "credential_stuffing", "login_frequency",
                       _credential_stuffing(w, victims, variant))
            budget -= len(victims)
    for kind, action in (("brute_force", _brute_force), ("account_sharing", _account_sharing),
                         ("scripted", _scripted)):
        group = []
        for _ in range(count(10)):
            p = w.person()
            w.live(p, w.start)
            action(w, p)
            group.append(p.account_id)
        _add_label(w, kind, "login_frequency", group)
        budget -= len(group)
    # abuse: refunds
    for kind, cycles, heavy in (("serial_refunder", (3, 6), 60.0),
                                ("consume_then_refund", (2, 2), 150.0)):
        group = []
        for _ in range(count(12)):
            p = w.person()
            w.live(p, w.start)
            budget -= 1
            if _refund_cycles(w, p, rng.randint(*cycles), heavy=heavy) >= 2:
                group.append(p.account_id)  # labelled only when the window shows the cycles
        _add_label(w, kind, "refund_abuse", group)
    ring = []
    for _ in range(count(5)):
        card = w.card()
        refunders = []
        for _ in range(rng.randint(3, 6)):
            p = w.person()
            p.card = card
            t = w.start + rng.uniform(0, w.days * 0.5) * DAY
            w.signup(p, t, rng.choice(("paid", "free")))
            w.live(p, t + HOUR)
            budget -= 1
            if _refund_cycles(w, p, 1, heavy=rng.uniform(60, 150), start=t + rng.uniform(60, 900)):
                refunders.append(p.account_id)
        if len(refunders) >= 2:
            ring += refunders
    _add_label(w, "card_ring", "refund_abuse", ring)
    # benign look-alikes
    for kind, make, n in (("office_nat", _office, 2), ("university", _university, 2),
                          ("family_device", _family, 25)):
        group = []
        for _ in range(count(n)):
            group += make(w)
        _add_label(w, kind, None, group)
        budget -= len(group)
    simple: dict[str, list[str]] = {"converting_trial": [], "power_user": [], "mistyper": [],
                                    "traveller": [], "one_refund": []}
    for _ in range(count(40)):
        simple["converting_trial"].append(_newcomer(w, "trial", converts=True).account_id)
    for _ in range(count(25)):
        p = w.person()
        p.activity, p.intensity = 0.95, rng.uniform(8, 20)
        w.live(p, w.start, scale=p.intensity)
        for week in range(0, w.days, 7):
            w.purchase(p, w.start + (week + rng.uniform(0, 6)) * DAY, 199.0)
        simple["power_user"].append(p.account_id)
    for _ in range(count(30)):
        p = w.person()
        w.live(p, w.start, mistype=0.0)
        for day in rng.sample(range(w.days), min(w.days, rng.randint(1, 3))):
            t = w.local_time(p, day)
            for k in range(rng.randint(2, 4)):
                w.login(p, t + 15 * k, success=False)
            w.session(p, t + 75, mistype=0.0)
        simple["mistyper"].append(p.account_id)
    for _ in range(count(20)):
        simple["traveller"].append(_traveller(w))
    for _ in range(count(30)):
        p = w.person()
        w.live(p, w.start)
        t = w.start + rng.uniform(0, w.days - 0.5) * DAY
        amount = rng.choice((19.0, 49.0))
        order = w.purchase(p, t, amount)
        w.usage(p, t + 600, 1.0)
        w.refund(p, t + rng.uniform(1, 30) * HOUR, order, amount)
        simple["one_refund"].append(p.account_id)
    for kind, group in simple.items():
        _add_label(w, kind, None, group)
        budget -= len(group)
    _normal(w, max(0, budget))
    events, duplicates = _finish(w, seed)
    labels = {
        "generator": {"accounts": accounts, "days": days, "seed": seed,
                      "start": _ts(w.start)},
        "abuse": w.abuse,
        "benign": w.benign,
        "counts": {"events": len(events), "duplicates": duplicates},
    }
    return events, labels


def write_events(events: Iterable[dict[str, Any]], path: str) -> None:
    """JSONL, gzip-compressed when ``path`` ends with ``.gz``; ``-`` for stdout."""
    data = b"".join(orjson.dumps(event) + b"\n" for event in events)
    if path == "-":
        sys.stdout.buffer.write(data)
    elif path.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=5) as file:
            file.write(data)
    else:
        with open(path, "wb") as file:
            file.write(data)


def write_labels(labels: dict[str, Any], path: str) -> None:
    with open(path, "wb") as file:
        file.write(orjson.dumps(labels, option=orjson.OPT_INDENT_2))
