"""The admin API under the reserved prefix (default `/-/`).

    GET  /-/healthz          200 while the process serves
    GET  /-/readyz           200 once a table is live and its backends started, else 503
                             (also 503 from the moment a shutdown was asked for)
    GET  /-/routes           the live table, and the last rejected text as `last_error`
    PUT  /-/routes/{id}      {"backend": NAME}: flip one route, persisted to the source
                             {"canary": {"percent": P}}: set its canary share
    GET  /-/shadow[?route=]  shadow comparison counts and the last mismatches
    GET  /-/inventory        the migration inventory of the live table, with the live
                             figures of every worker (gateway.inventory)
    POST /-/reload           re-read the source now
    GET  /-/events[?since=ID] the kept events (edits, reloads, rejected tables) after ID
    GET  /-/fleet            with a store: every instance, and the revision it serves
    POST /-/flip-all         {"backend": NAME}: the emergency switch, every route at once
    GET  /-/console          the operator console (a page; `gateway.console`)
    GET  /-/console/figures  rate, error ratio, p50/p99 per route and backend, sampled
                             once per host for every viewer

Who may call what, for every path under the prefix (a rule of the whole API, so
an endpoint added later is covered without naming it): health probes
(`/healthz`, `/readyz`) are open to all. Everything else needs
`Authorization: Bearer <token>` when `GATEWAY_ADMIN_TOKEN` is set (401 without,
403 wrong; compared in constant time). With no token, it answers a loopback
peer that did not come through a proxy (the socket's peer, whatever a trusted
proxy says; a request carrying forwarded headers, believed or not, came through
one), and when the admin API listens on a non-loopback address, changes are
refused outright (the gateway warns at start). Reads are protected too: the
shadow results hold other users' response bodies and query strings. The
console's page and assets are open too: they hold nothing, and a browser cannot
send a token with a page load (the page asks for it, then sends it with every
call). A change a browser sends carries `Origin`, which must be the gateway's
own: a page of another site cannot act, even from loopback.
Every answer is JSON, errors included. A change goes through the control plane
as every edit does: stored, applied at once on this worker; the other workers
follow the source. Off the request path, so plain Starlette routing.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin_edits import EDIT_REFUSALS, flip_all, foreign_origin, not_applied, refusal
from gateway.console import ASSETS, Sampler, console_routes
from gateway.control import ControlPlane, iso_time
from gateway.fleet.instances import fleet_view, iso
from gateway.fleet.source import RedisSource
from gateway.fleet.store import StoreUnavailable
from gateway.http import send_json
from gateway.proxies import peer_of
from gateway.types import Message, Receive, Scope, Send

log = logging.getLogger("gateway.admin")
MAX_BODY = 64 * 1024
# The console's page and assets hold nothing: the page asks for the token itself.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/console", *(f"/console/{a}" for a in ASSETS)})
READ_METHODS = frozenset({"GET", "HEAD"})

_CHANGE_SHAPE = (
    'the body must be {"backend": "<name>"} or {"canary": {"percent": <0-100>}} '
    '(with "backend" in canary to add one)'
)


class Admin:
    def __init__(
        self,
        control: ControlPlane,
        sampler: Sampler,
        token: str | None,
        draining: Callable[[], bool],
        *,
        exposed: bool = False,
    ) -> None:
        """`exposed`: the admin API listens on an address other than loopback."""
        self.control = control
        self._draining = draining  # whether the gateway is shutting down (drain.py)
        self.token = token.encode() if token else None
        self.exposed = exposed
        self._app = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
                Route("/routes", self.routes, methods=["GET"]),
                Route("/routes/{route_id}", self.change_route, methods=["PUT"]),
                Route("/shadow", self.shadow, methods=["GET"]),
                Route("/inventory", self.inventory, methods=["GET"]),
                Route("/reload", self.reload, methods=["POST"]),
                Route("/events", self.events, methods=["GET"]),
                Route("/fleet", self.fleet, methods=["GET"]),
                Route("/flip-all", self.flip_all, methods=["POST"]),
                *console_routes(sampler),
            ],
            exception_handlers={HTTPException: _http_error, Exception: _internal_error},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """`path` is the normalised request path with the prefix's bare form removed."""
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        if path not in OPEN_PATHS and (refusal := self._refusal(scope)) is not None:
            status, message, headers = refusal
            await send_json(send, status, {"error": message}, headers)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._app({**scope, "path": path, "root_path": ""}, receive, tracking_send)
        except Exception as exc:  # answered by _internal_error; one line, no traceback
            log.error("admin request failed: %s %s: %r", scope.get("method"), path, exc)
            if not started:
                await send_json(send, 500, {"error": f"internal error: {type(exc).__name__}"})

    # --- reads -----------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self._draining():
            return JSONResponse({"status": "draining"}, status_code=503)
        ready = self.control.table is not None
        return JSONResponse(
            {"status": "ready" if ready else "starting"}, status_code=200 if ready else 503
        )

    async def routes(self, request: Request) -> Response:
        return JSONResponse(self.control.view())

    async def shadow(self, request: Request) -> Response:
        """This worker's shadow results, merged with the other workers' when there are some."""
        route_id = request.query_params.get("route")
        reports = self.control.state.shadow_reports()
        return JSONResponse(
            {
                "routes": {
                    rid: {
                        **report,
                        "mismatches": [
                            {**m, "at": iso_time(m["at"])} for m in report["mismatches"]
                        ],
                    }
                    for rid, report in sorted(reports.items())
                    if route_id is None or rid == route_id
                }
            }
        )

    async def inventory(self, request: Request) -> Response:
        table, metrics = self.control.table, self.control.metrics
        if table is None:
            return JSONResponse({"error": "no route table yet"}, status_code=503)
        from gateway.inventory import live_report

        # Off the loop, as /metrics is: it reads the apps and every worker's counters.
        report = await asyncio.to_thread(
            lambda: live_report(table.config, metrics.families() if metrics else None)
        )
        return JSONResponse(report)

    async def events(self, request: Request) -> Response:
        since = request.query_params.get("since", "0")
        if not since.isdigit():
            return JSONResponse({"error": "since must be an event id (0 or more)"}, 400)
        if self.control.events is None:
            return JSONResponse({"events": []})
        try:
            found = await self.control.events.since(int(since))
        except StoreUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse({"events": [{**e, "at": iso(e["at"])} for e in found]})

    async def fleet(self, request: Request) -> Response:
        source = self.control.source
        if not isinstance(source, RedisSource):
            return JSONResponse(
                {"error": "this gateway has no store: start it with --store redis://..."},
                status_code=404,
            )
        try:
            revision = await source.store.revision()
            view = fleet_view(revision, await source.store.heartbeats())
        except StoreUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(view)

    # --- changes ---------------------------------------------------------------

    async def reload(self, request: Request) -> Response:
        result = await self.control.reload("admin API")
        if result.error is not None:
            return JSONResponse(
                {
                    "error": "the route file is invalid; the previous table keeps serving",
                    "problems": list(result.error.problems),
                },
                status_code=422,
            )
        return JSONResponse({"reloaded": result.changed, **self.control.view()})

    async def change_route(self, request: Request) -> Response:
        route_id = request.path_params["route_id"]
        change = _route_change(await _json_body(request))
        if change is None:
            return JSONResponse({"error": _CHANGE_SHAPE}, status_code=400)
        by = _by(request)
        try:
            if "backend" in change:
                outcome = await self.control.flip(route_id, change["backend"], by=by)
            else:
                canary = change["canary"]
                outcome = await self.control.set_canary(
                    route_id, canary["percent"], canary.get("backend"), by=by
                )
        except EDIT_REFUSALS as exc:
            return refusal(exc)
        if outcome.error is not None:
            return not_applied(outcome.error.problems)
        route = outcome.result.config.route(route_id).view()
        return JSONResponse({"route": route, "changed": bool(outcome.result.changed)})

    async def flip_all(self, request: Request) -> Response:
        return await flip_all(self.control, await _json_body(request), _by(request))

    def _refusal(self, scope: Scope) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """(status, reason, headers) of a request this client may not make, or None."""
        headers = scope["headers"]
        if scope["method"] not in READ_METHODS and (wrong := foreign_origin(headers)):
            return (
                403,
                f"refused: the request comes from a page of {wrong}, not of this gateway",
                [],
            )
        if self.token is None:
            # The socket's peer, not the client a trusted proxy names; and a request that
            # carried forwarded headers came through a proxy, believed or not (a local
            # sidecar proxy outside --forwarded-allow-ips still relays others' requests).
            peer = peer_of(scope)
            if not peer.client or not is_loopback(peer.client[0]) or peer.proxied:
                reason = "the admin API answers loopback clients only (not through a proxy)"
                return 403, f"{reason}; set GATEWAY_ADMIN_TOKEN to allow others", []
            if self.exposed and scope["method"] not in READ_METHODS:
                reason = (
                    "admin changes are refused: the admin API listens on a non-loopback "
                    "address and GATEWAY_ADMIN_TOKEN is not set"
                )
                return 403, reason, []
            return None
        given = next((value for name, value in headers if name == b"authorization"), b"")
        scheme, _, token = given.partition(b" ")
        if not given or scheme.lower() != b"bearer":
            challenge = [(b"www-authenticate", b'Bearer realm="gateway-admin"')]
            return 401, "missing 'Authorization: Bearer <token>'", challenge
        if not hmac.compare_digest(token.strip(), self.token):
            return 403, "wrong admin token", []
        return None


def _by(request: Request) -> str:
    return f"admin API client={request.client.host if request.client else '-'}"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    if exc.status_code == 404:
        return JSONResponse({"error": "no such admin endpoint"}, status_code=404)
    if exc.status_code == 405:
        message = f"method {request.method} not allowed on this path"
        return JSONResponse({"error": message}, status_code=405, headers=exc.headers)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)


async def _json_body(request: Request) -> object:
    """The body as JSON, or None when it is not JSON or longer than MAX_BODY."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested thousands deep
        return None


def _route_change(payload: object) -> dict[str, Any] | None:
    """The change a PUT asks for, or None when the body is not one of the two shapes."""
    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    if isinstance(payload.get("backend"), str):
        return payload
    canary = payload.get("canary")
    if not isinstance(canary, dict) or not set(canary) <= {"percent", "backend"}:
        return None
    percent = canary.get("percent")
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        return None
    if "backend" in canary and not isinstance(canary["backend"], str):
        return None
    return payload


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
