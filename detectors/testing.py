"""Helpers to drive detectors in tests and docstrings: events with defaults, a tiny runner.

>>> obs = make_observation("login", account_id="a1", t=60.0, success=False)
>>> obs.event.ts.isoformat(), obs.event.success
('2026-11-01T00:01:00+00:00', False)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.base import Detector, Observation, Verdict, new_profile, step, update_profile
from schemas.events import Login, Purchase, Refund, Signup, Usage

__all__ = ["EPOCH", "make_event", "make_observation", "run"]

EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
_ids = itertools.count()
_TYPES = {"signup": Signup, "login": Login, "usage": Usage, "purchase": Purchase, "refund": Refund}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "signup": {"email": "someone@example.com", "ip": "192.0.2.1", "device_id": "d-0",
               "card_fingerprint": None, "plan": "trial", "country": "US"},
    "login": {"ip": "192.0.2.1", "device_id": "d-0", "success": True, "country": "US"},
    "usage": {"feature": "export", "units": 1.0},
    "purchase": {"order_id": None, "amount": 20.0, "currency": "USD"},
    "refund": {"order_id": "o-0", "amount": 20.0, "currency": "USD"},
}


def make_event(kind: str, *, account_id: str = "a0", t: float = 0.0, **fields: Any):
    """An event of ``kind`` at ``t`` seconds after 2026-11-01T00:00Z, defaults filled in."""
    values = {**_DEFAULTS[kind], **fields}
    if kind == "purchase" and values["order_id"] is None:
        values["order_id"] = f"o-{next(_ids)}"
    event_id = values.pop("event_id", None) or f"e-{next(_ids)}"
    ts = EPOCH + timedelta(seconds=t)
    return _TYPES[kind](event_id=event_id, ts=ts, account_id=account_id, **values)


def make_observation(kind: str, *, account_id: str = "a0", t: float = 0.0, **fields: Any):
    """An :class:`Observation` of a fresh account (use :func:`run` for account context)."""
    event = make_event(kind, account_id=account_id, t=t, **fields)
    return Observation(event=event, t=t, seq=0, profile=new_profile(t))


def run(detector: Detector, observations: Iterable[Observation]) -> Iterator[tuple[str, Verdict]]:
    """Feed observations in order, keeping account profiles; yield ``(account, verdict)``."""
    states: dict[str, Any] = {}
    profiles: dict[str, Any] = {}
    for seq, obs in enumerate(observations):
        profile = profiles.setdefault(obs.account_id, new_profile(obs.t))
        obs = Observation(event=obs.event, t=obs.t, seq=seq, profile=profile)
        verdict = step(detector, states, obs)
        update_profile(profile, obs.event, obs.t)
        if verdict is not None:
            yield obs.account_id, verdict
