"""The loop's one timer for every backend call's deadline (gateway/clock.py)."""

from __future__ import annotations

import asyncio

from gateway import clock
from gateway.clock import Watchdog, watchdog


class Call:
    def __init__(self, dog: Watchdog, due: float | None) -> None:
        self.dog = dog
        self.due = due
        self.expired_at: float | None = None

    def watch(self) -> None:
        self.dog.watched.add(self)
        if self.due is not None and self.due < self.dog.armed:
            self.dog.arm(self.due)

    def expire(self) -> None:
        self.expired_at = self.dog.loop.time()
        self.dog.watched.discard(self)


def test_each_call_expires_at_its_own_deadline_under_one_timer() -> None:
    async def scenario() -> tuple[Call, Call, Call, Call, float, Watchdog]:
        loop = asyncio.get_running_loop()
        dog = watchdog(loop)
        assert watchdog(loop) is dog  # one per loop
        now = loop.time()
        long = Call(dog, now + 30)
        short = Call(dog, now + 0.2)  # sooner than the timer was armed for
        paused = Call(dog, None)  # its clock stopped while the client is served
        moved = Call(dog, now + 0.1)
        for call in (long, short, paused, moved):
            call.watch()
        moved.due = now + 0.4  # resumed later: found later, not expired at 0.1
        await asyncio.sleep(0.6)
        return long, short, paused, moved, now, dog

    long, short, paused, moved, start, dog = asyncio.run(scenario())
    assert short.expired_at is not None and 0.19 <= short.expired_at - start < 0.4
    assert moved.expired_at is not None and 0.39 <= moved.expired_at - start < 0.55
    assert long.expired_at is None and paused.expired_at is None
    assert dog.watched == {long, paused}
    assert dog.armed == long.due  # armed again for the earliest deadline left


def test_a_new_loop_gets_a_watchdog_of_its_own() -> None:
    async def dog_of_this_loop() -> Watchdog:
        return watchdog(asyncio.get_running_loop())

    first, second = asyncio.run(dog_of_this_loop()), asyncio.run(dog_of_this_loop())
    assert first is not second
    assert first.loop not in clock._watchdogs  # a closed loop's is dropped, not kept
