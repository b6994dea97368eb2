"""Edits of a route table's text: flip a route, set a canary's share.

An edit is a pure function of the current text (`Edit`): it replaces the bytes
of exactly one YAML scalar (found through PyYAML's node positions), or adds one
line, and leaves every other byte as the operator wrote it: comments, key
order, quoting, blank lines. The result is validated as a whole; an edit that
would make the table invalid raises and changes nothing. Where the text lives,
and how the new text replaces the old atomically, is the source's business
(`gateway.sources`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import yaml

from gateway.routefile.loading import parse_config
from gateway.routefile.model import GatewayConfig, RouteSpec
from gateway.routefile.nodes import hint

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


class EditError(Exception):
    """A requested edit names something the file does not have."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class EditResult:
    data: bytes  # the new text (the old one when nothing changed)
    config: GatewayConfig  # the table the new text makes
    changed: list[str]  # ids of the routes the edit changed


Edit = Callable[[bytes, str], EditResult]
"""An edit: (the current text, the source's name for problems) -> the result."""


def flip(
    route_id: str | None, backend: str, expect: str | None = None, keep: Collection[str] = ()
) -> Edit:
    """Point one route (or, with route_id None, every route) at `backend`.

    With `expect`, only a route currently on `expect` is changed (an automatic
    rollback must not undo what an operator did in the meantime). Routes in `keep`
    are left as they are (`flip --all` keeps those `backend` cannot serve).
    """

    def edit(current: GatewayConfig, routes: dict[str, yaml.MappingNode]) -> Splices:
        _known_backend(current, backend)
        if route_id is not None:
            _known_route(current, route_id)
        edits: list[tuple[yaml.Node, str | float]] = []
        changed: list[str] = []
        for rid, node in routes.items():
            if (route_id is not None and rid != route_id) or rid in keep:
                continue
            now = current.route(rid).backend
            if now != backend and (expect is None or now == expect):
                edits.append((_field(node, "backend"), backend))
                changed.append(rid)
        return edits, [], changed

    return _edit(edit)


def set_canary(route_id: str, percent: float, backend: str | None = None) -> Edit:
    """Set the canary share of a route; adds `canary:` to a route without one (needs backend)."""
    percent = float(percent)
    if not 0 <= percent <= 100:
        raise EditError(f"percent must be from 0 to 100 (got {percent:g})", status=422)
    text = _number(percent)

    def edit(current: GatewayConfig, routes: dict[str, yaml.MappingNode]) -> Splices:
        route = _known_route(current, route_id)
        node = routes[route_id]
        if route.canary is not None:
            if backend is not None and backend != route.canary.backend:
                raise EditError(
                    f"route {route_id!r} already has canary backend {route.canary.backend!r}",
                    status=422,
                )
            canary = _field(node, "canary")
            if not isinstance(canary, yaml.MappingNode):  # unreachable for a valid file
                raise EditError(f"route {route_id!r}: 'canary' is not a mapping", status=409)
            return [(_field(canary, "percent"), percent)], [], [route_id]
        if backend is None:
            raise EditError(
                f"route {route_id!r} has no canary yet; name its backend (--backend)", status=422
            )
        _known_backend(current, backend)
        if node.flow_style:
            raise EditError(
                f"route {route_id!r} is written on one line ({{...}}); add "
                f"'canary: {{backend: {backend}, percent: {text}}}' to it by hand",
                status=409,
            )
        line = f"canary: {{backend: {_scalar(backend, '')}, percent: {text}}}"
        return [], [(node, line)], [route_id]

    return _edit(edit)


Splices = tuple[list[tuple[yaml.Node, str | float]], list[tuple[yaml.MappingNode, str]], list[str]]


def _edit(make: Callable[[GatewayConfig, dict[str, yaml.MappingNode]], Splices]) -> Edit:
    """Validate, change, validate the result again."""

    def run(data: bytes, source: str) -> EditResult:
        current = parse_config(data, source)
        loader = _Loader(data.decode("utf-8"))
        replacements, additions, changed = make(current, _route_nodes(loader))
        new_data = _splice(loader, replacements, additions)
        config = parse_config(new_data, source)
        return EditResult(new_data, config, changed if new_data != data else [])

    return run


def _known_backend(config: GatewayConfig, backend: str) -> None:
    if backend not in {b.name for b in config.backends}:
        names = (b.name for b in config.backends)
        raise EditError(f"unknown backend {backend!r} ({hint(backend, names)})", status=422)


def _known_route(config: GatewayConfig, route_id: str) -> RouteSpec:
    try:
        return config.route(route_id)
    except KeyError:
        names = (r.id for r in config.routes)
        raise EditError(f"unknown route {route_id!r} ({hint(route_id, names)})") from None


