"""Checking a route's migration policy keys (canary, shadow, unsafe, fallback, rollback).

    - id: books.get
      path: /books/{book_id}
      backend: legacy
      canary:   {backend: new, percent: 10, sticky: "header:X-User-Id"}
      shadow:   {backend: new, percent: 100, ignore: ["$.updated_at"], calibrate: true}
      unsafe:   false           # shadow POST/PUT/... too (both sides share one database!)
      fallback: legacy          # replay a failed idempotent request here, once
      rollback: {error_ratio: 0.05, window: 60, min_requests: 20}

Each mapping policy is one row of `SECTIONS`: its spec class, the keys it
requires, an example for the problem that names a missing one, and a rule per
key that reads and bounds the value. What the policies do at request time lives
in `gateway.canary`, `gateway.shadow` and `gateway.rollback`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from gateway.routefile.model import (
    CanarySpec,
    JsonPath,
    RollbackSpec,
    ShadowSpec,
    Sticky,
)
from gateway.routefile.nodes import Entries, NodeReader, hint

POLICY_KEYS = ("canary", "shadow", "unsafe", "fallback", "rollback")
_STICKY = re.compile(r"^(header|cookie):([!#$%&'*+.^_`|~0-9A-Za-z-]+)$")
_JSON_PATH_STEP = re.compile(r"\.([A-Za-z_][\w-]*|\*)|\[(\d+|\*)\]")


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


# A rule reads one key's value; None means it was invalid (and is reported).
Rule = Callable[["PolicyChecker", yaml.Node], Any]


def _backend(label: str) -> Rule:
    return lambda check, node: check.backend_name(node, label)


def _number(label: str, low: float, high: float, low_open: bool = False) -> Rule:
    return lambda check, node: check.reader.number(
        node, f"{check.what}: {label}", low, high, low_open
    )


def _flag(label: str) -> Rule:
    return lambda check, node: check.reader.flag(node, f"{check.what}: {label}")


@dataclass(frozen=True, slots=True)
class Section:
    """A policy written as a mapping: which keys it takes and how each is read."""

    spec: Callable[..., object]
    required: tuple[str, ...]
    example: str
    rules: dict[str, Rule]


SECTIONS: dict[str, Section] = {
    "canary": Section(
        CanarySpec,
        ("backend", "percent"),
        "{backend: new, percent: 10}",
        {
            "backend": _backend("canary"),
            "percent": _number("canary percent", 0, 100),
            "sticky": lambda check, node: check.sticky(node),
        },
    ),
    "shadow": Section(
        ShadowSpec,
        ("backend",),
        "{backend: new}",
        {
            "backend": _backend("shadow"),
            "percent": _number("shadow percent", 0, 100),
            "ignore": lambda check, node: check.ignore(node),
            "calibrate": _flag("'shadow': 'calibrate'"),
            "timeout": _number("shadow timeout", 0, 300, low_open=True),
        },
    ),
    "rollback": Section(
        RollbackSpec,
        ("error_ratio", "window", "min_requests"),
        "{error_ratio: 0.05, window: 60, min_requests: 20}",
        {
            "error_ratio": _number("rollback error_ratio", 0, 1, low_open=True),
            "window": _number("rollback window (seconds)", 0, 3600, low_open=True),
            "min_requests": lambda check, node: check.count(node, "rollback min_requests"),
        },
    ),
}


class PolicyChecker:
    """Validates the policy keys of one route, reporting through the route file's reader."""

    def __init__(self, reader: NodeReader, what: str, names: set[str]) -> None:
        self.reader = reader
        self.what = what  # the route, as problems name it
        self.names = names  # every declared backend

    def check(self, entries: Entries) -> tuple[bool, dict[str, Any]]:
        """(all valid, the policy values found) for a route's entries."""
        ok = True
        found: dict[str, Any] = {}
        for key, section in SECTIONS.items():
            if key in entries:
                found[key] = self.section(key, section, entries[key][1])
                ok = ok and found[key] is not None
        if "unsafe" in entries:
            found["unsafe"] = self.reader.flag(entries["unsafe"][1], f"{self.what}: 'unsafe'")
            ok = ok and found["unsafe"] is not None
        if "fallback" in entries:
            found["fallback"] = self.backend_name(entries["fallback"][1], "fallback")
            ok = ok and found["fallback"] is not None
        if "rollback" in entries and "fallback" not in entries:
            self.reader.problem(
                entries["rollback"][0],
                f"{self.what}: 'rollback' flips the route to its fallback, so it needs 'fallback'",
            )
            ok = False
        return ok, found

    def section(self, key: str, section: Section, node: yaml.Node) -> object | None:
        what = f"{self.what}: {key!r}"
        entries = self.reader.mapping(node, what, tuple(section.rules))
        if entries is None:
            return None
        missing = [k for k in section.required if k not in entries]
        if missing:
            needed = ", ".join(repr(k) for k in missing)
            self.reader.problem(node, f"{what} needs {needed}, e.g. {section.example}")
        values = {k: section.rules[k](self, value) for k, (_, value) in entries.items()}
        if missing or any(v is None for v in values.values()):
            return None
        return section.spec(**values)

    def backend_name(self, node: yaml.Node, key: str) -> str | None:
        name = self.reader.string(node, f"{self.what}: {key!r}")
        if name is None:
            return None
        if self.names and name not in self.names:
            self.reader.problem(
                node, f"{self.what}: {key}: unknown backend {name!r}; {hint(name, self.names)}"
            )
            return None
        return name

    def count(self, node: yaml.Node, what: str) -> int | None:
        value = self.reader.scalar(node)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.reader.problem(
                node, f"{self.what}: {what} must be a whole number of at least 1 (got {value!r})"
            )
            return None
        return value

    def sticky(self, node: yaml.Node) -> Sticky | None:
        value = self.reader.scalar(node)
        if value == "client_ip":
            return Sticky("client_ip")
        m = _STICKY.match(value) if isinstance(value, str) else None
        if m is None:
            self.reader.problem(
                node,
                f"{self.what}: canary sticky must be 'header:NAME', "
                f"'cookie:NAME' or 'client_ip' (got {value!r})",
            )
            return None
        kind, name = m.group(1), m.group(2)
        return Sticky("header", name.lower()) if kind == "header" else Sticky("cookie", name)

    def ignore(self, node: yaml.Node) -> tuple[JsonPath, ...] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.reader.problem(
                node,
                f"{self.what}: shadow 'ignore' must be a list of JSON paths "
                "such as ['$.updated_at']",
            )
            return None
        paths = []
        for item in node.value:
            text = self.reader.scalar(item)
            try:
                if not isinstance(text, str):
                    raise ValueError("it must be a string such as '$.updated_at'")
                paths.append(parse_json_path(text.strip()))
            except ValueError as exc:
                self.reader.problem(item, f"{self.what}: shadow ignore path {text!r}: {exc}")
                return None
        return tuple(paths)
