"""Telling automated HTTP clients from browsers and apps by their user agent.

The patterns are the community-maintained list of bots, crawlers and HTTP libraries
(``crawler-user-agents``); a login from one of them is a script, whoever runs it.

>>> is_automated("python-requests/2.32.3"), is_automated("Go-http-client/2.0")
(True, True)
>>> is_automated("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
...              "HeadlessChrome/131.0.0.0 Safari/537.36")
True
>>> is_automated("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
...              "Gecko) Chrome/131.0.0.0 Safari/537.36")
False
>>> is_automated("SaaSApp/4.12.0 (Android 14; Pixel 7)"), is_automated(None)
(False, False)
"""

from __future__ import annotations

from functools import lru_cache

from crawleruseragents import is_crawler

__all__ = ["is_automated"]


@lru_cache(maxsize=8192)  # a service sees few distinct agents; the pattern list is long
def is_automated(user_agent: str | None) -> bool:
    """Whether ``user_agent`` names a script, bot or headless browser (``None``: unknown)."""
    return bool(user_agent) and is_crawler(user_agent)
