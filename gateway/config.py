"""Loading and validating `routes.yaml` into frozen config objects.

This module owns the file format. It turns YAML text into a `GatewayConfig`
(immutable, hashable) or raises `ConfigError` carrying *every* problem found,
each with file, line and column and a plain-words fix. Nothing here imports
backends or touches the running gateway: the reloader, the CLI and the admin
API all call `load_config()` and only act on a config that came back whole.

Positions come from PyYAML's node tree (``yaml.compose``), so a problem points
at the key or value an operator has to change, not at the start of the file.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from gateway.matching import TemplateError, parse_template
from gateway.policy import POLICY_KEYS, CanarySpec, PolicyChecker, RollbackSpec, ShadowSpec

BackendKind = Literal["wsgi", "asgi", "url"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("wsgi", "asgi", "url")
DEFAULT_ROUTE_ID = "_default"
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_IMPORT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


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


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """A backend as configured: one kind, one target, and its options."""

    name: str
    kind: BackendKind
    target: str  # import path "module:attr" for wsgi/asgi, base URL for url
    timeout: float | None = None
    where: Position | None = field(default=None, compare=False)

    @property
    def identity(self) -> tuple[str, str, float | None]:
        """What makes two specs the same running backend (the name is only a label)."""
        return (self.kind, self.target, self.timeout)


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
    where: Position | None = field(default=None, compare=False)


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


# --- reading -----------------------------------------------------------------


def load_config(path: str | Path, *, resolve_imports: bool = True) -> GatewayConfig:
    """Read, parse and validate a config file; raise `ConfigError` listing every problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(
            [Problem(Position(str(path), 1, 1), f"cannot read the file: {reason}")]
        ) from None
    return parse_config(data, str(path), resolve_imports=resolve_imports)


def parse_config(
    data: bytes | str, source: str = "<string>", *, resolve_imports: bool = True
) -> GatewayConfig:
    """Validate config text. `source` names the file in problem reports."""
    raw = data.encode() if isinstance(data, str) else data
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(Position(source, 1, 1), f"the file is not UTF-8 text ({exc.reason})")]
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            [Problem(Position(source, line, col), f"invalid YAML: {what}; fix the syntax")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(Position(source, 1, 1), f"invalid YAML: {exc}")]) from None
    checker = _Checker(source)
    config = checker.config(root)
    if resolve_imports and config is not None:
        for spec in config.backends:
            if spec.kind != "url":
                error = check_import(spec.target)
                if error:
                    checker.problem(spec.where, error)
    if checker.problems or config is None:
        raise ConfigError(checker.problems)
    return GatewayConfig(
        version=config.version,
        backends=config.backends,
        default=config.default,
        routes=config.routes,
        source=source,
        sha256=digest,
    )


def import_target(target: str) -> Any:
    """Import "module:attr.attr" and return the object (raises on failure)."""
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def check_import(target: str) -> str | None:
    """Say in plain words why `target` cannot be imported, or None if it can."""
    module_name, _, attr_path = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        return (
            f"cannot import {target!r}: module {exc.name!r} not found; "
            "check the module path and that the package is installed"
        )
    except Exception as exc:
        return f"cannot import {target!r}: importing {module_name!r} raised {exc!r}"
    obj: Any = module
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            return f"cannot import {target!r}: {module_name!r} has no attribute {attr_path!r}"
        obj = getattr(obj, attr)
    if not callable(obj):
        return f"{target!r} is not an application (it is not callable)"
    return None


# --- checking ----------------------------------------------------------------

_TOP_KEYS = ("version", "backends", "default", "routes")
_BACKEND_KEYS = (*BACKEND_KINDS, "timeout")
_ROUTE_KEYS = ("id", "path", "methods", "backend", *POLICY_KEYS)
_SAFE = yaml.SafeLoader("")


@dataclass(slots=True)
class _Partial:
    version: int
    backends: tuple[BackendSpec, ...]
    default: str | None
    routes: tuple[RouteSpec, ...]


