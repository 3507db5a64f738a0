"""The synthetic traffic generator: determinism, the event contract, stream order, labels."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime

import orjson
import pytest

from pipeline.generate import generate, write_events, write_labels

TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ACCOUNT = re.compile(r"^acct_[0-9a-f]{10}$")
COUNTRY = re.compile(r"^[A-Z]{2}$")
COMMON = {"event_id", "type", "ts", "account_id"}
FIELDS = {
    "signup": {"email", "ip", "device_id", "card_fingerprint", "plan", "country"},
    "login": {"ip", "device_id", "success"},
    "usage": {"feature", "units"},
    "purchase": {"order_id", "amount", "currency"},
    "refund": {"order_id", "amount", "currency"},
}
OPTIONAL = {"login": {"country", "user_agent"}, "refund": {"reason"}}
ABUSE = {
    "device_reuse": "trial_cycling", "email_alias": "trial_cycling",
    "numbered_stem": "trial_cycling", "card_reuse": "trial_cycling",
    "disposable": "trial_cycling", "mixed": "trial_cycling",
    "credential_stuffing": "login_frequency", "brute_force": "login_frequency",
    "account_sharing": "login_frequency", "scripted": "login_frequency",
    "serial_refunder": "refund_abuse", "consume_then_refund": "refund_abuse",
    "card_ring": "refund_abuse",
}
BENIGN = {"office_nat", "family_device", "converting_trial", "power_user", "mistyper",
          "traveller", "one_refund", "university", "gave_up"}


def seconds(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def first_deliveries(events):
    seen: set[str] = set()
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            yield event


def by_account(events):
    accounts = defaultdict(list)
    for event in first_deliveries(events):
        accounts[event["account_id"]].append(event)
    return accounts


@pytest.fixture(scope="module")
def day():
    return generate(accounts=300, days=1, seed=7)


@pytest.fixture(scope="module")
def week():
    return generate(accounts=1500, days=7, seed=3)


def test_same_seed_same_stream_and_labels_other_seed_differs():
    events, labels = generate(accounts=300, days=1, seed=11)
    again, labels_again = generate(accounts=300, days=1, seed=11)
    assert events == again and labels == labels_again
    other, other_labels = generate(accounts=300, days=1, seed=12)
    assert other != events and other_labels["abuse"] != labels["abuse"]


def test_every_event_keeps_the_contract(day):
    events, _ = day
    assert len(events) > 1000
    for event in events:
        kind = event["type"]
        assert kind in FIELDS, event
        assert COMMON | FIELDS[kind] <= set(event) <= COMMON | FIELDS[kind] | OPTIONAL.get(
            kind, set()), event
        assert isinstance(event["event_id"], str) and event["event_id"]
        assert ACCOUNT.match(event["account_id"]), event
        assert TS.match(event["ts"]), event
        assert seconds(event["ts"]) >= seconds("2026-11-01T00:00:00.000Z")
        assert seconds(event["ts"]) < seconds("2026-11-02T00:00:00.000Z")
        if kind == "signup":
            assert event["plan"] in ("trial", "free", "paid")
            assert event["card_fingerprint"] is None or isinstance(event["card_fingerprint"], str)
            assert COUNTRY.match(event["country"])
            assert re.match(r"^[^@\s]+@[a-z0-9.-]+\.[a-z]{2,}$", event["email"]), event
            assert all(isinstance(event[k], str) and event[k] for k in ("ip", "device_id"))
        elif kind == "login":
            assert isinstance(event["success"], bool)
            assert re.match(r"^\d{1,3}(\.\d{1,3}){3}$", event["ip"])
            assert all(0 <= int(part) <= 255 for part in event["ip"].split("."))
            assert isinstance(event["device_id"], str) and event["device_id"]
            assert "country" not in event or COUNTRY.match(event["country"])
            assert "user_agent" not in event or isinstance(event["user_agent"], str)
        elif kind == "usage":
            assert isinstance(event["feature"], str) and event["feature"]
            units = event["units"]
            assert isinstance(units, int | float) and not isinstance(units, bool)
            assert units >= 0
        else:
            assert isinstance(event["order_id"], str) and event["order_id"]
            amount = event["amount"]
            assert isinstance(amount, int | float) and not isinstance(amount, bool)
            assert amount > 0
            assert event["currency"] in ("USD", "EUR", "GBP")
            assert "reason" not in event or isinstance(event["reason"], str)


def test_every_type_appears_and_ids_are_unique_apart_from_redeliveries(day):
    events, labels = day
    assert {e["type"] for e in events} == set(FIELDS)
    ids = Counter(e["event_id"] for e in events)
    assert max(ids.values()) <= 2
    assert sum(n - 1 for n in ids.values()) == labels["counts"]["duplicates"]
    assert labels["counts"]["events"] == len(events)
    orders = Counter(e["order_id"] for e in first_deliveries(events) if e["type"] == "purchase")
    assert max(orders.values()) == 1


def test_each_account_is_in_timestamp_order(week):
    events, _ = week
    for account, own in by_account(events).items():
        times = [seconds(e["ts"]) for e in own]
        assert times == sorted(times), account
        kinds = [e["type"] for e in own]
        assert kinds.count("signup") <= 1
        if "signup" in kinds:
            assert kinds[0] == "signup", account


def test_across_accounts_events_are_out_of_order_by_at_most_two_minutes(week):
    events, _ = week
    latest, worst, shuffled = 0.0, 0.0, 0
    for event in first_deliveries(events):
        t = seconds(event["ts"])
        if t < latest:
            shuffled += 1
            worst = max(worst, latest - t)
        latest = max(latest, t)
    assert shuffled > len(events) // 10  # really jittered, not just sorted
    assert worst <= 120.0
    latest = worst = 0.0
    for event in events:  # a re-delivery comes at most a minute later
        t = seconds(event["ts"])
        worst = max(worst, latest - t)
        latest = max(latest, t)
    assert worst <= 180.0


def test_redeliveries_are_exact_copies_a_little_later(week):
    events, labels = week
    position: dict[str, int] = {}
    copies = 0
    for i, event in enumerate(events):
        if event["event_id"] in position:
            original = events[position[event["event_id"]]]
            assert event == original
            assert seconds(event["ts"]) == seconds(original["ts"])
            copies += 1
        else:
            position[event["event_id"]] = i
    assert copies == labels["counts"]["duplicates"]
    assert 0.0005 * len(events) <= copies <= 0.002 * len(events)


def test_labels_have_the_agreed_shape(week):
    _, labels = week
    assert set(labels) == {"generator", "abuse", "benign", "counts"}
    assert labels["generator"] == {"accounts": 1500, "days": 7, "seed": 3,
                                   "start": "2026-11-01T00:00:00.000Z"}
    assert set(labels["counts"]) == {"events", "duplicates"}
    for group in labels["abuse"]:
        assert set(group) == {"kind", "detector", "accounts"}
    for group in labels["benign"]:
        assert set(group) == {"kind", "accounts"}
    json.dumps(labels)


def test_every_scenario_is_labelled_with_its_detector_and_groups_are_disjoint(week):
    events, labels = week
    kinds = {g["kind"]: g["detector"] for g in labels["abuse"]}
    assert kinds == ABUSE
    assert {g["kind"] for g in labels["benign"]} == BENIGN
    present = {e["account_id"] for e in events}
    everyone: list[str] = []
    for group in labels["abuse"] + labels["benign"]:
        assert group["accounts"], group["kind"]
        assert set(group["accounts"]) <= present, group["kind"]
        everyone += group["accounts"]
    assert len(everyone) == len(set(everyone))
    assert len(present) <= 1500


def test_abuse_is_a_small_share_spread_over_countries_and_agents():
    events, labels = generate(accounts=5000, days=3, seed=5)
    abusive = {a for g in labels["abuse"] for a in g["accounts"]}
    assert 0.03 <= len(abusive) / 5000 <= 0.08
    countries, agents = Counter(), Counter()
    for event in events:
        if event["account_id"] in abusive and event["type"] == "login":
            countries[event.get("country")] += 1
            agents[event.get("user_agent")] += 1
    assert len(countries) >= 5 and len(agents) >= 5
    accounts = by_account(events)
    signups = [own[0] for own in accounts.values() if own[0]["type"] == "signup"]
    assert 0.2 <= len(signups) / len(accounts) <= 0.45  # most accounts predate the stream
    plans = Counter(e["plan"] for e in signups if e["account_id"] not in abusive)
    assert plans["trial"] > plans["free"] > plans["paid"] > 0


def test_trial_rings_link_their_members_and_never_convert(week):
    events, labels = week
    accounts = by_account(events)

    def signup(account):
        own = accounts[account]
        assert own[0]["type"] == "signup"
        return own[0]

    for group in labels["abuse"]:
        if group["detector"] != "trial_cycling":
            continue
        members = [signup(a) for a in group["accounts"]]
        assert 3 <= len(members) <= 9
        assert all(e["plan"] in ("trial", "free") for e in members)
        assert not any(e["type"] == "purchase" for a in group["accounts"] for e in accounts[a])
        if group["kind"] == "device_reuse":
            assert len({e["device_id"] for e in members}) == 1
            assert len({e["email"] for e in members}) == len(members)
        elif group["kind"] == "card_reuse":
            assert len({e["card_fingerprint"] for e in members}) == 1
            assert len({e["device_id"] for e in members}) == len(members)
        elif group["kind"] == "email_alias":
            boxes = {e["email"].split("@")[0].split("+")[0].replace(".", "") for e in members}
            assert len(boxes) == 1 and all(e["email"].endswith("@gmail.com") for e in members)
        elif group["kind"] == "numbered_stem":
            assert len({e["ip"].rsplit(".", 1)[0] for e in members}) == 1
            assert all(re.search(r"\d+@", e["email"]) for e in members)
        elif group["kind"] == "disposable":
            assert len({e["ip"].rsplit(".", 1)[0] for e in members}) == 1


def test_refund_rings_share_a_card_and_refunders_refund(week):
    events, labels = week
    accounts = by_account(events)
    for group in labels["abuse"]:
        if group["kind"] == "card_ring":
            cards = {accounts[a][0].get("card_fingerprint") for a in group["accounts"]}
            assert len(cards) == 1 and None not in cards
        if group["detector"] == "refund_abuse":
            for account in group["accounts"]:
                kinds = Counter(e["type"] for e in accounts[account])
                assert kinds["refund"] >= (2 if group["kind"] != "card_ring" else 1)


def test_benign_look_alikes_have_their_shape(week):
    events, labels = week
    accounts = by_account(events)
    for group in labels["benign"]:
        own = [e for a in group["accounts"] for e in accounts[a]]
        if group["kind"] == "office_nat":
            assert len(group["accounts"]) >= 15
            ips = Counter(e["ip"] for e in own if e["type"] == "login")
            assert len(ips) == 1
        elif group["kind"] == "university":
            signups = [e for e in own if e["type"] == "signup"]
            assert all(e["email"].endswith(".edu") for e in signups)
            assert len({e["device_id"] for e in signups}) == len(signups)
            assert len({e["email"] for e in signups}) == len(signups)
        elif group["kind"] == "family_device":
            signups = [e for e in own if e["type"] == "signup"]
            assert len({e["device_id"] for e in signups}) == 1
            assert any(e["type"] == "purchase" for e in own)
        elif group["kind"] in ("power_user", "converting_trial"):
            assert not any(e["type"] == "refund" for e in own)
        elif group["kind"] == "gave_up":  # failed on a device never used to get in
            for account in group["accounts"]:
                logins = [e for e in accounts[account] if e["type"] == "login"]
                good = {e["device_id"] for e in logins if e["success"]}
                assert any(not e["success"] and e["device_id"] not in good for e in logins)


def test_the_rotating_stuffing_attack_shares_no_ip_device_or_subnet(week):
    events, labels = week
    accounts = by_account(events)
    rotating = [g for g in labels["abuse"] if g["kind"] == "credential_stuffing"][-1]
    attempts = []
    for account in rotating["accounts"]:
        logins = [e for e in accounts[account] if e["type"] == "login"]
        own = {e["device_id"] for e in logins if e["success"]}  # the owner's (and mistypes)
        attempts += [e for e in logins if not e["success"] and e["device_id"] not in own]
    assert len(rotating["accounts"]) >= 20 and len(attempts) >= len(rotating["accounts"]) / 2
    assert max(Counter(e["device_id"] for e in attempts).values()) == 1
    # no /24 tried two accounts (chance collisions of residential ranges aside)
    subnets = Counter(net for net in {(e["account_id"], e["ip"].rsplit(".", 1)[0])
                                      for e in attempts})
    assert sum(n > 1 for n in Counter(net for _, net in subnets).values()) <= 1


def test_start_moves_the_window_and_a_naive_start_is_utc():
    aware, labels = generate(accounts=200, days=1, seed=4,
                             start=datetime(2027, 3, 1, 12, tzinfo=UTC))
    naive, _ = generate(accounts=200, days=1, seed=4, start=datetime(2027, 3, 1, 12))
    assert aware == naive
    assert labels["generator"]["start"] == "2027-03-01T12:00:00.000Z"
    times = [seconds(e["ts"]) for e in aware]
    assert min(times) >= datetime(2027, 3, 1, 12, tzinfo=UTC).timestamp()
    assert max(times) < datetime(2027, 3, 2, 12, tzinfo=UTC).timestamp()


def test_too_few_accounts_is_a_clear_error():
    with pytest.raises(ValueError, match="at least"):
        generate(accounts=50, days=1, seed=1)


def test_write_events_plain_gzip_and_labels(tmp_path, day):
    events, labels = day
    plain, packed = tmp_path / "e.jsonl", tmp_path / "e.jsonl.gz"
    write_events(events, str(plain))
    write_events(events, packed)  # a path object works too
    lines = plain.read_bytes().splitlines()
    assert [orjson.loads(line) for line in lines] == events
    assert gzip.decompress(packed.read_bytes()) == plain.read_bytes()
    write_labels(labels, str(tmp_path / "labels.json"))
    assert json.loads((tmp_path / "labels.json").read_text()) == labels


def test_write_events_to_stdout(capsysbinary):
    events = [{"event_id": "e1", "type": "usage", "ts": "2026-11-01T00:00:00.000Z",
               "account_id": "acct_0123456789", "feature": "export", "units": 1.0}]
    write_events(events, "-")
    assert capsysbinary.readouterr().out == orjson.dumps(events[0]) + b"\n"