def _field(node: yaml.MappingNode, key: str) -> yaml.Node:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            found: yaml.Node = v
            return found
    raise KeyError(key)


class _Loader(yaml.SafeLoader):
    """Composes a file as `yaml.compose` does, and keeps where its aliases stand.

    PyYAML composes an alias (`*name`) into the very node its anchor (`&name`)
    names, so an edit of an aliased value would rewrite the anchor, for every
    route that uses it, and two routes using it would splice one span twice. Here
    each alias of a scalar is a node of its own, spanning the `*name` token, and
    the anchored nodes are known, so an edit changes one route only."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
        self.aliases: dict[str, list[yaml.Node]] = {}  # anchor -> its aliases, in order
        self.anchored: dict[int, str] = {}  # id(anchored node) -> its anchor

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        node = super().compose_node(parent, index)
        if isinstance(event, yaml.AliasEvent) and isinstance(node, yaml.ScalarNode):
            start: Any = event.start_mark  # PyYAML's and libyaml's marks: one interface
            end: Any = event.end_mark
            alias = yaml.ScalarNode(node.tag, node.value, start, end)
            self.aliases.setdefault(str(event.anchor), []).append(alias)
            return alias
        if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
            self.anchored[id(node)] = event.anchor
        return node


def _route_nodes(loader: _Loader) -> dict[str, yaml.MappingNode]:
    """Each route's mapping node, by id (the file is valid: ids are unique)."""
    try:
        root = loader.get_single_node()
    finally:
        loader.dispose()
    found: dict[str, yaml.MappingNode] = {}
    if not isinstance(root, yaml.MappingNode):
        return found
    for key, value in root.value:
        if key.value != "routes" or not isinstance(value, yaml.SequenceNode):
            continue
        for item in value.value:
            if isinstance(item, yaml.MappingNode):
                fields = {k.value: v for k, v in item.value if isinstance(k, yaml.ScalarNode)}
                if "id" in fields:
                    found[str(fields["id"].value).strip()] = item
    return found


def _splice(
    loader: _Loader,
    replacements: list[tuple[yaml.Node, str | float]],
    additions: list[tuple[yaml.MappingNode, str]],
) -> bytes:
    """Replace scalars in place, and add `key: value` lines at the end of block mappings."""
    text = loader.text
    changes: list[tuple[int, int, str]] = []
    replaced = {id(node) for node, _ in replacements}
    for node, value in replacements:
        start, end = node.start_mark.index, node.end_mark.index
        old = text[start:end]
        anchor = loader.anchored.get(id(node))
        if anchor is not None:
            # The anchor moves, with the old value, to the first alias left using it.
            old = re.sub(r"^&\S+\s+", "", old)
            users = [a for a in loader.aliases.get(anchor, ()) if id(a) not in replaced]
            if users:
                first = users[0]
                changes.append((first.start_mark.index, first.end_mark.index, f"&{anchor} {old}"))
        changes.append((start, end, _scalar(value, old)))
    for mapping, line in additions:
        eol = _end_of_last_line(text, mapping.value[-1][1].end_mark.index)
        indent = " " * mapping.value[0][0].start_mark.column
        changes.append((eol, eol, "\n" + indent + line))
    # Positions are character offsets; apply from the end so earlier ones stay valid.
    for start, end, new in sorted(changes, reverse=True):
        text = text[:start] + new + text[end:]
    return text.encode("utf-8")


def _end_of_last_line(text: str, end: int) -> int:
    """Where the line holding a value's last character ends (after its comment).

    A block list or mapping ends where the next token starts, the next route say:
    lines that hold nothing but blanks or comments before it are not the value's."""
    lines = text[:end].splitlines(keepends=True)
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
        lines.pop()
    start = sum(len(line) for line in lines[:-1])
    eol = text.find("\n", start)
    return len(text) if eol < 0 else eol


def _number(value: float) -> str:
    """`value` as YAML reads it back as a number: no exponent (YAML 1.1 takes `1e-05`
    for a string), every significant digit, `5` rather than `5.0`."""
    text = repr(value)
    if "e" in text:
        text = f"{value:.15f}".rstrip("0")
    return text.removesuffix(".0").rstrip(".")


def _scalar(value: str | float, old: str) -> str:
    """Write `value` the way the old scalar was written (plain, 'single' or "double"),
    such that it reads back as the same value: a name such as `on`, `null` or `1e3`
    written plain would read back as a boolean, None or a number."""
    if isinstance(value, float):
        return _number(value)
    if old.startswith("'") and "'" not in value:
        return f"'{value}'"
    if old.startswith('"') or not _PLAIN.match(value) or yaml.safe_load(value) != value:
        return json.dumps(value)
    return value