class _Checker:
    """Walks the YAML node tree, collecting every problem instead of stopping at one."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []

    def at(self, node: yaml.Node) -> Position:
        return Position(self.source, node.start_mark.line + 1, node.start_mark.column + 1)

    def problem(self, where: yaml.Node | Position | None, message: str) -> None:
        if isinstance(where, yaml.Node):
            where = self.at(where)
        self.problems.append(Problem(where or Position(self.source, 1, 1), message))

    def mapping(
        self, node: yaml.Node, what: str, known: tuple[str, ...]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        """A mapping's entries by key, reporting unknown and repeated keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping of keys to values")
            return None
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                self.problem(key_node, f"keys in {what} must be strings")
                continue
            if key in entries:
                self.problem(key_node, f"{key!r} is repeated in {what}; keep only one")
                continue
            if known and key not in known:
                self.problem(key_node, f"unknown key {key!r} in {what}; {_hint(key, known)}")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _NOT_SCALAR
        return _SAFE.construct_object(node, deep=True)

    def string(self, node: yaml.Node, what: str) -> str | None:
        value = self.scalar(node)
        if not isinstance(value, str) or not value.strip():
            self.problem(node, f"{what} must be a non-empty string")
            return None
        return value.strip()

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
                    hint = _hint(default, names)
                    self.problem(node, f"unknown default backend {default!r}; {hint}")
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
        for name, (key_node, node) in entries.items():
            spec = self.backend(name, key_node, node)
            if spec is not None:
                specs.append(spec)
        return specs, set(entries)

    def backend(self, name: str, key_node: yaml.Node, node: yaml.Node) -> BackendSpec | None:
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
                f"{what}: {target!r} is not an import path; write it as 'package.module:app'",
            )
            return None
        timeout = None
        if "timeout" in entries:
            tnode = entries["timeout"][1]
            value = self.scalar(tnode)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                self.problem(tnode, f"{what}: 'timeout' must be a number of seconds above 0")
            else:
                timeout = float(value)
        return BackendSpec(name, kind, target, timeout, where=self.at(value_node))

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
            if route is None:
                continue
            if route.id in seen:
                self.problem(
                    route.where,
                    f"route id {route.id!r} is already used at line {seen[route.id].line}; "
                    "give each route its own id",
                )
                continue
            seen[route.id] = route.where or self.at(item)
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
        ok = True
        route_id = None
        if "id" not in entries:
            self.problem(node, f"{what} has no 'id'; add a unique name such as 'books.list'")
            ok = False
        else:
            id_node = entries["id"][1]
            route_id = self.string(id_node, f"{what}: 'id'")
            if route_id is not None:
                what = f"route {route_id!r}"
                if route_id == DEFAULT_ROUTE_ID or not _ID_RE.match(route_id):
                    self.problem(
                        id_node,
                        f"{what}: ids use letters, digits and _ . : - and cannot be "
                        f"{DEFAULT_ROUTE_ID!r}",
                    )
                    ok = False
            else:
                ok = False
        path = None
        if "path" not in entries:
            self.problem(node, f"{what} has no 'path'; add one such as '/books/{{book_id}}'")
            ok = False
        else:
            path_node = entries["path"][1]
            path = self.string(path_node, f"{what}: 'path'")
            if path is not None:
                try:
                    parse_template(path)
                except TemplateError as exc:
                    self.problem(path_node, f"{what}: {exc}")
                    ok = False
            else:
                ok = False
        backend = None
        if "backend" not in entries:
            self.problem(node, f"{what} has no 'backend'; name one of the declared backends")
            ok = False
        else:
            backend_node = entries["backend"][1]
            backend = self.string(backend_node, f"{what}: 'backend'")
            if backend is not None and backends and backend not in backends:
                self.problem(
                    backend_node, f"{what}: unknown backend {backend!r}; {_hint(backend, backends)}"
                )
                ok = False
        methods_ok, methods = self.methods(entries.get("methods"), what)
        policies_ok, policies = self.policies(entries, what, backend, backends)
        if not (ok and methods_ok and policies_ok):
            return None
        if route_id is None or path is None or backend is None:
            return None
        return RouteSpec(
            route_id, path, backend, methods, **policies, where=self.at(entries["id"][1])
        )

    def policies(
        self,
        entries: dict[str, tuple[yaml.Node, yaml.Node]],
        what: str,
        backend: str | None,
        backends: set[str],
    ) -> tuple[bool, dict[str, Any]]:
        """The safe-migration keys (see gateway.policy), validated."""
        check = PolicyChecker(self, what, backend, backends)
        ok = True
        found: dict[str, Any] = {}
        for key, parse in (
            ("canary", check.canary),
            ("shadow", check.shadow),
            ("rollback", check.rollback),
        ):
            if key in entries:
                valid, found[key] = parse(entries[key][1])
                ok = ok and valid
        if "unsafe" in entries:
            node = entries["unsafe"][1]
            flag = self.scalar(node)
            if not isinstance(flag, bool):
                self.problem(node, f"{what}: 'unsafe' must be true or false")
                ok = False
            else:
                found["unsafe"] = flag
        if "fallback" in entries:
            found["fallback"] = check.backend_name(entries["fallback"][1], "fallback")
            ok = ok and found["fallback"] is not None
        if "rollback" in entries and "fallback" not in entries:
            self.problem(
                entries["rollback"][0],
                f"{what}: 'rollback' flips the route to its fallback, so it needs 'fallback'",
            )
            ok = False
        return ok, found

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
            method = value.upper() if isinstance(value, str) else None
            if method not in HTTP_METHODS:
                hint = _hint(str(value).upper(), HTTP_METHODS)
                self.problem(item, f"{what}: unknown HTTP method {value!r}; {hint}")
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


_NOT_SCALAR = object()


def _hint(value: str, choices: Iterable[str]) -> str:
    options = sorted(choices)
    close = difflib.get_close_matches(value, options, n=1)
    return f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(options)}"


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} is not an http:// or https:// URL with a host"
    if parts.query or parts.fragment:
        return f"{url!r}: a backend URL takes no query string or fragment"
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{url!r} has an invalid port"
    return None
