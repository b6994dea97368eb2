"""A WSGI app for the tests of how the gateway calls one (`tests/test_wsgi_call.py`).

Each path is one way a WSGI app may answer. Kept free of test-only imports: the
gateway imports it as a backend.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

HOLD_SECONDS = 1.5  # how long `/hold` keeps its thread
HUNG_SECONDS = 300.0  # how long `/hung` keeps its thread: longer than any test waits
closed: list[str] = []  # the paths whose iterable the server closed, in this process


class Closing:
    """An iterable with a `close()`, which a server must call when it is done with it."""

    def __init__(self, path: str, chunks: list[bytes]) -> None:
        self.path = path
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.chunks)

    def close(self) -> None:
        closed.append(self.path)


def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/hold":
        time.sleep(HOLD_SECONDS)
    if path == "/hung":
        time.sleep(HUNG_SECONDS)
    if path == "/write":  # the old write() callable, then the iterable
        write = start_response("201 Created", [("Content-Type", "text/plain")])
        write(b"written ")
        write(b"")
        return [b"and returned"]
    if path == "/replaced":  # an error before the first byte: the start is replaced
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("late")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Why", "late")], sys.exc_info())
        return [b"replaced"]
    if path == "/fails-before-body":  # started, then failed before its first byte
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _fails(0)
    if path == "/fails-mid-body":  # failed after its first bytes reached the client
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _fails(3)
    if path == "/many":  # more chunks than a thread hands over before it waits
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"%03d\n" % i for i in range(200))
    if path == "/empty":
        start_response("204 No Content", [("X-Empty", "yes")])
        return Closing(path, [b"", b""])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(path, [b"one ", b"two"])


def _fails(after: int) -> Iterator[bytes]:
    for i in range(after):
        yield b"chunk %d\n" % i
    raise RuntimeError("the app failed")
