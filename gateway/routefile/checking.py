"""Checking a route file's YAML node tree, collecting every problem with its position.

`Checker` walks the tree PyYAML composes (``yaml.compose``), so each problem
points at the key or value an operator has to change, and it goes on after a
problem instead of stopping, so that one run of `gateway check` lists them
all. It builds the value objects of `gateway.routefile.model`; the migration
policy keys are checked by `gateway.routefile.policy_rules`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import yaml

from gateway.matching import TemplateError, parse_template
from gateway.paths import ReservedPaths
from gateway.routefile.model import (
    BACKEND_KINDS,
    DEFAULT_ROUTE_ID,
    HTTP_METHODS,
    BackendSpec,
    Position,
    RouteSpec,
)
from gateway.routefile.nodes import NodeReader, hint
from gateway.routefile.policy_rules import POLICY_KEYS, PolicyChecker
from gateway.routefile.prefix_rules import strip_prefix
from gateway.routefile.session_rules import SESSION_KEYS, SessionRules
from gateway.routefile.upstream_rules import UPSTREAM_KEYS, UpstreamChecker

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
MAX_TIMEOUT = 3600.0  # seconds: a time limit past an hour is a mistake (or .inf)
_TIME_KEYS = ("timeout", "read_timeout")  # on a backend, and on a route (which wins)
# "module:attr", or "module:attr()" for a factory (gunicorn's syntax)
_IMPORT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*(?:\(\))?$")
_TOP_KEYS = ("version", "backends", "default", "routes")
MAX_THREADS = 1024  # per WSGI backend and worker
MAX_BODY = 2**40  # bytes: 0 already says "no limit"
_BACKEND_KEYS = (
    *BACKEND_KINDS,
    *_TIME_KEYS,
    "openapi",
    "max_body",
    "threads",
    *SESSION_KEYS,
    *UPSTREAM_KEYS,
)
_ROUTE_KEYS = (
    "id",
    "path",
    "strip_prefix",
    "methods",
    "backend",
    "max_body",
    *_TIME_KEYS,
    *POLICY_KEYS,
)


@dataclass(slots=True)
class _Partial:
    version: int
    backends: tuple[BackendSpec, ...]
    default: str | None
    routes: tuple[RouteSpec, ...]


class Checker(NodeReader):
    """Walks a route file's node tree into config objects, collecting every problem."""

    def __init__(self, source: str, reserved: ReservedPaths | None = None) -> None:
        super().__init__(source)
        self.reserved = reserved or ReservedPaths()

    def config(self, root: yaml.Node | None) -> _Partial | None:
        if root is None:
            self.problem(None, "the file is empty; it needs at least 'version: 1' and 'backends'")
            return None
        top = self.mapping(root, "the file", _TOP_KEYS)
        if top is None:
            return None
        version = 1
        if "version" not in top:
            self.problem(root, "missing 'version'; add 'version: 1' at the top")
        else:
            value = self.scalar(top["version"][1])
            if value != 1 or isinstance(value, bool):
                self.problem(top["version"][1], f"unsupported version {value!r}; use 'version: 1'")
        backends, names = self.backends(top.get("backends"), root)
        default: str | None = None
        if "default" in top:
            node = top["default"][1]
            if self.scalar(node) is not None:
                default = self.string(node, "'default'")
                if default is not None and names and default not in names:
                    advice = hint(default, names)
                    self.problem(node, f"unknown default backend {default!r}; {advice}")
        routes = self.routes(top.get("routes"), names)
        return _Partial(version, tuple(backends), default, routes)

    def backends(
        self, entry: tuple[yaml.Node, yaml.Node] | None, root: yaml.Node
    ) -> tuple[list[BackendSpec], set[str]]:
        """The valid backend specs, and every declared name (valid or not)."""
        if entry is None:
            self.problem(root, "missing 'backends'; declare at least one backend")
            return [], set()
        entries = self.mapping(entry[1], "'backends'", ())
        if entries is None:
            return [], set()
        if not entries:
            self.problem(entry[1], "'backends' is empty; declare at least one backend")
        specs = []
        sessions = SessionRules(self)
        for name, (key_node, node) in entries.items():
            spec = self.backend(name, key_node, node, sessions)
            if spec is not None:
                specs.append(spec)
        return sessions.sources(specs, set(entries)), set(entries)

    def backend(
        self, name: str, key_node: yaml.Node, node: yaml.Node, sessions: SessionRules
    ) -> BackendSpec | None:
        what = f"backend {name!r}"
        if not _ID_RE.match(name):
            self.problem(key_node, f"{what}: names use letters, digits and _ . : - only")
        entries = self.mapping(node, what, _BACKEND_KEYS)
        if entries is None:
            return None
        kinds = [k for k in BACKEND_KINDS if k in entries]
        if len(kinds) != 1:
            found = " and ".join(repr(k) for k in kinds) if kinds else "none"
            self.problem(
                node,
                f"{what} must have exactly one of 'wsgi', 'asgi' or 'url' (found {found})",
            )
            return None
        kind = kinds[0]
        value_node = entries[kind][1]
        target = self.string(value_node, f"{what}: {kind!r}")
        host, tls = UpstreamChecker(self, what).check(entries, kind, target)
        if target is None:
            return None
        if kind == "url":
            url_error = _check_url(target)
            if url_error:
                self.problem(value_node, f"{what}: {url_error}")
                return None
            target = target.rstrip("/")
        elif not _IMPORT_RE.match(target):
            self.problem(
                value_node,
                f"{what}: {target!r} is not an import path; write it as 'package.module:app' "
                "(or 'package.module:create_app()' for a factory)",
            )
            return None
        timeout, read_timeout = self.time_limits(entries, what)
        threads = None
        if "threads" in entries:
            if kind == "wsgi":
                threads = self.integer(entries["threads"][1], f"{what}: 'threads'", 1, MAX_THREADS)
            else:
                self.problem(entries["threads"][0], f"{what}: 'threads' is for wsgi backends only")
        openapi = self.openapi(entries.get("openapi"), what, kind)
        max_body = self.max_body(entries, what)
        session = sessions.keys(name, kind, entries)
        if session is None:
            return None
        session_from, session_header = session
        return BackendSpec(
            name,
            kind,
            target,
            timeout,
            read_timeout,
            host=host,
            tls=tls,
            openapi=openapi,
            max_body=max_body,
            threads=threads,
            session_from=session_from,
            session_header=session_header,
            where=self.at(value_node),
        )

    def time_limits(
        self, entries: dict[str, tuple[yaml.Node, yaml.Node]], what: str
    ) -> tuple[float | None, ...]:
        """`timeout` and `read_timeout` as written (None where absent or invalid)."""
        return tuple(
            self.number(entries[key][1], f"{what}: {key!r} (seconds, 0 for none)", 0, MAX_TIMEOUT)
            if key in entries
            else None
            for key in _TIME_KEYS
        )

    def max_body(self, entries: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> int | None:
        if "max_body" not in entries:
            return None
        return self.integer(
            entries["max_body"][1], f"{what}: 'max_body' (bytes, 0 for none)", 0, MAX_BODY
        )

    def openapi(
        self, entry: tuple[yaml.Node, yaml.Node] | None, what: str, kind: str
    ) -> str | None:
        """Where a url backend's OpenAPI document is, for `gateway inventory`."""
        if entry is None:
            return None
        if kind != "url":
            self.problem(
                entry[0],
                f"{what}: 'openapi' is for url backends; the routes of an in-process app "
                "are read from the app itself",
            )
            return None
        return self.string(entry[1], f"{what}: 'openapi' (a path such as /openapi.json, or a file)")

    def routes(
        self, entry: tuple[yaml.Node, yaml.Node] | None, backends: set[str]
    ) -> tuple[RouteSpec, ...]:
        if entry is None:
            return ()
        node = entry[1]
        if isinstance(node, yaml.ScalarNode) and self.scalar(node) is None:
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, "'routes' must be a list of routes (each item starts with '- ')")
            return ()
        routes: list[RouteSpec] = []
        seen: dict[str, Position] = {}
        for index, item in enumerate(node.value):
            route = self.route(index, item, backends)
            # Ids are compared whether or not the rest of the route is valid: every
            # problem of a route is reported at once.
            id_node = _id_node(item)
            route_id = self.scalar(id_node) if id_node is not None else None
            if id_node is not None and isinstance(route_id, str) and route_id.strip():
                route_id = route_id.strip()
                if route_id in seen:
                    self.problem(
                        id_node,
                        f"route id {route_id!r} is already used at line {seen[route_id].line}; "
                        "give each route its own id",
                    )
                    continue
                seen[route_id] = self.at(id_node)
            if route is not None:
                routes.append(route)
        self.conflicts(routes)
        return tuple(routes)

    def route(self, index: int, node: yaml.Node, backends: set[str]) -> RouteSpec | None:
        what = f"route #{index + 1}"
        if isinstance(node, yaml.MappingNode):  # name the route by its id where it has one
            for key_node, value_node in node.value:
                value = self.scalar(value_node) if self.scalar(key_node) == "id" else None
                if isinstance(value, str) and value.strip():
                    what = f"route {value.strip()!r}"
        entries = self.mapping(node, what, _ROUTE_KEYS)
        if entries is None:
            return None
        route_id = self.required(
            entries, "id", node, what, "add a unique name such as 'books.list'"
        )
        if route_id is not None and (route_id == DEFAULT_ROUTE_ID or not _ID_RE.match(route_id)):
            self.problem(
                entries["id"][1],
                f"{what}: ids use letters, digits and _ . : - and cannot be {DEFAULT_ROUTE_ID!r}",
            )
            route_id = None
        path = self.required(entries, "path", node, what, "add one such as '/books/{book_id}'")
        template = None
        if path is not None:
            try:
                template = parse_template(path)
            except TemplateError as exc:
                self.problem(entries["path"][1], f"{what}: {exc}")
                path = None
            else:
                if (reserved := self.reserved.template_problem(path)) is not None:
                    self.problem(entries["path"][1], f"{what}: {reserved}")
                    path = None
        prefix_ok, prefix = strip_prefix(self, entries.get("strip_prefix"), what, template)
        backend = self.required(entries, "backend", node, what, "name one of the declared backends")
        known = backend is not None and (not backends or backend in backends)
        if backend is not None and not known:
            self.problem(
                entries["backend"][1],
                f"{what}: unknown backend {backend!r}; {hint(backend, backends)}",
            )
        methods_ok, methods = self.methods(entries.get("methods"), what)
        max_body = self.max_body(entries, what)
        timeout, read_timeout = self.time_limits(entries, what)
        # A limit written but invalid (reported) leaves the route out, as any bad key does.
        written = {"max_body": max_body, "timeout": timeout, "read_timeout": read_timeout}
        limits_ok = all(key not in entries or value is not None for key, value in written.items())
        policies_ok, policies = PolicyChecker(self, what, backends).check(entries)
        if route_id is None or path is None or backend is None:
            return None
        if not (known and methods_ok and policies_ok and limits_ok and prefix_ok):
            return None
        return RouteSpec(
            route_id,
            path,
            backend,
            methods,
            **policies,
            max_body=max_body,
            timeout=timeout,
            read_timeout=read_timeout,
            strip_prefix=prefix,
            where=self.at(entries["id"][1]),
        )

    def required(
        self,
        entries: dict[str, tuple[yaml.Node, yaml.Node]],
        key: str,
        node: yaml.Node,
        what: str,
        advice: str,
    ) -> str | None:
        """The non-empty string under `key`, or None once its absence or type is reported."""
        if key not in entries:
            self.problem(node, f"{what} has no {key!r}; {advice}")
            return None
        return self.string(entries[key][1], f"{what}: {key!r}")

    def methods(
        self, entry: tuple[yaml.Node, yaml.Node] | None, what: str
    ) -> tuple[bool, tuple[str, ...] | None]:
        """(valid, methods); methods None means every method."""
        if entry is None:
            return True, None
        node = entry[1]
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, f"{what}: 'methods' must be a non-empty list such as [GET, HEAD]")
            return False, None
        methods: list[str] = []
        for item in node.value:
            value = self.scalar(item)
            if not isinstance(value, str):
                self.problem(item, f"{what}: 'methods' lists names such as GET (got {value!r})")
                return False, None
            method = value.upper()
            if method not in HTTP_METHODS:
                advice = hint(method, HTTP_METHODS)
                self.problem(item, f"{what}: unknown HTTP method {value!r}; {advice}")
                return False, None
            if method in methods:
                self.problem(item, f"{what}: method {method} is listed twice")
                return False, None
            methods.append(method)
        return True, tuple(methods)

    def conflicts(self, routes: list[RouteSpec]) -> None:
        """Two routes may not claim the same path shape and method."""
        claims: dict[tuple[tuple[str, ...], str | None], RouteSpec] = {}
        for route in routes:
            shape = parse_template(route.path).shape
            for method in route.methods or (None,):
                other = claims.get((shape, method))
                if other is not None:
                    claim = f"{method} {route.path}" if method else f"every method on {route.path}"
                    self.problem(
                        route.where,
                        f"route {route.id!r} claims {claim}, already claimed by route "
                        f"{other.id!r} (line {other.where.line if other.where else '?'}); "
                        "remove one or give them different methods",
                    )
                    break
                claims[(shape, method)] = route


def _id_node(item: yaml.Node) -> yaml.Node | None:
    """The value node of a route's 'id', if the route is a mapping that has one."""
    if isinstance(item, yaml.MappingNode):
        for key_node, value_node in item.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "id":
                node: yaml.Node = value_node
                return node
    return None


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Its password is not repeated in the message: check's output is shared.
        shown = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        return (
            f"{shown!r} with a user or password: the gateway sends no credentials of its "
            "own upstream (each client's Authorization header reaches it as sent); "
            "remove the 'user:password@' part"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL with a host"
    if parts.query or parts.fragment:
        return f"{url!r}: a backend URL takes no query string or fragment"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{url!r} has an invalid port"
    return None
