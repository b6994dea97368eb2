"""Automatic rollback: watch a route's primary backend, flip to the fallback when it fails.

A `RollbackWatch` keeps per-second counts of the primary's answers over the
last `window` seconds. When the share of failures (5xx answers, exceptions,
timeouts, refused connections) exceeds `error_ratio` with at least
`min_requests` answers, it trips once: the gateway flips the route to its
fallback through the same path as `gateway flip`, so the file, every worker
and `/-/routes` agree. It never flips back on its own.

Watches outlive table swaps (the gateway keeps them by route, backend and
policy), so a reload of some other route does not reset a window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from gateway.routefile.model import RollbackSpec

Trip = Callable[["RollbackWatch", int, int], None]


class RollbackWatch:
    __slots__ = (
        "_buckets",
        "_now",
        "backend",
        "fallback",
        "on_trip",
        "route_id",
        "spec",
        "tripped",
    )

    def __init__(
        self,
        route_id: str,
        backend: str,
        fallback: str,
        spec: RollbackSpec,
        on_trip: Trip,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.route_id = route_id
        self.backend = backend
        self.fallback = fallback
        self.spec = spec
        self.on_trip = on_trip
        self.tripped = False
        self._now = now
        size = max(1, math.ceil(spec.window))
        # bucket i holds [second, total, failed] for one whole second
        self._buckets: list[list[int]] = [[-1, 0, 0] for _ in range(size)]

    def record(self, failed: bool) -> None:
        if self.tripped:
            return
        second = int(self._now())
        bucket = self._buckets[second % len(self._buckets)]
        if bucket[0] != second:
            bucket[0], bucket[1], bucket[2] = second, 0, 0
        bucket[1] += 1
        if failed:
            bucket[2] += 1
            self._check(second)

    def counts(self) -> tuple[int, int]:
        """(answers, failures) in the current window."""
        return self._sum(int(self._now()))

    def _sum(self, second: int) -> tuple[int, int]:
        oldest = second - len(self._buckets) + 1
        total = failed = 0
        for start, count, errors in self._buckets:
            if start >= oldest:
                total += count
                failed += errors
        return total, failed

    def _check(self, second: int) -> None:
        total, failed = self._sum(second)
        if total >= self.spec.min_requests and failed / total > self.spec.error_ratio:
            self.tripped = True
            self.on_trip(self, total, failed)
