"""The route file's value objects: what a validated `routes.yaml` says, frozen.

    GatewayConfig            the whole file
    ├── BackendSpec          one backend: one kind, one target, its time limits (and for a
    │   │                    url backend the Host it sends and its OpenAPI document)
    │   └── TLSSpec          how a url backend checks the upstream's certificate, and its own
    └── RouteSpec            one route: id, path template, methods, backend, the prefix
        │                    its backends are mounted under, and its
        ├── CanarySpec       migration policies (canary, shadow, fallback, rollback)
        ├── ShadowSpec
        └── RollbackSpec

Everything here is immutable and hashable, built only by `gateway.routefile.checking`
from a file that passed every check. `ConfigError` carries every `Problem` found,
each with its `Position` in the file. This module imports nothing of the gateway's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

BackendKind = Literal["wsgi", "asgi", "url"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("wsgi", "asgi", "url")
DEFAULT_ROUTE_ID = "_default"
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
# What a shadow copies unless the route says `unsafe: true` (RFC 9110's safe methods
# but TRACE, which echoes the request back: nothing to compare).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a fallback may send a second time (RFC 9110 section 9.2.2).
IDEMPOTENT_METHODS = SAFE_METHODS | {"TRACE", "PUT", "DELETE"}
# Seconds to the first byte of an answer, for every kind of backend: an in-process
# handler that hangs holds its client as surely as a remote one that never answers.
DEFAULT_TIMEOUT = 30.0


def seconds(own: float | None, inherited: float | None) -> float | None:
    """A time limit as it applies: `own` when set (0: no limit), else `inherited`;
    None means no limit."""
    if own is None:
        return inherited
    return own or None


@dataclass(frozen=True, slots=True)
class Position:
    """Where something stands in a file (1-based line and column)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a config file, and what to do about it."""

    where: Position
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ConfigError(Exception):
    """A config file was rejected. `problems` lists every reason, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.where.line, p.where.column))
        super().__init__("\n".join(str(p) for p in self.problems))

    def report(self, source: str, undone: str) -> str:
        """What the CLI prints: the problems, one a line, then their count and what was
        not done ("applied", "pushed")."""
        count = len(self.problems)
        plural = "s" if count != 1 else ""
        return f"{self}\n{source}: {count} problem{plural}; nothing was {undone}"

    @classmethod
    def unreadable(cls, source: str, exc: OSError) -> ConfigError:
        """The file (or store) could not be read at all."""
        reason = exc.strerror or str(exc)
        return cls([Problem(Position(source, 1, 1), f"cannot read the file: {reason}")])


# What a url backend sends as `Host`: the client's (as Traefik and Envoy do, so that the
# URLs, redirects and cookies an upstream makes name the gateway), the upstream URL's, or
# any other value written in the file.
HOST_PRESERVE = "preserve"
HOST_UPSTREAM = "upstream"


