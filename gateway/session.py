"""Shared login: the legacy Flask app's session, for the backends that share it.

A backend that declares `session_from: <wsgi backend>` sees, on each request, the
session that Flask app would see, and may replace or clear it:

- `FlaskSession` reads and writes a session with the Flask app's *own* session
  interface and secret key, inside a request context built from the request as
  the app itself would get it (whatever its cookie name, salt, serializer or
  signer; a Flask-Session or Flask-Login setup included). A tampered, expired or
  foreign cookie is what Flask makes of it: an empty session, i.e. anonymous.
- `ASGIGate` hands an in-process ASGI backend the session as a read-only mapping
  in `scope["state"]["legacy_session"]` (absent when anonymous). What the app
  leaves under that key when it starts its response is a write: another mapping
  replaces the session, None (or removing the key) clears it.
- `URLGate` hands a remote backend the session in a signed header
  (`gateway.session_header`), after removing any header of that name the client
  sent; a signed header of the same name on the response is a write, and never
  reaches the client.

A write becomes the Set-Cookie header Flask's `save_session` produces, exactly as
the legacy app would have set it. Reads and writes run on the Flask backend's own
threads, each taken as a request to it takes one (`WSGIBackend.run`): when none
is free within `--wsgi-wait`, the request gets the gateway's 503, never a
session-less answer. Session contents never go to a log line, a
metric, the admin API or a shadow comparison (which compares bodies only).

The gates are built with each route table (`Gates`), so a reload that changes
`session_from` needs no restart of any app.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from gateway.backends import ASGIBackend, Backend
from gateway.errors import BackendBusy
from gateway.routefile.model import BackendSpec
from gateway.session_header import DEFAULT_HEADER, KEY_ENV, BadSessionHeader, sign, verify
from gateway.types import ASGIApp, Headers, Message, Receive, Scope, Send
from gateway.wsgi import WSGIBackend
from gateway.wsgi_environ import environ_of

log = logging.getLogger("gateway.session")

STATE_KEY = "legacy_session"


class SessionSetupError(Exception):
    """A `session_from` that cannot work with what is running (said in plain words)."""


def _is_flask(app: Any) -> bool:
    # Flask is the user's dependency, not the gateway's: without it, no app is one.
    try:
        from flask import Flask
    except ImportError:
        return False
    return isinstance(app, Flask)


class FlaskSession:
    """One Flask app's session, opened and saved the way Flask does on each request."""

    def __init__(self, backend: WSGIBackend) -> None:
        app = backend.app
        name = backend.spec.name
        if not _is_flask(app):
            raise SessionSetupError(
                f"backend {name!r} ({backend.spec.target}) is not a Flask app "
                f"(it is {type(app).__name__}); session_from needs a Flask app to share"
            )
        if not app.secret_key:
            raise SessionSetupError(
                f"backend {name!r}: the Flask app has no SECRET_KEY, so it has no session to share"
            )
        self.app = app
        self.name = name
        self.backend = backend
        cookie = app.session_interface.get_cookie_name(app)
        self._cookie = cookie.encode("latin-1") + b"="

    def _carried(self, scope: Scope) -> bool:
        """Whether the request has the session cookie at all (else: anonymous, no work)."""
        return any(n == b"cookie" and self._cookie in v for n, v in scope["headers"])

    def _environ(self, scope: Scope) -> dict[str, Any]:
        # The environ the WSGI backend itself would be given, without a body.
        # A WebSocket handshake is a GET (its scope need not name an HTTP version).
        http = (
            scope if scope["type"] == "http" else {"http_version": "1.1", **scope, "method": "GET"}
        )
        return environ_of(http, io.BytesIO(), self.backend.script_name)

    async def read(self, scope: Scope) -> dict[str, Any] | None:
        """The request's session (None: anonymous)."""
        if not self._carried(scope):
            return None
        try:
            # On the app's own threads: a session interface may do I/O (a server-side store).
            return await self.backend.run(self._open, scope)
        except BackendBusy:
            raise  # no thread free to read it: the gateway's 503, not an anonymous request
        except Exception as exc:  # the app's interface failed: anonymous, said without values
            log.warning("session unreadable: backend=%s error=%s", self.name, type(exc).__name__)
            return None

    def _open(self, scope: Scope) -> dict[str, Any] | None:
        with self.app.request_context(self._environ(scope)) as context:
            session = context.session
            if self.app.session_interface.is_null_session(session) or not session:
                return None
            return dict(session)

    async def set_cookie(self, scope: Scope, data: Mapping[str, Any] | None) -> Headers:
        """The Set-Cookie headers that make `data` the session (None: clear it)."""
        values = await self.backend.run(self._save, scope, data)
        return [(b"set-cookie", value.encode("latin-1")) for value in values]

    def _save(self, scope: Scope, data: Mapping[str, Any] | None) -> list[str]:
        interface = self.app.session_interface
        with self.app.request_context(self._environ(scope)) as context:
            session = context.session
            # Modify the session Flask opened for this request, as a view would: Flask then
            # decides what to send (a new cookie, or its deletion for an emptied session).
            session.clear()
            session.update(data or {})
            response = self.app.response_class()
            interface.save_session(self.app, session, response)
            values: list[str] = response.headers.getlist("Set-Cookie")
            return values


