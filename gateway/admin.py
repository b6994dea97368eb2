"""The admin API under the reserved prefix (default `/-/`).

    GET  /-/healthz          200 while the process serves
    GET  /-/readyz           200 once a table is live and its backends started, else 503
    GET  /-/routes           the live table, and the last rejected file as `last_error`
    PUT  /-/routes/{id}      {"backend": NAME}: flip one route, persisted to the file
                             {"canary": {"percent": P}}: set its canary share
    GET  /-/shadow[?route=]  shadow comparison counts and the last mismatches
    POST /-/reload           re-read the file now

Reads are open. Changes need `Authorization: Bearer <token>` when
`GATEWAY_ADMIN_TOKEN` is set (401 without, 403 wrong; compared in constant
time); with no token configured they are accepted from loopback clients only.
Every answer is JSON. A flip writes the file exactly as `gateway flip` does,
applies it at once on this worker, and the other workers follow the file.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from gateway.dispatch import send_json
from gateway.routefile.editing import EditError, flip, set_canary
from gateway.routefile.model import ConfigError
from gateway.types import Message, Receive, Scope, Send

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("gateway.admin")
MAX_BODY = 64 * 1024


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Admin:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        token = gateway.settings.admin_token
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """`path` is the normalised request path with the prefix's bare form removed."""
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._handle(scope, receive, tracking_send, path)
        except Exception as exc:  # the admin API answers JSON, whatever went wrong
            log.error("admin request failed: %s %s: %r", scope.get("method"), path, exc)
            if not started and scope["type"] == "http":
                await send_json(send, 500, {"error": f"internal error: {type(exc).__name__}"})

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        method = scope["method"]
        if path in ("/healthz", "/readyz", "/routes", "/reload", "/shadow") or path.startswith(
            "/routes/"
        ):
            if method == "GET" and path == "/healthz":
                await send_json(send, 200, {"status": "ok"})
            elif method == "GET" and path == "/readyz":
                ready = self.gateway.ready
                await send_json(
                    send, 200 if ready else 503, {"status": "ready" if ready else "starting"}
                )
            elif method == "GET" and path == "/routes":
                await send_json(send, 200, self.describe())
            elif method == "GET" and path == "/shadow":
                await send_json(send, 200, self.shadow_report(_query(scope, "route")))
            elif method == "POST" and path == "/reload":
                if await self._authorised(scope, send):
                    await self._reload(send)
            elif method == "PUT" and path.startswith("/routes/") and path.count("/") == 2:
                if await self._authorised(scope, send):
                    await self._flip(path[len("/routes/") :], receive, send)
            else:
                await send_json(send, 405, {"error": f"method {method} not allowed on this path"})
            return
        await send_json(send, 404, {"error": "no such admin endpoint"})

    def describe(self) -> dict[str, Any]:
        table = self.gateway.table
        error = self.gateway.reloader.last_error
        last_error = {"at": _iso(error.at), "problems": list(error.problems)} if error else None
        if table is None:
            return {"loaded": False, "last_error": last_error}
        config = table.config
        return {
            "loaded": True,
            "version": config.version,
            "sha256": config.sha256,
            "source": config.source,
            "loaded_at": _iso(table.loaded_at),
            "last_error": last_error,
            **config.view(),
        }

    async def _authorised(self, scope: Scope, send: Send) -> bool:
        if self._token is None:
            client = scope.get("client")
            if client and _is_loopback(client[0]):
                return True
            await send_json(
                send,
                403,
                {
                    "error": "admin changes are accepted from loopback only; "
                    "set GATEWAY_ADMIN_TOKEN to allow remote clients"
                },
            )
            return False
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        if not given or scheme.lower() != b"bearer":
            await send_json(
                send,
                401,
                {"error": "missing 'Authorization: Bearer <token>'"},
                [(b"www-authenticate", b'Bearer realm="gateway-admin"')],
            )
            return False
        if not hmac.compare_digest(token.strip(), self._token):
            await send_json(send, 403, {"error": "wrong admin token"})
            return False
        return True

    async def _reload(self, send: Send) -> None:
        result = await self.gateway.reloader.reload("admin API")
        if result.error is not None:
            await send_json(
                send,
                422,
                {
                    "error": "the route file is invalid; the previous table keeps serving",
                    "problems": list(result.error.problems),
                },
            )
            return
        await send_json(send, 200, {"reloaded": result.changed, **self.describe()})

    async def _flip(self, route_id: str, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        try:
            payload = json.loads(body) if body is not None else None
        except ValueError:
            payload = None
        change = _route_change(payload)
        if change is None:
            await send_json(send, 400, {"error": _CHANGE_SHAPE})
            return
        path = self.gateway.settings.config
        reloader = self.gateway.reloader
        try:
            if "backend" in change:
                result = await reloader.edit(flip, path, route_id, change["backend"])
            else:
                canary = change["canary"]
                result = await reloader.edit(
                    set_canary, path, route_id, canary["percent"], canary.get("backend")
                )
        except EditError as exc:
            await send_json(send, exc.status, {"error": str(exc)})
            return
        except ConfigError as exc:
            problems = [str(p) for p in exc.problems]
            await send_json(
                send,
                409,
                {
                    "error": "the change would leave the route file invalid; nothing was changed",
                    "problems": problems,
                },
            )
            return
        log.info("route changed: route=%s change=%s via=admin-api", route_id, json.dumps(change))
        reload = await self.gateway.reloader.reload("admin API")
        if reload.error is not None:
            problems = list(reload.error.problems)
            await send_json(
                send,
                500,
                {"error": "the file was written but could not be applied", "problems": problems},
            )
            return
        route = next(r for r in self.describe()["routes"] if r["id"] == route_id)
        await send_json(send, 200, {"route": route, "changed": bool(result.changed)})

    def shadow_report(self, route_id: str | None) -> dict[str, Any]:
        """This worker's shadow results, merged with the other workers' when there are some."""
        routes = self.gateway.policies.shadow_reports()
        return {
            "routes": {
                rid: {
                    **report,
                    "mismatches": [{**m, "at": _iso(m["at"])} for m in report["mismatches"]],
                }
                for rid, report in sorted(routes.items())
                if route_id is None or rid == route_id
            }
        }


_CHANGE_SHAPE = (
    'the body must be {"backend": "<name>"} or {"canary": {"percent": <0-100>}} '
    '(with "backend" in canary to add one)'
)


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


def _query(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