@dataclass(frozen=True, slots=True)
class TLSSpec:
    """An https upstream's TLS: verified against the system's CAs unless `ca` names a
    bundle (or `verify` is off); `cert` (and `key`, unless in the same file) for mTLS.
    Paths are absolute, resolved against the route file's directory."""

    verify: bool = True
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A backend as configured: one kind, one target, and its options."""

    name: str
    kind: BackendKind
    target: str  # import path "module:attr" for wsgi/asgi, base URL for url
    timeout: float | None = None  # None: DEFAULT_TIMEOUT; 0: no limit
    read_timeout: float | None = None  # None or 0: no limit
    host: str = HOST_PRESERVE  # url backends: the Host sent upstream
    tls: TLSSpec = TLSSpec()  # url backends with an https URL
    # url backends only: where its OpenAPI document is (a path on it, or a file); read
    # by the inventory, never by the request path, so not part of the identity
    openapi: str | None = None
    # Shared login (gateway.session): the wsgi backend whose Flask session this one sees,
    # and for a url backend the request/response header that carries it.
    session_from: str | None = None
    session_header: str | None = None
    max_body: int | None = None  # bytes; None: the gateway's --max-body; 0: no limit
    threads: int | None = None  # a WSGI backend's pool; None: the gateway's --wsgi-threads
    where: Position | None = field(default=None, compare=False)

    @property
    def time_limit(self) -> float | None:
        """Seconds to the first byte of an answer, or None for no limit."""
        return seconds(self.timeout, DEFAULT_TIMEOUT)

    @property
    def identity(self) -> tuple[object, ...]:
        """What makes two specs the same running backend (the name is only a label;
        the session keys and time limits too: they are applied per route table, not
        by the backend)."""
        return (self.kind, self.target, self.threads, self.host, self.tls)


StickyKind = Literal["header", "cookie", "client_ip"]


@dataclass(frozen=True, slots=True)
class Sticky:
    kind: StickyKind
    name: str = ""  # header name (lower case) or cookie name

    def __str__(self) -> str:
        return self.kind if self.kind == "client_ip" else f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class CanarySpec:
    backend: str
    percent: float
    sticky: Sticky | None = None


JsonPath = tuple[str | int, ...]  # "*" matches any key or index


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    backend: str
    percent: float = 100.0
    ignore: tuple[JsonPath, ...] = ()
    calibrate: bool = False
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class RollbackSpec:
    error_ratio: float
    window: float
    min_requests: int


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A route as configured."""

    id: str
    path: str
    backend: str
    methods: tuple[str, ...] | None = None  # None: every method
    canary: CanarySpec | None = None
    shadow: ShadowSpec | None = None
    unsafe: bool = False  # shadow non-idempotent methods too
    fallback: str | None = None
    rollback: RollbackSpec | None = None
    max_body: int | None = None  # bytes; None: its backend's, else the gateway's; 0: no limit
    # Seconds, for whichever backend serves the route; None: the backend's; 0: no limit
    timeout: float | None = None
    read_timeout: float | None = None
    # Where the route's backends are mounted (gateway.prefix): they see the path after it.
    strip_prefix: str | None = None
    where: Position | None = field(default=None, compare=False)

    def view(self) -> dict[str, Any]:
        """The route as JSON (admin API, `gateway routes --json`): the four basic keys
        always, the migration policies when set."""
        view: dict[str, Any] = {
            "id": self.id,
            "path": self.path,
            "methods": list(self.methods) if self.methods else None,
            "backend": self.backend,
        }
        if self.strip_prefix is not None:
            view["strip_prefix"] = self.strip_prefix
        if self.canary is not None:
            c = self.canary
            sticky = str(c.sticky) if c.sticky else None
            view["canary"] = {"backend": c.backend, "percent": c.percent, "sticky": sticky}
        if self.shadow is not None:
            s = self.shadow
            view["shadow"] = {"backend": s.backend, "percent": s.percent, "calibrate": s.calibrate}
        if self.fallback is not None:
            view["fallback"] = self.fallback
        for key in ("max_body", "timeout", "read_timeout"):
            if (value := getattr(self, key)) is not None:
                view[key] = value
        if self.rollback is not None:
            r = self.rollback
            view["rollback"] = {
                "error_ratio": r.error_ratio,
                "window": r.window,
                "min_requests": r.min_requests,
            }
        return view


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """A whole validated route table file."""

    version: int
    backends: tuple[BackendSpec, ...]
    default: str | None
    routes: tuple[RouteSpec, ...]
    source: str = ""
    sha256: str = ""

    def backend(self, name: str) -> BackendSpec:
        for spec in self.backends:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def route(self, route_id: str) -> RouteSpec:
        for route in self.routes:
            if route.id == route_id:
                return route
        raise KeyError(route_id)

    def view(self) -> dict[str, Any]:
        """The table as JSON: default, backends and routes."""
        return {
            "default": self.default,
            "backends": {b.name: {"kind": b.kind, "target": b.target} for b in self.backends},
            "routes": [r.view() for r in self.routes],
        }