class ASGIGate:
    """An in-process ASGI backend, called with the shared session in its `state`."""

    def __init__(self, backend: ASGIBackend, source: FlaskSession) -> None:
        self.backend = backend
        self.source = source

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = await self.source.read(scope)
        given = MappingProxyType(session) if session is not None else None
        state = self.backend.request_state()
        if given is not None:
            state[STATE_KEY] = given
        if scope["type"] != "http":
            await self.backend.call(scope, receive, send, state)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                wanted = state.get(STATE_KEY)
                if wanted is not given:
                    if wanted is not None and not isinstance(wanted, Mapping):
                        raise TypeError(
                            f"state[{STATE_KEY!r}] must be a mapping or None to write the "
                            f"session (got {type(wanted).__name__})"
                        )
                    cookies = await self.source.set_cookie(scope, wanted)
                    message["headers"] = [*message.get("headers", ()), *cookies]
            await send(message)

        await self.backend.call(scope, receive, send_with_cookie, state)


class URLGate:
    """A remote backend, called with the shared session in a signed request header."""

    def __init__(
        self, name: str, backend: ASGIApp, source: FlaskSession, header: str, key: bytes
    ) -> None:
        self.name = name
        self.backend = backend
        self.source = source
        self.header = header.lower().encode("latin-1")
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = await self.source.read(scope)
        # A client's own header of this name never reaches the upstream: only ours does.
        headers = [h for h in scope["headers"] if h[0] != self.header]
        headers.append((self.header, sign(session, self.key).encode("ascii")))
        upstream_scope = {**scope, "headers": headers}

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = await self._write(scope, message.get("headers", []))
            await send(message)

        await self.backend(upstream_scope, receive, send_with_cookie)

    async def _write(self, scope: Scope, headers: Headers) -> Headers:
        """The response headers, the session header taken out and applied as a cookie."""
        written = [v for n, v in headers if n == self.header]
        if not written:
            return headers
        kept = [(n, v) for n, v in headers if n != self.header]
        try:
            if len(written) > 1:
                raise BadSessionHeader(f"{len(written)} headers, one expected")
            data = verify(written[0].decode("latin-1"), self.key)
        except BadSessionHeader as exc:
            log.warning(
                "session write ignored: backend=%s sent an invalid %s header (%s)",
                self.name,
                self.header.decode(),
                exc,
            )
            return kept
        return [*kept, *await self.source.set_cookie(scope, data)]


class Gates:
    """The session gates of one route table, one per backend name that declares
    `session_from` (the routes using a backend share its gate)."""

    def __init__(
        self,
        specs: tuple[BackendSpec, ...],
        backends: Mapping[str, Backend],
        environ: Mapping[str, str],
    ) -> None:
        """Raises `SessionSetupError` for any backend whose `session_from` cannot work,
        whether a route uses that backend yet or not."""
        self.backends = backends
        self.environ = environ
        self._gates: dict[str, ASGIApp] = {}
        for spec in specs:
            if spec.session_from is not None:
                backend = backends[spec.name]
                self._gates[spec.name] = self._gate(spec, backend, spec.session_from)

    def wrap(self, spec: BackendSpec) -> ASGIApp:
        """The backend named by `spec` as a route calls it."""
        return self._gates.get(spec.name) or self.backends[spec.name]

    def _gate(self, spec: BackendSpec, backend: Backend, source_name: str) -> ASGIApp:
        source_backend = self.backends[source_name]
        if not isinstance(source_backend, WSGIBackend):  # the checker says so with a position
            raise SessionSetupError(
                f"backend {spec.name!r}: session_from {source_name!r} is not a wsgi backend"
            )
        source = FlaskSession(source_backend)
        if isinstance(backend, ASGIBackend):
            return ASGIGate(backend, source)
        key = self.environ.get(KEY_ENV, "")
        if not key:
            raise SessionSetupError(
                f"backend {spec.name!r} shares the session over HTTP: set {KEY_ENV} to the "
                "key it shares with the upstream"
            )
        header = spec.session_header or DEFAULT_HEADER
        return URLGate(spec.name, backend, source, header, key.encode())
