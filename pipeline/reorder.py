"""A bounded reorder buffer: releases events in event-time order behind a watermark.

Events of different accounts arrive up to a few minutes out of order. The buffer holds each
event until the watermark passes it, then releases in ``(t, account, event_id)`` order: a total
order that depends only on the events, never on how they were interleaved on arrival, so
offline replay and the streaming worker (whatever its partitioning) process the same sequence.
An event older than what was already released is late: it is released at once (never dropped)
and counted.

Offline replay uses :meth:`ReorderBuffer.push` (the watermark is the largest time seen minus the
allowed lateness); the streaming worker uses :meth:`ReorderBuffer.hold` and
:meth:`ReorderBuffer.release` with a watermark taken over all source partitions.

>>> buffer = ReorderBuffer(lateness=60.0)
>>> [item for t, item in [(100.0, "b"), (90.0, "a"), (200.0, "c")]
...  for item in buffer.push(t, "acct", item, item)]
['a', 'b']
>>> list(buffer.flush())
['c']
>>> list(buffer.push(10.0, "acct", "e9", "late")), buffer.late
(['late'], 1)
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["ReorderBuffer"]


class ReorderBuffer:
    """Release items in ``(t, account, event_id)`` order once the watermark passes them."""

    def __init__(self, lateness: float = 300.0) -> None:
        if lateness < 0:
            raise ValueError(f"lateness must be >= 0, got {lateness!r}")
        self.lateness = lateness
        self.late = 0
        self.max_t = float("-inf")
        self.released_t = float("-inf")
        self._heap: list[tuple[float, str, str, int, Any]] = []
        # breaks ties between exact re-deliveries (same t, account and id) without comparing
        # the items; which copy goes first does not matter, the engine drops the second
        self._arrivals = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    @property
    def oldest_t(self) -> float:
        """The time of the next item to release (``inf`` when empty)."""
        return self._heap[0][0] if self._heap else float("inf")

    @property
    def watermark(self) -> float:
        return self.max_t - self.lateness

    def hold(self, t: float, account: str, event_id: str, item: Any) -> Any | None:
        """Keep an item until :meth:`release`; a late item is returned to process at once."""
        if t < self.released_t:
            self.late += 1
            return item
        heapq.heappush(self._heap, (t, account, event_id, next(self._arrivals), item))
        if t > self.max_t:
            self.max_t = t
        return None

    def release(self, watermark: float) -> Iterator[Any]:
        """Yield, in order, every held item at or before ``watermark``."""
        heap = self._heap
        while heap and heap[0][0] <= watermark:
            entry = heapq.heappop(heap)
            self.released_t = entry[0]
            yield entry[4]

    def push(self, t: float, account: str, event_id: str, item: Any) -> Iterator[Any]:
        """Add one item; yield whatever the advanced watermark (max seen - lateness) releases."""
        for entry in self.order([(t, account, event_id, item)]):
            yield entry[4]

    def order(self, entries: Iterable[tuple[float, str, str, Any]]) -> Iterator[tuple]:
        """:meth:`push` over many ``(t, account, event_id, item)`` at once (replay's hot path).

        Yields ``(t, account, event_id, arrival, item)`` in exactly the order, and leaves the
        same state (``late`` included), as pushing each entry in turn; :meth:`flush` after.
        """
        heap, heappush, heappop = self._heap, heapq.heappush, heapq.heappop
        arrivals = self._arrivals
        lateness = self.lateness
        max_t = self.max_t
        released_t = self.released_t
        watermark = max_t - lateness
        for t, account, event_id, item in entries:
            if t < released_t:
                self.late += 1
                yield (t, account, event_id, -1, item)
                continue
            heappush(heap, (t, account, event_id, next(arrivals), item))
            if t > max_t:
                max_t = self.max_t = t
                watermark = max_t - lateness
            while heap and heap[0][0] <= watermark:
                entry = heappop(heap)
                released_t = self.released_t = entry[0]
                yield entry

    def flush(self) -> Iterator[Any]:
        """Release everything still held (end of input, or an idle stream)."""
        return self.release(float("inf"))

    def __getstate__(self) -> dict[str, Any]:  # itertools.count is not picklable
        state = dict(self.__dict__)
        state["_arrivals"] = max((entry[3] for entry in self._heap), default=-1) + 1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._arrivals = itertools.count(state["_arrivals"])
