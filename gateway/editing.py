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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from gateway.config import GatewayConfig, parse_config

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


def flip(path: str | Path, route_id: str | None, backend: str) -> EditResult:
    """Point one route (or, with route_id None, every route) at `backend`."""
    target = Path(os.path.realpath(path))  # edit the file a symlink points at
    with _locked(target.parent):
        data = target.read_bytes()
        current = parse_config(data, str(path))
        if backend not in {b.name for b in current.backends}:
            names = ", ".join(b.name for b in current.backends)
            raise EditError(f"unknown backend {backend!r}; use one of: {names}", status=422)
        if route_id is not None and route_id not in {r.id for r in current.routes}:
            raise EditError(f"unknown route {route_id!r}")
        edits: list[tuple[yaml.Node, str]] = []
        changed: list[str] = []
        for rid, node in _backend_nodes(data):
            if route_id is not None and rid != route_id:
                continue
            if current.route(rid).backend != backend:
                edits.append((node, backend))
                changed.append(rid)
        new_data = _splice(data, edits)
        config = parse_config(new_data, str(path))
        if new_data != data:
            _write_atomic(target, new_data)
        return EditResult(config, changed)


def _backend_nodes(data: bytes) -> Iterator[tuple[str, yaml.Node]]:
    """(route id, node of its `backend` value) for each route, in file order."""
    root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        return
    for key, value in root.value:
        if key.value != "routes" or not isinstance(value, yaml.SequenceNode):
            continue
        for item in value.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            fields = {k.value: v for k, v in item.value if isinstance(k, yaml.ScalarNode)}
            if "id" in fields and "backend" in fields:
                yield str(fields["id"].value).strip(), fields["backend"]


def _splice(data: bytes, edits: list[tuple[yaml.Node, str]]) -> bytes:
    text = data.decode("utf-8")
    # Positions are character offsets; apply from the end so earlier ones stay valid.
    for node, value in sorted(edits, key=lambda e: e[0].start_mark.index, reverse=True):
        start, end = node.start_mark.index, node.end_mark.index
        text = text[:start] + _scalar(value, text[start:end]) + text[end:]
    return text.encode("utf-8")


def _scalar(value: str, old: str) -> str:
    """Write `value` the way the old scalar was written (plain, 'single' or "double")."""
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
