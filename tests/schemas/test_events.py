"""Decoding: valid events of every type, and a clear reason for every kind of invalid one."""

import json

import pytest

from schemas import decode_event, encode_event

BASE = {"event_id": "e1", "ts": "2026-11-01T08:15:30.123Z", "account_id": "a1"}
VALID = {
    "signup": {"email": "a@b.com", "ip": "192.0.2.1", "device_id": "d1",
               "card_fingerprint": None, "plan": "trial", "country": "DE"},
    "login": {"ip": "192.0.2.1", "device_id": "d1", "success": False},
    "usage": {"feature": "export", "units": 0},
    "purchase": {"order_id": "o1", "amount": 9.5, "currency": "EUR"},
    "refund": {"order_id": "o1", "amount": 9.5, "currency": "EUR", "reason": "n/a"},
}


def encoded(kind, **changes):
    body = {"type": kind, **BASE, **VALID[kind], **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize("kind", sorted(VALID))
def test_every_valid_type_decodes_and_round_trips(kind):
    event, reason = decode_event(encoded(kind, extra_field={"kept": True}))
    assert reason is None
    assert event.kind == kind and event.account_id == "a1"
    again, _ = decode_event(encode_event(event))
    assert again == event


def test_any_offset_is_accepted_and_normalised():
    event, _ = decode_event(encoded("usage", ts="2026-11-01T10:15:30+02:00"))
    assert event.ts.timestamp() == decode_event(encoded("usage", ts="2026-11-01T08:15:30Z"))[
        0].ts.timestamp()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        (b'{"type": "usage", "account_id": "a1\xff\xfe"}', "not valid UTF-8"),
        (b"[1, 2]", "Expected `object`, got `array`"),
        (encoded("usage", type="teleport"), "Invalid value 'teleport' - at `$.type`"),
        (json.dumps({**BASE, "feature": "x", "units": 1}).encode(),
         "missing required field `type`"),
        (encoded("usage", units=...), "missing required field `units`"),
        (encoded("usage", units="3"), "Expected `float`, got `str` - at `$.units`"),
        (encoded("usage", units=-1), "Expected `float` >= 0.0 - at `$.units`"),
        (encoded("purchase", amount=0), "Expected `float` > 0.0 - at `$.amount`"),
        (encoded("purchase", currency="euro"), "at `$.currency`"),
        (encoded("signup", plan="gold"), "at `$.plan`"),
        (encoded("signup", country="Germany"), "at `$.country`"),
        (encoded("signup", card_fingerprint=7), "at `$.card_fingerprint`"),
        (encoded("login", success="yes"), "Expected `bool`, got `str` - at `$.success`"),
        (encoded("login", ts="2026-11-01T08:15:30"), "timezone component - at `$.ts`"),
        (encoded("login", ts="yesterday"), "at `$.ts`"),
        (encoded("login", account_id=""), "at `$.account_id`"),
        (encoded("login", event_id=12), "Expected `str`, got `int` - at `$.event_id`"),
        (encoded("refund", order_id=...), "missing required field `order_id`"),
    ],
)
def test_invalid_events_get_a_reason_naming_the_problem(raw, expected):
    event, reason = decode_event(raw)
    assert event is None
    assert expected in reason
