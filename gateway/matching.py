"""Path templates and the segment trie that matches requests to routes.

A template is a path such as ``/books/{book_id}`` or ``/static/{rest:path}``:
literal segments, ``{name}`` (exactly one non-empty segment) and, last only,
``{name:path}`` (everything that follows, slashes included, possibly empty).

Matching rules (documented in the README, tested in tests/test_matching.py):

1. Among the routes that accept a request's path *and* method, the most
   specific wins. Segments are compared left to right; at the first segment
   where candidates differ, a literal beats ``{param}``, which beats
   ``{rest:path}``.
2. At the same path, a route that lists the method beats a route without
   ``methods`` (which accepts every method).
3. Methods are matched exactly as listed: ``[GET]`` does not imply HEAD.

The router is a trie of segments, so the cost of a match depends on the
depth of the path, never on how many routes the table holds. Backtracking
only happens when a more specific branch exists but cannot accept the
request, and is bounded by the trie's depth.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from gateway.paths import canonical

T = TypeVar("T")

# Matching walks the trie recursively, one level per segment: deep enough for any
# real API, far from the interpreter's recursion limit.
MAX_SEGMENTS = 100

SegmentKind = Literal["literal", "param", "path"]
_PARAM_RE = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}$")


class TemplateError(ValueError):
    """A path template that cannot be parsed; the message says how to fix it."""


@dataclass(frozen=True, slots=True)
class Segment:
    kind: SegmentKind
    value: str  # the literal text, or the parameter's name


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    segments: tuple[Segment, ...]

    @property
    def shape(self) -> tuple[str, ...]:
        """The template with parameter names erased: equal shapes claim the same paths."""
        return tuple(
            ("=" + s.value) if s.kind == "literal" else ("{}" if s.kind == "param" else "{*}")
            for s in self.segments
        )


def parse_template(text: str) -> Template:
    if not text.startswith("/"):
        raise TemplateError(f"path {text!r} must start with '/'")
    if "?" in text or "#" in text:
        raise TemplateError(f"path {text!r} must not contain a query string or fragment")
    normal = canonical(text)
    if normal != text:
        # Requests are matched on their canonical path: this spelling could never match.
        raise TemplateError(
            f"path {text!r} has empty, '.' or '..' segments or a backslash; write {normal!r}"
        )
    parts = text[1:].split("/")
    if len(parts) > MAX_SEGMENTS:
        raise TemplateError(
            f"path {text[:40]!r}... has {len(parts)} segments; a route path has at most "
            f"{MAX_SEGMENTS}"
        )
    segments: list[Segment] = []
    names: set[str] = set()
    for index, part in enumerate(parts):
        if "{" not in part and "}" not in part:
            segments.append(Segment("literal", part))
            continue
        m = _PARAM_RE.match(part)
        if m is None:
            raise TemplateError(
                f"path {text!r}: segment {part!r} is malformed; a parameter takes a whole "
                "segment, written {name} or {name:path}"
            )
        name, converter = m.group(1), m.group(2)
        if name in names:
            raise TemplateError(f"path {text!r}: parameter {{{name}}} appears twice")
        names.add(name)
        if converter is None:
            segments.append(Segment("param", name))
        elif converter == "path":
            if index != len(parts) - 1:
                raise TemplateError(
                    f"path {text!r}: {{{name}:path}} takes the rest of the path, "
                    "so it must be the last segment"
                )
            segments.append(Segment("path", name))
        else:
            raise TemplateError(
                f"path {text!r}: unknown converter {converter!r} in {{{name}:{converter}}}; "
                "the only converter is 'path'"
            )
    return Template(text, tuple(segments))


class _Endpoint(Generic[T]):
    """The routes ending at one trie position, by method."""

    __slots__ = ("any", "by_method")

    def __init__(self) -> None:
        self.by_method: dict[str, T] = {}
        self.any: T | None = None

    def pick(self, method: str) -> T | None:
        found = self.by_method.get(method)
        return self.any if found is None else found


class _Node(Generic[T]):
    __slots__ = ("endpoint", "literals", "param", "rest")

    def __init__(self) -> None:
        self.literals: dict[str, _Node[T]] = {}
        self.param: _Node[T] | None = None
        self.rest: _Endpoint[T] | None = None  # routes whose next segment is {x:path}
        self.endpoint: _Endpoint[T] | None = None


class Router(Generic[T]):
    """Maps (method, path) to the most specific route value."""

    __slots__ = ("_root",)

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()

    def add(self, template: Template, methods: tuple[str, ...] | None, value: T) -> None:
        """Add a route. Conflicts are the config checker's job; a later add wins here."""
        node = self._root
        endpoint: _Endpoint[T] | None = None
        for segment in template.segments:
            if segment.kind == "literal":
                node = node.literals.setdefault(segment.value, _Node())
            elif segment.kind == "param":
                if node.param is None:
                    node.param = _Node()
                node = node.param
            else:
                if node.rest is None:
                    node.rest = _Endpoint()
                endpoint = node.rest
        if endpoint is None:
            if node.endpoint is None:
                node.endpoint = _Endpoint()
            endpoint = node.endpoint
        if methods is None:
            endpoint.any = value
        else:
            for method in methods:
                endpoint.by_method[method] = value

    def match(self, method: str, path: str) -> T | None:
        return _walk(self._root, path[1:].split("/"), 0, method)


def _walk(node: _Node[T], segments: list[str], index: int, method: str) -> T | None:
    if index == len(segments):
        return node.endpoint.pick(method) if node.endpoint is not None else None
    segment = segments[index]
    child = node.literals.get(segment)
    if child is not None:
        found = _walk(child, segments, index + 1, method)
        if found is not None:
            return found
    if node.param is not None and segment:
        found = _walk(node.param, segments, index + 1, method)
        if found is not None:
            return found
    if node.rest is not None:
        return node.rest.pick(method)
    return None
