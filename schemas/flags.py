"""The flag record of the contract, and the dead-letter record.

>>> flag = Flag(flag_id="f1", account_id="a1", detector="login_frequency", score=0.9,
...     severity="high", ts="2026-11-01T08:15:30.123Z", detected_at="2026-11-01T08:15:31.000Z",
...     reasons=["12 failed logins in 10 min"], evidence={"failures": 12}, related_accounts=[])
>>> encode_flag(flag)[:40]
b'{"flag_id":"f1","account_id":"a1","detec'
>>> decode_flag(encode_flag(flag)) == flag
True
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["SEVERITIES", "SEVERITY_RANK", "DeadLetter", "Flag", "decode_flag", "encode_flag",
           "severity_of"]

Severity = Literal["low", "medium", "high"]
SEVERITIES: tuple[str, ...] = ("low", "medium", "high")
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


class Flag(msgspec.Struct, kw_only=True):
    """One flag: the contract's fields, plus ``mode`` (``enforce`` or ``shadow``)."""

    flag_id: str
    account_id: str
    detector: str
    score: float
    severity: Severity
    ts: str
    detected_at: str
    reasons: list[str]
    evidence: dict[str, Any]
    related_accounts: list[str]
    mode: Literal["enforce", "shadow"] = "enforce"


class DeadLetter(msgspec.Struct, kw_only=True):
    """An input the contract rejects: the raw bytes (as text), where it came from, and why."""

    source: str
    reason: str
    raw: str
    received_at: str


_flag_decoder = msgspec.json.Decoder(Flag)
_encoder = msgspec.json.Encoder()


def encode_flag(flag: Flag) -> bytes:
    return _encoder.encode(flag)


def decode_flag(raw: bytes | str) -> Flag:
    return _flag_decoder.decode(raw)


def severity_of(score: float, *, medium: float = 0.8, high: float = 0.93) -> Severity:
    """Map a score in [0, 1] to a severity band."""
    if score >= high:
        return "high"
    if score >= medium:
        return "medium"
    return "low"
