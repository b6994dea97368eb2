"""In-process WSGI backends: each app on a thread pool of its own
(`gateway.wsgi_pool`); one request's call of the app, and its answer's way back
to the loop, are `gateway.wsgi_call`; its environ is `gateway.wsgi_environ`'s
(with a2wsgi's `wsgi.input` stream).

A WSGI app holds a thread for as long as it runs, body reading included, so a
thread is the scarce resource one client could take from the others. As nginx
does before it calls its upstream, the request body is read in the event loop
first, up to `WSGIOptions.buffer` bytes, and only then is a thread taken: a
client that stalls its upload stalls in the loop, where it costs nothing, and
`--body-timeout` ends it there. A larger body streams to the thread as it comes
(still bounded by `--body-timeout`).

Each backend has its own pool (`threads:`, else `--wsgi-threads`), so one slow
app cannot take another's threads, and a request waits at most
`WSGIOptions.wait` seconds for a free one, then gets a JSON 503. A thread counts
as taken until the app has returned on it, even after a timeout.

The shared login (`gateway.session`) opens and saves this app's sessions on the
same pool, the same way (`run`): a session store is the app's to reach, with the
threads sized for it, and a read that took a thread behind the pool's back would
make every other wait unbounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from a2wsgi.wsgi import Body

from gateway.http import has_body
from gateway.routefile.loading import import_target
from gateway.routefile.model import BackendSpec
from gateway.types import Message, Receive, Scope, Send
from gateway.wsgi_call import WSGICall
from gateway.wsgi_environ import environ_of, process_script_name
from gateway.wsgi_pool import ThreadPool

T = TypeVar("T")
# An int: `int in bytes` is a plain byte search, where `bytes in bytes` first fails
# to read the needle as an int (a TypeError made and dropped per header).
_UNDERSCORE = ord("_")


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
        self.pool = ThreadPool(self.threads, f"wsgi-{spec.name}")
        self.script_name = process_script_name()  # where no route prefix says otherwise

    async def start(self) -> None:
        pass  # the threads start as requests need them

    async def close(self) -> None:
        self.pool.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        for name, _ in scope["headers"]:  # a loop, not any(): no generator per request
            if _UNDERSCORE in name:
                # As gunicorn does: `X_Forwarded_For` would become the same HTTP_* key
                # as `X-Forwarded-For`, a way for a client to pass for a header that a
                # proxy in front set. A name with an underscore never reaches the app.
                headers = [(n, v) for n, v in scope["headers"] if _UNDERSCORE not in n]
                scope = {**scope, "headers": headers}
                break
        if has_body(scope):
            preloaded = await _preload(receive, self.buffer)
            if preloaded is None:
                return  # the body ended early (client gone, or cut by a limit): no thread
            receive = preloaded
        pool = self.pool
        if not pool.take_now():
            await pool.take(self.wait)
        try:
            loop = asyncio.get_running_loop()
            body = Body(loop, receive)  # type: ignore[arg-type]
            environ = environ_of(scope, body, self.script_name)
            call = WSGICall(self.app, environ, loop, pool.release)
            # The app sees the request's context variables, as a2wsgi gives them.
            pool.submit(contextvars.copy_context().run, call.run)
        except BaseException:
            pool.release()
            raise
        await call.relay(send)

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """`fn(*args)` on one of the app's threads, taken as a request takes one
        (`gateway.session` opens and saves the app's sessions with it)."""
        pool = self.pool
        if not pool.take_now():
            await pool.take(self.wait)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()

        def job() -> None:  # on the thread: fn's outcome to the loop, the thread back
            try:
                outcome: tuple[T | None, BaseException | None] = (fn(*args), None)
            except BaseException as exc:
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
                loop.call_soon_threadsafe(settle, *outcome)

        def settle(result: T | None, error: BaseException | None) -> None:
            pool.release()
            if answer.cancelled():
                return  # the caller stopped waiting: the thread was still taken till now
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(result)  # type: ignore[arg-type]

        try:
            pool.submit(job)
        except BaseException:
            pool.release()
            raise
        return await answer


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
