"""Stopping without failing a request: what a gateway worker does on SIGTERM.

The order, as Envoy drains and as a Kubernetes rolling update expects:

1. at once, `/-/readyz` answers 503 and every response carries `Connection: close`,
   so load balancers and keep-alive clients move to the other instances;
2. for `shutdown_delay` seconds the worker goes on serving (and accepting): a load
   balancer that has not yet seen the 503 still reaches a working gateway;
3. then the server stops accepting and lets in-flight requests finish for up to
   `graceful_timeout` seconds (uvicorn's graceful shutdown, which `gateway serve`
   configures);
4. then the server cancels what is left (open event streams, stalled uploads), the
   lifespan shuts the backends down, and the process exits 0.

The signal reaches the worker's server (uvicorn), which would stop accepting at once.
`Drain` stands in front of the server's handlers for SIGTERM and SIGINT and hands the
signal on when the delay is over. A second signal hands it on at once (an operator
who presses Ctrl-C twice means it; a third forces the exit, uvicorn's rule).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("gateway")

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Drain:
    def __init__(self, delay: float, graceful_timeout: float, start: Callable[[], None]) -> None:
        self.delay = delay
        self.graceful_timeout = graceful_timeout
        self._start = start  # makes the gateway not ready and closing connections
        self._server_handlers: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._requested = False
        self._handed_on = False

    def install(self) -> bool:
        """Take SIGTERM and SIGINT from the server; only a process's main thread can."""
        if threading.current_thread() is not threading.main_thread():
            return False  # an embedding (a test client) stops the app itself
        self._loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            self._server_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        return True

    def uninstall(self) -> None:
        for sig, handler in self._server_handlers.items():
            signal.signal(sig, handler)
        self._server_handlers.clear()
        if self._timer is not None:
            self._timer.cancel()

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler interrupts whatever the loop was running: only set a flag
        # and hand the work to the loop.
        assert self._loop is not None  # set by install, which installed this handler
        if self._requested:
            self._loop.call_soon_threadsafe(self._hand_on, sig, True)
            return
        self._requested = True
        self._loop.call_soon_threadsafe(self._begin, sig)

    def _begin(self, sig: int) -> None:
        self._start()
        log.info(
            "shutdown requested: signal=%s readyz=503 serving_for=%gs then draining for up to %gs",
            signal.Signals(sig).name,
            self.delay,
            self.graceful_timeout,
        )
        if self.delay <= 0:
            self._hand_on(sig)
        else:
            assert self._loop is not None
            self._timer = self._loop.call_later(self.delay, self._hand_on, sig)

    def _hand_on(self, sig: int, again: bool = False) -> None:
        if self._handed_on and not again:
            return  # the delay ran out after a second signal had ended it
        if self._timer is not None:
            self._timer.cancel()
        self._handed_on = True
        handler = self._server_handlers.get(sig)
        if callable(handler):
            handler(sig, None)
