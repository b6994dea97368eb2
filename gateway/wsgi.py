"""In-process WSGI backends: a2wsgi's bridge on a thread pool of each backend's own.

A WSGI app holds a thread for as long as it runs, body reading included, so a
thread is the scarce resource one client could take from the others. As nginx
does before it calls its upstream, the request body is read in the event loop
first, up to `WSGIOptions.buffer` bytes, and only then is a thread taken: a
client that stalls its upload stalls in the loop, where it costs nothing, and
`--body-timeout` ends it there. A larger body streams to the thread as it comes
(still bounded by `--body-timeout`).

The environ is a2wsgi's plus `wsgi.input_terminated`, as gunicorn sets it: the
server ends `wsgi.input` at the end of the body, so an app may read a body of
unknown length (a chunked upload). Werkzeug reads none without it.

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
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from a2wsgi.wsgi import WSGIResponder

from gateway.errors import BackendBusy
from gateway.http import has_body
from gateway.routefile.loading import import_target
from gateway.routefile.model import BackendSpec
from gateway.types import Message, Receive, Scope, Send

T = TypeVar("T")
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]

SEND_QUEUE = 10  # response chunks a2wsgi queues between the thread and the loop (its default)


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
        self._serve = _input_terminated(self.app)
        self.threads = spec.threads or options.threads
        self.buffer = options.buffer
        self.wait = options.wait
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"wsgi-{spec.name}")
        self._free: asyncio.Semaphore | None = None  # made in the loop that serves
        self._drains: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._free = asyncio.Semaphore(self.threads)

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
        job = await self._take()
        try:
            # a2wsgi's bridge for one request (its WSGIMiddleware does just this), given
            # an executor that frees the thread when the app is done with it. a2wsgi
            # has no parameter for that; pyproject.toml bounds its version so that a
            # release that changes WSGIResponder fails the install, not production.
            app = _mounted(self._serve, scope) if scope.get("root_path") else self._serve
            responder = WSGIResponder(app, job, SEND_QUEUE)  # type: ignore[arg-type]
            await responder(scope, receive, send)  # type: ignore[arg-type]
        finally:
            if not job.submitted:
                job.release()
            elif not job.finish():
                self._drain(responder.send_queue, job)

    async def run(self, fn: Callable[..., T], /, *args: Any) -> T:
        """`fn(*args)` on one of the app's threads, taken as a request takes one
        (`gateway.session` opens and saves the app's sessions with it)."""
        job = await self._take()
        try:
            return await asyncio.wrap_future(job.submit(fn, *args))
        finally:
            if not job.submitted:
                job.release()
            else:
                job.finish()

    async def _take(self) -> _OneJob:
        """A free thread of the pool, waited for at most `wait` seconds, else
        `BackendBusy`: the job that runs on it and frees it when it ends."""
        free = self._free
        assert free is not None, "started"
        if not free.locked():
            # A thread is free: acquire() returns without waiting, so no clock to set up
            # (a timer armed and cancelled on every request otherwise).
            await free.acquire()
        else:
            try:
                async with asyncio.timeout(self.wait):
                    await free.acquire()
            except TimeoutError:
                reason = f"no free thread of {self.threads} within {self.wait:g}s"
                raise BackendBusy(reason) from None
        return _OneJob(self.executor, free.release, asyncio.get_running_loop())

    def _drain(self, queue: asyncio.Queue[Any], job: _OneJob) -> None:
        """The gateway stopped waiting (a timeout) while the app still runs: take what
        it sends until it returns. Else, past the queue's few chunks, the thread would
        block for good on a queue nobody reads, and the pool would lose it."""

        async def drain() -> None:
            while not job.done:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):  # then look at job.done again
                        await queue.get()

        task = asyncio.create_task(drain(), name=f"wsgi-drain:{self.spec.name}")
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)


class _OneJob:
    """The executor a2wsgi is given for one request: it runs the request's one job on
    the backend's pool, and frees the thread (`release`, in the loop) once both the
    app has returned on it and the caller is done waiting for it.

    Usually the caller's wait ends with the app's return: `finish()` frees the thread
    then and there. When the caller stopped waiting first (a timeout), the thread
    frees itself when the app returns, through the loop. (Freeing always from the
    thread cost every request a wake-up of the loop from another thread.)"""

    def __init__(
        self, pool: ThreadPoolExecutor, release: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.pool = pool
        self.release = release
        self.loop = loop
        self.submitted = False
        self.done = False  # the app returned on its thread (or never will run)
        self._abandoned = False  # the caller stopped waiting before that
        self._lock = threading.Lock()  # done and abandoned are decided together

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        def run() -> Any:
            try:
                return fn(*args)
            finally:
                self._end()

        future = self.pool.submit(run)
        self.submitted = True
        # Cancelled before a thread took it up (its caller was cancelled): `run` never
        # runs, so it ends here.
        future.add_done_callback(lambda f: self._end() if f.cancelled() else None)
        return future

    def finish(self) -> bool:
        """In the loop, once the caller is done waiting: free the thread if the app has
        returned (True); else leave that to the thread (False)."""
        with self._lock:
            if not self.done:
                self._abandoned = True
                return False
        self.release()
        return True

    def _end(self) -> None:
        with self._lock:
            self.done = True
            abandoned = self._abandoned
        if abandoned:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing to free
                self.loop.call_soon_threadsafe(self.release)


def _input_terminated(app: WSGIApp) -> WSGIApp:
    """`app` told that `wsgi.input` ends where the body does (a2wsgi's stream does)."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return serve


def _mounted(app: WSGIApp, scope: Scope) -> WSGIApp:
    """`app` as mounted under the scope's `root_path` (`gateway.prefix`): the mount point
    is `SCRIPT_NAME`, the rest `PATH_INFO`, as a WSGI server mounting an app there says.
    Set here, not left to a2wsgi: its releases differ on whether `path` includes the
    root path, and it lets a `SCRIPT_NAME` in the process's environment override it."""
    root: str = scope["root_path"]
    script_name = _wsgi_str(root)
    path_info = _wsgi_str(scope["path"][len(root) :])  # gateway.prefix: path starts with root

    def mounted(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        environ["SCRIPT_NAME"] = script_name
        environ["PATH_INFO"] = path_info
        return app(environ, start_response)

    return mounted


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
