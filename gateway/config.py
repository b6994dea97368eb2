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
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

if TYPE_CHECKING:
    from gateway.policy import CanarySpec, RollbackSpec, ShadowSpec


BackendKind = Literal["wsgi", "asgi", "url"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("wsgi", "asgi", "url")
DEFAULT_ROUTE_ID = "_default"
HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


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
    except RecursionError:
        raise ConfigError([Problem(Position(source, 1, 1), _TOO_DEEP)]) from None
    from gateway.checking import Checker  # the checker builds on this module's types

    checker = Checker(source)
    try:
        config = checker.config(root)
    except RecursionError:
        raise ConfigError([Problem(Position(source, 1, 1), _TOO_DEEP)]) from None
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


_TOO_DEEP = "the file is nested too deeply to be a route table"


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


def hint(value: str, choices: Iterable[str]) -> str:
    options = sorted(choices)
    close = difflib.get_close_matches(value, options, n=1)
    return f"did you mean {close[0]!r}?" if close else f"use one of: {', '.join(options)}"
