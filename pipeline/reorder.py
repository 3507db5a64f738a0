"""A bounded reorder buffer: releases events in event-time order behind a watermark.

Events of different accounts arrive up to a few minutes out of order. The buffer holds each
event until the watermark (the largest time seen minus the allowed lateness) passes it, then
releases in ``(t, account, seq)`` order. An event older than what was already released is late:
it is released at once (never dropped) and counted.

>>> buffer = ReorderBuffer(lateness=60.0)
>>> [item for t, item in [(100.0, "b"), (90.0, "a"), (200.0, "c")]
...  for item in buffer.push(t, "acct", int(t), item)]
['a', 'b']
>>> list(buffer.flush())
['c']
>>> list(buffer.push(10.0, "acct", 10, "late")), buffer.late
(['late'], 1)
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

__all__ = ["ReorderBuffer"]


class ReorderBuffer:
    """Release items in event-time order once ``lateness`` seconds of newer time was seen."""

    def __init__(self, lateness: float = 300.0) -> None:
        if lateness < 0:
            raise ValueError(f"lateness must be >= 0, got {lateness!r}")
        self.lateness = lateness
        self.late = 0
        self.max_t = float("-inf")
        self.released_t = float("-inf")
        self._heap: list[tuple[float, str, int, Any]] = []

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def watermark(self) -> float:
        return self.max_t - self.lateness

    def push(self, t: float, account: str, seq: int, item: Any) -> Iterator[Any]:
        """Add one item; yield whatever the advanced watermark releases."""
        if t < self.released_t:
            self.late += 1
            yield item
            return
        heapq.heappush(self._heap, (t, account, seq, item))
        if t > self.max_t:
            self.max_t = t
        watermark = self.max_t - self.lateness
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            entry = heapq.heappop(heap)
            self.released_t = entry[0]
            yield entry[3]

    def flush(self) -> Iterator[Any]:
        """Release everything still held (end of input, or an idle stream)."""
        while self._heap:
            entry = heapq.heappop(self._heap)
            self.released_t = entry[0]
            yield entry[3]
