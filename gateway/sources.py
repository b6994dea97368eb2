"""Where a route table's text lives: the `Source` seam, and the file source.

The control plane (`gateway.control`) reads, watches and edits the table's text
only through a `Source`, so the same validate-apply-record step serves whatever
holds the text. `FileSource` is the text in `routes.yaml`.

A change to the file is noticed by polling its identity (inode, size, mtime,
following symlinks), which catches every way a file is replaced: an editor
writing in place, a temp file renamed over it, and a Kubernetes ConfigMap
whose `..data` symlink is swapped to a new directory. Polling also works the
same on every platform and needs no extra dependency; at the default 0.25 s
it costs one `stat()` call per interval.

An edit writes a temp file in the same directory and renames it over the old
one, so a reader (the watcher of every worker) sees either the old file or
the new one, never half of one. Edits from several processes are serialised
by a lock on the directory. A file that cannot be written (a Kubernetes
ConfigMap is mounted read-only; a file without write permission bits counts
too) refuses edits with `ReadOnly`, a clear 409, never an `OSError`.

The Redis store is the other source (`gateway.fleet.source.RedisSource`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from gateway.filelock import exclusive
from gateway.routefile.editing import Edit, EditError, EditResult
from gateway.routefile.model import ConfigError


class Source(Protocol):
    """What the control plane needs of the place a table's text lives."""

    name: str  # names the text in problems, logs and `/-/routes` ("source")

    async def read(self) -> bytes:
        """The current text; `ConfigError` when it cannot be read at all."""
        ...

    async def changed(self) -> str:
        """Wait until the text may have changed since the last `read`; say what changed."""
        ...

    async def edit(self, edit: Edit, by: str, kind: str) -> EditResult:
        """Apply `edit` to the current text and store the result atomically; `by` and
        `kind` (flip, canary, rollback) are for the source's history, if it keeps one.

        Raises what the edit raises (`EditError`, `ConfigError`: nothing stored),
        `ReadOnly` when the source takes no edits, or `OSError` when the text could
        not be stored."""
        ...

    def describe(self, applied_sha: str | None) -> dict[str, Any] | None:
        """The source's own state for `/-/routes` (a store's reachability, the revision
        whose text has the digest `applied_sha`), or None."""
        ...


class ReadOnly(EditError):
    """The source takes no edits: the table's text is read-only where it lives."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is read-only; use --store or make it writable", status=409)


Signature = tuple[int, int, int, int]


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)  # follows symlinks: a swapped ConfigMap target changes the inode
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class FileSource:
    """The table's text in a file, polled every `interval` seconds."""

    def __init__(self, path: str | Path, interval: float = 0.25) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.interval = interval
        self._signature = _signature(self.path)

    async def read(self) -> bytes:
        self._signature = _signature(self.path)
        try:
            return await asyncio.to_thread(self.path.read_bytes)
        except OSError as exc:
            raise ConfigError.unreadable(self.name, exc) from None

    async def changed(self) -> str:
        while True:
            await asyncio.sleep(self.interval)
            current = _signature(self.path)
            if current == self._signature:
                continue
            # Let a writer finish: only read once the file has held still briefly.
            await asyncio.sleep(min(0.05, self.interval))
            if _signature(self.path) == current:
                return "file change"

    async def edit(self, edit: Edit, by: str = "", kind: str = "") -> EditResult:
        return await asyncio.to_thread(self.edit_now, edit)

    def describe(self, applied_sha: str | None) -> None:
        return None

    def edit_now(self, edit: Edit) -> EditResult:
        """`edit`, blocking (the CLI has no event loop to keep serving)."""
        target = Path(os.path.realpath(self.path))  # edit the file a symlink points at
        with exclusive(target.parent):
            try:
                data = target.read_bytes()
            except OSError as exc:
                raise ConfigError.unreadable(self.name, exc) from None
            result = edit(data, self.name)
            if result.data != data:
                if not _writable(target):
                    raise ReadOnly(self.name)
                try:
                    _write_atomic(target, result.data)
                except OSError as exc:
                    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                        raise ReadOnly(self.name) from None
                    raise
            return result


def _writable(path: Path) -> bool:
    """Whether an edit may replace `path`: its directory takes a new file (false on a
    read-only mount, even for root) and the file itself has a write permission bit
    (root could write it anyway, but someone meant it to stay as it is)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(path.parent, os.W_OK)


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
