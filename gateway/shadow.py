"""Shadow traffic: replay a request on the other side in the background and compare.

The client always gets the primary's response, unchanged and undelayed: the
copy is sent only once the primary has answered, as a background task with its
own timeout, and at most `MAX_IN_FLIGHT` copies run at once per process
(excess copies are dropped and counted). What is compared: the status code,
the media type, and the body (JSON structurally, minus the ignored paths;
anything else byte for byte). An answer to `HEAD` has no body (a server sends
none, whatever the app gave it), so for `HEAD` only status and media type count.
With `calibrate`, the primary is asked a second time as well, and whatever
differs between its two answers is noise that is ignored automatically.

Bodies are the one place the gateway buffers: both sides' bodies are kept up
to `BODY_CAP` bytes for the comparison; a larger exchange is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import difflib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from gateway.bodies import Captured
from gateway.http import REQUEST_ID
from gateway.routefile.model import SAFE_METHODS, JsonPath, ShadowSpec
from gateway.types import ASGIApp, Message, Scope

log = logging.getLogger("gateway.shadow")

MAX_IN_FLIGHT = 64
KEEP_MISMATCHES = 20
RESULTS = ("match", "mismatch", "error", "dropped")
_MISSING = object()


class ShadowStats:
    """Counts and the last mismatches of one route (kept across table swaps)."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(RESULTS, 0)
        self.mismatches: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=KEEP_MISMATCHES
        )

    def report(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "mismatches": list(self.mismatches)}


def merge_reports(reports: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Several workers' {route: report} as one: counts summed, the latest mismatches kept."""
    merged: dict[str, dict[str, Any]] = {}
    for report in reports:
        for route, part in report.items():
            into = merged.setdefault(route, {"counts": dict.fromkeys(RESULTS, 0), "mismatches": []})
            for result, count in part["counts"].items():
                into["counts"][result] = into["counts"].get(result, 0) + count
            into["mismatches"].extend(part["mismatches"])
    for into in merged.values():
        into["mismatches"] = sorted(into["mismatches"], key=lambda m: m["at"])[-KEEP_MISMATCHES:]
    return merged


# --- comparison --------------------------------------------------------------


def _parse_json(captured: Captured) -> Any:
    if "json" not in captured.media_type:
        return _MISSING
    try:
        return json.loads(captured.body)
    except ValueError:
        return _MISSING


def _render(path: tuple[str | int, ...]) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def _ignored(path: tuple[str | int, ...], ignore: tuple[JsonPath, ...]) -> bool:
    for pattern in ignore:
        if len(pattern) <= len(path) and all(
            want == "*" or want == got for want, got in zip(pattern, path, strict=False)
        ):
            return True
    return False


def json_differences(
    a: Any, b: Any, ignore: tuple[JsonPath, ...] = (), path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[str | int, ...], Any, Any]]:
    """(path, left, right) for every leaf that differs; _MISSING marks an absent side."""
    if _ignored(path, ignore):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in [*a, *(k for k in b if k not in a)]:
            out += json_differences(
                a.get(key, _MISSING), b.get(key, _MISSING), ignore, (*path, key)
            )
        return out
    if isinstance(a, list) and isinstance(b, list):
        out = []
        for i in range(max(len(a), len(b))):
            left = a[i] if i < len(a) else _MISSING
            right = b[i] if i < len(b) else _MISSING
            out += json_differences(left, right, ignore, (*path, i))
        return out
    if a == b and type(a) is type(b):
        return []
    return [(path, a, b)]


def _show(value: Any) -> str:
    return "(missing)" if value is _MISSING else json.dumps(value, ensure_ascii=False)


def compare(
    primary: Captured,
    shadow: Captured,
    ignore: tuple[JsonPath, ...],
    primary_name: str,
    shadow_name: str,
    bodies: bool = True,
) -> list[str]:
    """Readable differences, empty when the two answers are the same (without
    `bodies`, as answers to HEAD: status and media type only)."""
    out = []
    if primary.status != shadow.status:
        out.append(f"status: {primary_name} {primary.status}, {shadow_name} {shadow.status}")
    if primary.media_type != shadow.media_type:
        out.append(
            f"content-type: {primary_name} {primary.media_type or '(none)'!r}, "
            f"{shadow_name} {shadow.media_type or '(none)'!r}"
        )
    if not bodies:
        return out
    left, right = _parse_json(primary), _parse_json(shadow)
    if left is not _MISSING and right is not _MISSING:
        for path, a, b in json_differences(left, right, ignore):
            out.append(f"{_render(path)}: {primary_name} {_show(a)}, {shadow_name} {_show(b)}")
    elif bytes(primary.body) != bytes(shadow.body):
        text_a = primary.body.decode("utf-8", "replace").splitlines()
        text_b = shadow.body.decode("utf-8", "replace").splitlines()
        diff = difflib.unified_diff(text_a, text_b, primary_name, shadow_name, lineterm="", n=1)
        out.append("body differs:\n" + "\n".join(list(diff)[:40]))
    return out


