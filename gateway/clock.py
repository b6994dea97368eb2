"""One timer per event loop for the deadlines of every backend call in flight.

Each backend call has a clock (`gateway.exchange`): a deadline that pausing
and resuming merely set (`due`, None while paused). A loop timer armed and
cancelled per call costs every request a few thousand instructions (a timer
handle, a libuv timer, its heap), although nearly every call ends long before
its deadline. So the deadlines are watched by one `Watchdog` per loop instead:
a call joins its set when its clock starts and leaves it when the clock stops
(two set operations), and the watchdog's one timer is armed for the earliest
deadline it knows of. Arming it again is needed only when a call's deadline
comes before that; with one limit for all (the 30 s default), a timer armed
for the oldest call in flight fires about once per limit.

When the timer fires, the watchdog expires every call whose deadline has
passed (`expire()`: the call's task is cancelled, as `asyncio.timeout` would)
and arms itself for the earliest deadline left. Deadlines that moved later
since (a paused clock that resumed) are simply found later. Firing twice
within `GRAIN` is never needed: a flood of deadlines a few microseconds apart
is handled in one pass, at most `GRAIN` late.
"""

from __future__ import annotations

import asyncio
import math
from typing import Protocol

GRAIN = 0.005  # seconds: the least time between two firings of one watchdog
# The loop's timers fire on a clock of millisecond resolution (libuv's, uvloop):
# a deadline within it of the loop's time has come.
RESOLUTION = 0.001


class Timed(Protocol):
    """A call with a deadline (loop time; None while its clock is paused)."""

    due: float | None

    def expire(self) -> None: ...


class Watchdog:
    """The deadlines of the calls in flight on one loop, under one timer."""

    __slots__ = ("armed", "loop", "timer", "watched")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.watched: set[Timed] = set()
        self.timer: asyncio.TimerHandle | None = None
        self.armed = math.inf  # when the timer fires; inf: not armed

    def arm(self, when: float) -> None:
        """Fire at `when` at the latest (the caller saw `when < self.armed`)."""
        if self.timer is not None:
            self.timer.cancel()
        self.armed = when
        self.timer = self.loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.armed = math.inf
        now = self.loop.time()
        earliest = math.inf
        for call in list(self.watched):  # expire() leaves the set
            due = call.due
            if due is None:
                continue  # paused: resuming sets a deadline again
            if due <= now + RESOLUTION:
                call.expire()
            elif due < earliest:
                earliest = due
        if earliest < math.inf:
            self.arm(max(earliest, now + GRAIN))


_watchdogs: dict[asyncio.AbstractEventLoop, Watchdog] = {}
last: Watchdog | None = None  # the one `watchdog()` gave last: nearly always the one wanted


def watchdog(loop: asyncio.AbstractEventLoop) -> Watchdog:
    """The watchdog of `loop` (a process may run several loops: embedded, in tests).
    A caller on the request path looks at `last` first."""
    global last
    dog = _watchdogs.get(loop)
    if dog is None:
        for old in [known for known in _watchdogs if known.is_closed()]:
            del _watchdogs[old]
        dog = _watchdogs[loop] = Watchdog(loop)
    last = dog
    return dog
