"""Safe-migration policies of a route, as configured: canary, shadow, fallback, rollback.

    - id: books.get
      path: /books/{book_id}
      backend: legacy
      canary:   {backend: new, percent: 10, sticky: "header:X-User-Id"}
      shadow:   {backend: new, percent: 100, ignore: ["$.updated_at"], calibrate: true}
      unsafe:   false           # shadow POST/PUT/... too (both sides share one database!)
      fallback: legacy          # replay a failed idempotent request here, once
      rollback: {error_ratio: 0.05, window: 60, min_requests: 20}

This module owns the value objects and their validation (called by the config
checker, so problems carry file:line:column like every other). What the
policies do at request time lives in `gateway.canary`, `gateway.shadow` and
`gateway.rollback`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import yaml

from gateway.config import hint

if TYPE_CHECKING:
    from gateway.checking import Checker

StickyKind = Literal["header", "cookie", "client_ip"]
_STICKY = re.compile(r"^(header|cookie):([!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
_JSON_PATH_STEP = re.compile(r"\.([A-Za-z_][\w-]*|\*)|\[(\d+|\*)\]")


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


POLICY_KEYS = ("canary", "shadow", "unsafe", "fallback", "rollback")
_CANARY_KEYS = ("backend", "percent", "sticky")
_SHADOW_KEYS = ("backend", "percent", "ignore", "calibrate", "timeout")
_ROLLBACK_KEYS = ("error_ratio", "window", "min_requests")


def parse_json_path(text: str) -> JsonPath:
    """`$.a.b`, `$.items[0].id`, `$.items[*].updated_at` -> ("a", "b") etc."""
    if not text.startswith("$"):
        raise ValueError("a JSON path starts with '$', as in '$.updated_at'")
    steps: list[str | int] = []
    rest = text[1:]
    while rest:
        m = _JSON_PATH_STEP.match(rest)
        if m is None:
            raise ValueError(f"cannot read {rest!r}; write steps as .name, .*, [index] or [*]")
        key, index = m.group(1), m.group(2)
        if key is not None:
            steps.append(key)
        else:
            steps.append("*" if index == "*" else int(index))
        rest = rest[m.end() :]
    if not steps:
        raise ValueError("'$' alone would ignore the whole body")
    return tuple(steps)


class PolicyChecker:
    """Validates the policy keys of one route, reporting through the config checker."""

    def __init__(self, checker: Checker, what: str, backend: str | None, names: set[str]):
        self.c = checker
        self.what = what
        self.backend = backend
        self.names = names

    def backend_name(self, node: yaml.Node, key: str) -> str | None:
        name = self.c.string(node, f"{self.what}: {key!r}")
        if name is None:
            return None
        if self.names and name not in self.names:
            self.c.problem(
                node, f"{self.what}: {key}: unknown backend {name!r}; {hint(name, self.names)}"
            )
            return None
        return name

    def number(
        self, node: yaml.Node, what: str, low: float, high: float, low_open: bool = False
    ) -> float | None:
        return self.c.number(node, f"{self.what}: {what}", low, high, low_open)

    def canary(self, node: yaml.Node) -> tuple[bool, CanarySpec | None]:
        what = f"{self.what}: 'canary'"
        entries = self.c.mapping(node, what, _CANARY_KEYS)
        if entries is None:
            return False, None
        ok = True
        for key in ("backend", "percent"):
            if key not in entries:
                self.c.problem(node, f"{what} needs {key!r}, e.g. {{backend: new, percent: 10}}")
                ok = False
        backend = (
            self.backend_name(entries["backend"][1], "canary") if "backend" in entries else None
        )
        percent = (
            self.number(entries["percent"][1], "canary percent", 0, 100)
            if "percent" in entries
            else None
        )
        sticky = None
        if "sticky" in entries:
            sticky = self.sticky(entries["sticky"][1])
            ok = ok and sticky is not None
        if not ok or backend is None or percent is None:
            return False, None
        return True, CanarySpec(backend, percent, sticky)

    def sticky(self, node: yaml.Node) -> Sticky | None:
        value = self.c.scalar(node)
        if value == "client_ip":
            return Sticky("client_ip")
        m = _STICKY.match(value) if isinstance(value, str) else None
        if m is None:
            self.c.problem(
                node,
                f"{self.what}: canary sticky must be 'header:NAME', "
                f"'cookie:NAME' or 'client_ip' (got {value!r})",
            )
            return None
        kind, name = m.group(1), m.group(2)
        return Sticky("header", name.lower()) if kind == "header" else Sticky("cookie", name)

    def shadow(self, node: yaml.Node) -> tuple[bool, ShadowSpec | None]:
        what = f"{self.what}: 'shadow'"
        entries = self.c.mapping(node, what, _SHADOW_KEYS)
        if entries is None:
            return False, None
        if "backend" not in entries:
            self.c.problem(node, f"{what} needs 'backend', e.g. {{backend: new}}")
            return False, None
        ok = True
        backend = self.backend_name(entries["backend"][1], "shadow")
        values: dict[str, Any] = {}
        if "percent" in entries:
            values["percent"] = self.number(entries["percent"][1], "shadow percent", 0, 100)
            ok = ok and values["percent"] is not None
        if "timeout" in entries:
            values["timeout"] = self.number(
                entries["timeout"][1], "shadow timeout", 0, 300, low_open=True
            )
            ok = ok and values["timeout"] is not None
        if "calibrate" in entries:
            flag = self.c.scalar(entries["calibrate"][1])
            if not isinstance(flag, bool):
                self.c.problem(
                    entries["calibrate"][1], f"{what}: 'calibrate' must be true or false"
                )
                ok = False
            values["calibrate"] = flag
        if "ignore" in entries:
            paths = self.ignore(entries["ignore"][1])
            ok = ok and paths is not None
            values["ignore"] = paths
        if not ok or backend is None:
            return False, None
        return True, ShadowSpec(backend, **values)

    def ignore(self, node: yaml.Node) -> tuple[JsonPath, ...] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.c.problem(
                node,
                f"{self.what}: shadow 'ignore' must be a list of JSON paths "
                "such as ['$.updated_at']",
            )
            return None
        paths = []
        for item in node.value:
            text = self.c.scalar(item)
            try:
                if not isinstance(text, str):
                    raise ValueError("it must be a string such as '$.updated_at'")
                paths.append(parse_json_path(text.strip()))
            except ValueError as exc:
                self.c.problem(item, f"{self.what}: shadow ignore path {text!r}: {exc}")
                return None
        return tuple(paths)

    def rollback(self, node: yaml.Node) -> tuple[bool, RollbackSpec | None]:
        what = f"{self.what}: 'rollback'"
        entries = self.c.mapping(node, what, _ROLLBACK_KEYS)
        if entries is None:
            return False, None
        missing = [k for k in _ROLLBACK_KEYS if k not in entries]
        if missing:
            self.c.problem(
                node,
                f"{what} needs {', '.join(repr(k) for k in missing)}, e.g. "
                "{error_ratio: 0.05, window: 60, min_requests: 20}",
            )
            return False, None
        ratio = self.number(entries["error_ratio"][1], "rollback error_ratio", 0, 1, low_open=True)
        window = self.number(
            entries["window"][1], "rollback window (seconds)", 0, 3600, low_open=True
        )
        count_node = entries["min_requests"][1]
        count = self.c.scalar(count_node)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            self.c.problem(
                count_node,
                f"{self.what}: rollback min_requests must be a whole "
                f"number of at least 1 (got {count!r})",
            )
            return False, None
        if ratio is None or window is None:
            return False, None
        return True, RollbackSpec(ratio, window, count)