def noise_paths(first: Captured, second: Captured) -> tuple[JsonPath, ...]:
    """JSON paths whose values differ between two answers of the same backend."""
    left, right = _parse_json(first), _parse_json(second)
    if left is _MISSING or right is _MISSING:
        return ()
    return tuple(path for path, _, _ in json_differences(left, right))


# --- running the copy ----------------------------------------------------------


async def call(app: ASGIApp, scope: Scope, body: bytes, timeout: float) -> Captured:
    """Send a recorded request to an ASGI app (any backend) and capture its answer."""
    captured = Captured()
    done = asyncio.Event()
    sent_body = False

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # no disconnect until the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        captured.add(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    try:
        await asyncio.wait_for(app(dict(scope), receive, send), timeout)
    finally:
        done.set()
    return captured


@dataclass(eq=False, slots=True)
class Shadower:
    """The shadow policy of one route, bound when its table is built to the running
    backends of both sides and to the process's runner."""

    route_id: str
    spec: ShadowSpec
    backend: ASGIApp
    backend_name: str
    primary: ASGIApp
    primary_name: str
    stats: ShadowStats
    count: dict[str, Counter] | None  # label children by result, or None with metrics off
    unsafe: bool
    runner: ShadowRunner
    fraction: float = field(init=False)

    def __post_init__(self) -> None:
        self.fraction = self.spec.percent / 100.0

    def wants(self, method: str, chance: float) -> bool:
        return (self.unsafe or method in SAFE_METHODS) and chance < self.fraction

    def submit(self, scope: Scope, body: bytes | None, primary: Captured) -> None:
        """Compare, in the background, the primary's answer with the shadow's."""
        self.runner.submit(self, scope, body, primary)

    def result(self, result: str) -> None:
        self.stats.counts[result] += 1
        if self.count is not None:
            self.count[result].inc()


class ShadowRunner:
    """Runs shadow copies in the background for one gateway process."""

    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self.max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(
        self, shadower: Shadower, scope: Scope, body: bytes | None, primary: Captured
    ) -> None:
        overflow = primary.overflow and _has_body(scope)
        if body is None or overflow or len(self._tasks) >= self.max_in_flight:
            shadower.result("dropped")
            return
        task = asyncio.create_task(self._run(shadower, scope, body, primary))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, shadower: Shadower, scope: Scope, body: bytes, primary: Captured) -> None:
        spec = shadower.spec
        primary_name = shadower.primary_name
        copy = dict(scope)
        copy["headers"] = [*scope["headers"], (b"x-gateway-shadow", b"1")]
        try:
            calls = [call(shadower.backend, copy, body, spec.timeout)]
            if spec.calibrate:
                calls.append(call(shadower.primary, copy, body, spec.timeout))
            answers = await asyncio.gather(*calls)
        except Exception as exc:  # a timeout included: the shadow never affects the client
            shadower.result("error")
            log.debug("shadow failed: route=%s error=%r", shadower.route_id, exc)
            return
        shadow = answers[0]
        bodies = _has_body(scope)
        if shadow.overflow and bodies:
            shadower.result("dropped")
            return
        ignore = spec.ignore
        if spec.calibrate:
            ignore = ignore + noise_paths(primary, answers[1])
        differences = compare(primary, shadow, ignore, primary_name, shadower.backend_name, bodies)
        if not differences:
            shadower.result("match")
            return
        shadower.result("mismatch")
        request = f"{scope['method']} {scope['path']}"
        if scope.get("query_string"):
            request += "?" + scope["query_string"].decode("latin-1")
        shadower.stats.mismatches.append(
            {
                "at": time.time(),
                "request": request,
                "request_id": _request_id(scope),
                "primary": {"backend": primary_name, "status": primary.status},
                "shadow": {"backend": shadower.backend_name, "status": shadow.status},
                "differences": differences,
            }
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _has_body(scope: Scope) -> bool:
    """Whether the answer to this request has a body for the client to see."""
    return bool(scope["method"] != "HEAD")


def _request_id(scope: Scope) -> str:
    """The id the request path put in the scope (the client's own, or the gateway's)."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID:
            return bytes(value).decode("latin-1")
    return ""
