"""Changing `routes.yaml` on disk: the flip, shared by the CLI and the admin API.

An edit replaces the bytes of exactly one YAML scalar (found through PyYAML's
node positions) and leaves every other byte of the file as the operator wrote
it: comments, key order, quoting, blank lines. The result is validated as a
whole before anything is written; an edit that would make the file invalid
changes nothing. The new file is written to a temp file in the same directory
and renamed over the old one, so a reader (the watcher of every worker) sees
either the old file or the new one, never half of one. Edits from several
processes are serialised by a lock on the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.routefile.loading import parse_config
from gateway.routefile.model import GatewayConfig, RouteSpec

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]*$")


class EditError(Exception):
    """A requested edit names something the file does not have."""

    def __init__(self, message: str, status: int = 404) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class EditResult:
    config: GatewayConfig
    changed: list[str]  # route ids whose backend changed


def flip(
    path: str | Path, route_id: str | None, backend: str, expect: str | None = None
) -> EditResult:
    """Point one route (or, with route_id None, every route) at `backend`.

    With `expect`, only a route currently on `expect` is changed (an automatic
    rollback must not undo what an operator did in the meantime).
    """

    def edit(current: GatewayConfig, routes: dict[str, yaml.MappingNode]) -> Edit:
        _known_backend(current, backend)
        if route_id is not None:
            _known_route(current, route_id)
        edits: list[tuple[yaml.Node, str | float]] = []
        changed: list[str] = []
        for rid, node in routes.items():
            if route_id is not None and rid != route_id:
                continue
            now = current.route(rid).backend
            if now != backend and (expect is None or now == expect):
                edits.append((_field(node, "backend"), backend))
                changed.append(rid)
        return edits, [], changed

    return _edit(path, edit)


def set_canary(
    path: str | Path, route_id: str, percent: float, backend: str | None = None
) -> EditResult:
    """Set the canary share of a route; adds `canary:` to a route without one (needs backend)."""
    percent = float(percent)
    if not 0 <= percent <= 100:
        raise EditError(f"percent must be from 0 to 100 (got {percent:g})", status=422)
    text = _number(percent)

    def edit(current: GatewayConfig, routes: dict[str, yaml.MappingNode]) -> Edit:
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
        return [], [(node, f"canary: {{backend: {backend}, percent: {text}}}")], [route_id]

    return _edit(path, edit)


Edit = tuple[list[tuple[yaml.Node, str | float]], list[tuple[yaml.MappingNode, str]], list[str]]


def _edit(
    path: str | Path, make: Callable[[GatewayConfig, dict[str, yaml.MappingNode]], Edit]
) -> EditResult:
    """Read, validate, change, validate again, write atomically: all under the lock."""
    target = Path(os.path.realpath(path))  # edit the file a symlink points at
    with _locked(target.parent):
        data = target.read_bytes()
        current = parse_config(data, str(path))
        replacements, additions, changed = make(current, _route_nodes(data))
        new_data = _splice(data, replacements, additions)
        config = parse_config(new_data, str(path))
        if new_data != data:
            _write_atomic(target, new_data)
        return EditResult(config, changed if new_data != data else [])


def _known_backend(config: GatewayConfig, backend: str) -> None:
    if backend not in {b.name for b in config.backends}:
        names = ", ".join(b.name for b in config.backends)
        raise EditError(f"unknown backend {backend!r}; use one of: {names}", status=422)


def _known_route(config: GatewayConfig, route_id: str) -> RouteSpec:
    try:
        return config.route(route_id)
    except KeyError:
        raise EditError(f"unknown route {route_id!r}") from None


def _field(node: yaml.MappingNode, key: str) -> yaml.Node:
    for k, v in node.value:
        if isinstance(k, yaml.ScalarNode) and k.value == key:
            found: yaml.Node = v
            return found
    raise KeyError(key)


def _route_nodes(data: bytes) -> dict[str, yaml.MappingNode]:
    """Each route's mapping node, by id (the file is valid: ids are unique)."""
    root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
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
    data: bytes,
    replacements: list[tuple[yaml.Node, str | float]],
    additions: list[tuple[yaml.MappingNode, str]],
) -> bytes:
    """Replace scalars in place, and add `key: value` lines at the end of block mappings."""
    text = data.decode("utf-8")
    changes: list[tuple[int, int, str]] = []
    for node, value in replacements:
        start, end = node.start_mark.index, node.end_mark.index
        changes.append((start, end, _scalar(value, text[start:end])))
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
    """Write `value` the way the old scalar was written (plain, 'single' or "double")."""
    if isinstance(value, float):
        return _number(value)
    if old.startswith("'") and "'" not in value:
        return f"'{value}'"
    if old.startswith('"') or not _PLAIN.match(value):
        return json.dumps(value)
    return value


def _write_atomic(path: Path, data: bytes) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
