"""Event types of the contract, decoded and validated in one pass by msgspec.

The decoder is the only place that knows the wire format. It returns either an event or a
human-readable reason naming the field and what was wrong, for the dead-letter output.

>>> event, reason = decode_event(b'{"type": "usage", "event_id": "e1", '
...     b'"ts": "2026-11-01T08:15:30.123Z", "account_id": "a1", "feature": "export", "units": 2}')
>>> (event.kind, event.units, reason)
('usage', 2.0, None)
>>> decode_event(b'{"type": "usage", "event_id": "e1", "ts": "2026-11-01T08:15:30", '
...     b'"account_id": "a1", "feature": "export", "units": 2}')[1]
'Expected `datetime` with a timezone component - at `$.ts`'
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

__all__ = [
    "DECODE_ERRORS",
    "EVENT_TYPES",
    "Event",
    "Login",
    "Purchase",
    "Refund",
    "Signup",
    "Usage",
    "decode_event",
    "decode_event_or_raise",
    "encode_event",
]

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Timestamp = Annotated[datetime, msgspec.Meta(tz=True)]
Currency = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
Country = Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")]
PositiveAmount = Annotated[float, msgspec.Meta(gt=0)]


class _Event(msgspec.Struct, tag_field="type", frozen=True, kw_only=True):
    """Fields common to every event; ``type`` is the msgspec tag."""

    kind: ClassVar[str]  # the contract's ``type`` value; a class attribute, read on the hot path
    event_id: NonEmpty
    ts: Timestamp
    account_id: NonEmpty


class Signup(_Event, tag="signup", frozen=True, kw_only=True):
    kind: ClassVar[str] = "signup"
    email: NonEmpty
    ip: NonEmpty
    device_id: NonEmpty
    card_fingerprint: str | None
    plan: Literal["trial", "free", "paid"]
    country: Country | None = None


class Login(_Event, tag="login", frozen=True, kw_only=True):
    kind: ClassVar[str] = "login"
    ip: NonEmpty
    device_id: NonEmpty
    success: bool
    country: Country | None = None
    user_agent: str | None = None


class Usage(_Event, tag="usage", frozen=True, kw_only=True):
    kind: ClassVar[str] = "usage"
    feature: NonEmpty
    units: Annotated[float, msgspec.Meta(ge=0)]


class Purchase(_Event, tag="purchase", frozen=True, kw_only=True):
    kind: ClassVar[str] = "purchase"
    order_id: NonEmpty
    amount: PositiveAmount
    currency: Currency


class Refund(_Event, tag="refund", frozen=True, kw_only=True):
    kind: ClassVar[str] = "refund"
    order_id: NonEmpty
    amount: PositiveAmount
    currency: Currency
    reason: str | None = None


Event = Signup | Login | Usage | Purchase | Refund
EVENT_TYPES = ("signup", "login", "usage", "purchase", "refund")

_decoder = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


#: Decode and validate one event, raising one of ``DECODE_ERRORS`` for an invalid one (the hot
#: path's form: :func:`decode_event` then gives the same input's reason).
decode_event_or_raise = _decoder.decode
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError)  # ValidationError is a DecodeError


def decode_event(raw: bytes | str) -> tuple[Event | None, str | None]:
    """Decode and validate one event; return ``(event, None)`` or ``(None, reason)``."""
    try:
        return _decoder.decode(raw), None
    except msgspec.ValidationError as error:
        return None, str(error)
    except msgspec.DecodeError as error:
        # msgspec >= 0.19 reports bad bytes inside a string as a DecodeError
        kind = "UTF-8" if "UTF-8" in str(error) else "JSON"
        return None, f"not valid {kind}: {error}"
    except UnicodeDecodeError as error:  # older msgspec raises it for bad bytes in a string
        return None, f"not valid UTF-8: {error}"


def encode_event(event: Event) -> bytes:
    """Encode an event back to its contract JSON (``type`` included)."""
    return _encoder.encode(event)
