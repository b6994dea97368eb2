"""A WSGI backend's threads: how many there are, which are taken, who waits for one.

A request takes a thread in the event loop (`take_now`, else `take`, which
waits at most `wait` seconds, first come first served, then raises
`BackendBusy`), hands it a job (`submit`), and gives it back (`release`, in the
loop) once the app has returned on it, even when the request stopped waiting
for it (a timeout): a hung handler keeps its thread, and the pool knows it.

The threads start as requests first need them and wait on one queue. Only a
taken thread is given a job, so every job finds a thread at once. They are
daemon threads: a handler still running when the process exits (a hung one,
whose request timed out long ago) does not hold the exit up; the server has
drained its requests before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.errors import BackendBusy

log = logging.getLogger("gateway.wsgi")

Job = tuple[Callable[..., object], tuple[Any, ...]]


class ThreadPool:
    """`size` threads named `name_0`, `name_1`, ...; `taken` and `waiters` belong to
    the event loop."""

    __slots__ = ("_jobs", "_threads", "closed", "name", "size", "taken", "waiters")

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self.taken = 0
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.closed = False
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def take_now(self) -> bool:
        """Take a free thread if there is one and nobody waits for it before us."""
        if self.taken < self.size and not self.waiters:
            self.taken += 1
            return True
        return False

    async def take(self, wait: float) -> None:
        """Take the next free thread, waited for at most `wait` seconds, else
        `BackendBusy`."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(wait):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a thread just as the wait ended: the next one's
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                reason = f"no free thread of {self.size} within {wait:g}s"
                raise BackendBusy(reason) from None
            raise

    def release(self) -> None:
        """A thread is free: to the first request still waiting, else back to the pool."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # else it gave up waiting
                waiter.set_result(None)
                return
        self.taken -= 1

    def submit(self, fn: Callable[..., object], /, *args: Any) -> None:
        """Run `fn(*args)` on the thread just taken. `fn` must not raise."""
        if self.closed:
            raise RuntimeError(f"the thread pool {self.name} is closed")
        threads = self._threads
        if len(threads) < self.taken:  # every taken thread is running or about to
            thread = threading.Thread(
                target=self._work, name=f"{self.name}_{len(threads)}", daemon=True
            )
            thread.start()
            threads.append(thread)
        self._jobs.put((fn, args))

    def close(self) -> None:
        """No more jobs; each thread ends once it has finished the one it runs."""
        self.closed = True
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self) -> None:
        get = self._jobs.get
        while (job := get()) is not None:
            fn, args = job
            try:
                fn(*args)
            except BaseException:  # a bug of the gateway's own: the thread must live on
                log.exception("wsgi pool=%s job failed", self.name)
