"""Allow-lists: accounts and attributes that are never flagged, whatever a detector says.

An allow-list always wins: a flag for an allow-listed account is suppressed (and counted),
and allow-listed accounts are removed from other flags' related accounts.

>>> allow = Allowlist(accounts={"a1"}, email_domains={"partner.example"})
>>> allow.reason("a1", None)
'account a1 is allow-listed'
>>> allow.reason("a2", None) is None
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from detectors.base import AccountProfile
from detectors.linking import email_domain
from schemas.events import Event

__all__ = ["Allowlist"]


@dataclass(frozen=True)
class Allowlist:
    accounts: frozenset[str] = field(default_factory=frozenset)
    email_domains: frozenset[str] = field(default_factory=frozenset)
    devices: frozenset[str] = field(default_factory=frozenset)
    cards: frozenset[str] = field(default_factory=frozenset)
    ips: frozenset[str] = field(default_factory=frozenset)

    def __init__(self, *, accounts: Iterable[str] = (), email_domains: Iterable[str] = (),
                 devices: Iterable[str] = (), cards: Iterable[str] = (),
                 ips: Iterable[str] = ()) -> None:
        object.__setattr__(self, "accounts", frozenset(accounts))
        object.__setattr__(self, "email_domains", frozenset(d.lower() for d in email_domains))
        object.__setattr__(self, "devices", frozenset(devices))
        object.__setattr__(self, "cards", frozenset(cards))
        object.__setattr__(self, "ips", frozenset(ips))

    @classmethod
    def from_file(cls, path: str | Path) -> Allowlist:
        """Read ``{"accounts": [...], "email_domains": [...], "devices": [...], ...}``."""
        try:
            data = msgspec.json.decode(Path(path).read_bytes(), type=dict[str, list[str]])
        except (OSError, msgspec.DecodeError) as error:
            raise ValueError(f"cannot read allow-list {path}: {error}") from error
        unknown = set(data) - {"accounts", "email_domains", "devices", "cards", "ips"}
        if unknown:
            raise ValueError(f"allow-list {path}: unknown section(s) {sorted(unknown)}")
        return cls(**data)

    def __bool__(self) -> bool:
        return any((self.accounts, self.email_domains, self.devices, self.cards, self.ips))

    def reason(self, account_id: str, profile: AccountProfile | None,
               event: Event | None = None) -> str | None:
        """Why ``account_id`` is allow-listed, or ``None``.

        Looks at the account id, its profile (signup email, device, card, IP) and, for the
        account whose event triggered the flag, that event's own attributes.
        """
        if account_id in self.accounts:
            return f"account {account_id} is allow-listed"
        return self._attributes_reason(profile, event)

    def event_reason(self, event: Event) -> str | None:
        """Why the attributes of ``event`` (email, device, card, IP) are allow-listed."""
        return self._attributes_reason(None, event)

    def _attributes_reason(self, profile: AccountProfile | None,
                           event: Event | None) -> str | None:
        emails, devices, cards, ips = [], [], [], []
        if profile is not None:
            emails.append(profile.email)
            devices.append(profile.device_id)
            cards.append(profile.card)
            ips.append(profile.signup_ip)
        if event is not None:
            emails.append(getattr(event, "email", None))
            devices.append(getattr(event, "device_id", None))
            cards.append(getattr(event, "card_fingerprint", None))
            ips.append(getattr(event, "ip", None))
        for email in filter(None, emails):
            if email_domain(email) in self.email_domains:
                return f"email domain {email_domain(email)} is allow-listed"
        for kind, values, allowed in (("device", devices, self.devices),
                                      ("card", cards, self.cards), ("IP", ips, self.ips)):
            for value in filter(None, values):
                if value in allowed:
                    return f"{kind} {value} is allow-listed"
        return None
