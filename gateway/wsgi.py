"""In-process WSGI backends: each app on a thread pool of its own (one request's
call of the app, and its answer's way back to the loop, are `gateway.wsgi_call`).

A WSGI app holds a thread for as long as it runs, body reading included, so a
thread is the scarce resource one client could take from the others. As nginx
does before it calls its upstream, the request body is read in the event loop
first, up to `WSGIOptions.buffer` bytes, and only then is a thread taken: a
client that stalls its upload stalls in the loop, where it costs nothing, and
`--body-timeout` ends it there. A larger body streams to the thread as it comes
(still bounded by `--body-timeout`).

The environ is a2wsgi's (its `build_environ` and `wsgi.input` stream) plus
`wsgi.input_terminated`, as gunicorn sets it: the server ends `wsgi.input` at
the end of the body, so an app may read a body of unknown length (a chunked
upload). Werkzeug reads none without it.

Each backend has its own pool (`threads:`, else `--wsgi-threads`), so one slow
app cannot take another's threads, and a request waits at most
`WSGIOptions.wait` seconds for a free one, then gets a JSON 503. A thread counts
as taken until the app has returned on it, even when the gateway stopped waiting
for it (a timeout): a hung handler keeps its thread, and the pool knows it.

The shared login (`gateway.session`) opens and saves this app's sessions on the
same pool, the same way (`run`): a session store is the app's to reach, with the
threads sized for it, and a read that took a thread behind the pool's back would
make every other wait unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from a2wsgi.wsgi import Body, build_environ

from gateway.errors import BackendBusy
from gateway.http import has_body
from gateway.routefile.loading import import_target
from gateway.routefile.model import BackendSpec
from gateway.types import Message, Receive, Scope, Send
from gateway.wsgi_call import WSGICall

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WSGIOptions:
    """The gateway-wide WSGI settings (`--wsgi-threads`, `--wsgi-buffer`, `--wsgi-wait`)."""

    threads: int = 32
    buffer: int = 1024 * 1024
    wait: float = 5.0


class WSGIBackend:
    supports_websocket = False
    active = 0

    def __init__(self, spec: BackendSpec, options: WSGIOptions) -> None:
        self.spec = spec
        self.app = import_target(spec.target)
        self.threads = spec.threads or options.threads
        self.buffer = options.buffer
        self.wait = options.wait
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"wsgi-{spec.name}")
        self._free = _FreeThreads(self.threads)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, _ in scope["headers"]:  # a loop, not any(): no generator per request
            if b"_" in name:
                # As gunicorn does: `X_Forwarded_For` would become the same HTTP_* key
                # as `X-Forwarded-For`, a way for a client to pass for a header that a
                # proxy in front set. A name with an underscore never reaches the app.
                headers = [(n, value) for n, value in scope["headers"] if b"_" not in n]
                scope = {**scope, "headers": headers}
                break
        if has_body(scope):
            preloaded = await _preload(receive, self.buffer)
            if preloaded is None:
                return  # the body ended early (client gone, or cut by a limit): no thread
            receive = preloaded
        free = self._free
        if not free.take_now():
            await free.take(self.wait)
        try:
            loop = asyncio.get_running_loop()
            body = Body(loop, receive)  # type: ignore[arg-type]
            environ: dict[str, Any] = build_environ(scope, body)  # type: ignore[arg-type,assignment]
            # As gunicorn says: `wsgi.input` ends where the body does (a2wsgi's stream
            # does), so an app may read a body of unknown length (a chunked upload).
            environ["wsgi.input_terminated"] = True
            if scope.get("root_path"):
                _mount(environ, scope)
            call = WSGICall(self.app, environ, loop, free.release)
            # The app sees the request's context variables, as a2wsgi gives them.
            self.executor.submit(contextvars.copy_context().run, call.run)
        except BaseException:
            free.release()
            raise
        await call.relay(send)

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """`fn(*args)` on one of the app's threads, taken as a request takes one
        (`gateway.session` opens and saves the app's sessions with it)."""
        free = self._free
        if not free.take_now():
            await free.take(self.wait)
        loop = asyncio.get_running_loop()

        def done(_: Future[T]) -> None:  # fn returned, or will never run: the thread is free
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to free
                loop.call_soon_threadsafe(free.release)

        try:
            future = self.executor.submit(fn, *args)
        except BaseException:
            free.release()
            raise
        future.add_done_callback(done)
        return await asyncio.wrap_future(future)


class _FreeThreads:
    """How many of a pool's threads are taken, and the requests waiting for one, first
    come first served. In the loop only. A thread counts as taken until the app has
    returned on it, even when its request stopped waiting for it (a timeout): a hung
    handler keeps its thread, and the pool knows it."""

    __slots__ = ("size", "taken", "waiters")

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

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
                self.release()  # handed a thread as the wait ended: the next one's
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
            if not waiter.done():
                waiter.set_result(None)
                return
        self.taken -= 1


def _mount(environ: dict[str, Any], scope: Scope) -> None:
    """The app as mounted under the scope's `root_path` (`gateway.prefix`): the mount
    point is `SCRIPT_NAME`, the rest `PATH_INFO`, as a WSGI server mounting an app there
    says. Set here, not left to a2wsgi: its releases differ on whether `path` includes
    the root path, and it lets a `SCRIPT_NAME` in the process's environment override it."""
    root: str = scope["root_path"]
    environ["SCRIPT_NAME"] = _wsgi_str(root)
    # gateway.prefix: the path starts with the root path.
    environ["PATH_INFO"] = _wsgi_str(scope["path"][len(root) :])


def _wsgi_str(text: str) -> str:
    # PEP 3333: environ strings carry the path's bytes, each as one latin-1 character.
    return text.encode("utf-8").decode("latin-1")


async def _preload(receive: Receive, limit: int) -> Receive | None:
    """Read the body in the loop up to `limit` bytes; a `receive` that gives it first,
    then the rest of the stream. None when the body ended early (a disconnect)."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more and size < limit:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
    first: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": more}

    async def replay() -> Message:
        nonlocal first
        if first is not None:
            message, first = first, None
            return message
        return await receive()

    return replay
