"""The faust-streaming app that detection runs in (wiring only; see :mod:`pipeline.worker`).

One app per detection lane: its id is the lane's consumer group, its one agent receives the
sequenced topic's chunks.

faust 0.15 builds its aiokafka consumer with a hard-coded ``fetch_max_wait_ms=1500``: live, a
chunk waited 1.34 s (median) between its append and the agent. A consumer built with 100 ms
(through a transport subclass) brought that to 0.016 s, but seeking the consumer then
crashed faust's fetcher in 2 of 5 runs (a ``KeyError`` on the partition in aiokafka's
``fetched_records``), so the app stays faust's own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import faust

__all__ = ["detection_app"]


def detection_app(app_id: str, topic: str, receive: Callable[[Any], Awaitable[None]], *,
                  loop: Any, **settings: Any) -> faust.App:
    """The app of one lane: ``receive`` gets each chunk of ``topic`` as a faust event, not
    acked (the caller acks what its checkpoints cover)."""
    app = faust.App(app_id, loop=loop, autodiscover=False, store="memory://",
                    web_enabled=False, **settings)
    channel = app.topic(topic, value_serializer="raw", key_serializer="raw", partitions=1)

    async def detect(stream: Any) -> None:
        async for event in stream.noack().events():
            await receive(event)

    app.agent(channel, name=f"{app_id}.detect")(detect)
    return app
