"""An upstream that answers with raw bytes, to make every way a response can be invalid.

`RawUpstream` listens on loopback, reads a request head, and answers with the
bytes `ANSWERS` holds for the request's path (then closes the connection).
Real HTTP servers cannot be made to break the protocol on purpose; this one
does nothing else.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

HANG_SECONDS = 3.0

ANSWERS: dict[str, bytes] = {
    "/garbage": b"this is not HTTP at all\r\n\r\n",
    "/crlf-header": b"HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 2\r\n\r\nok",
    "/status-999": b"HTTP/1.1 999 Whatever\r\nContent-Length: 2\r\n\r\nok",
    "/status-42": b"HTTP/1.1 42 Whatever\r\nContent-Length: 2\r\n\r\nok",
    "/binary-header": b"HTTP/1.1 200 OK\r\nX-Bin: \xff\xfe\x00\r\nContent-Length: 2\r\n\r\nok",
    "/short-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
    "/close": b"",
}


class RawUpstream:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stop = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        # close() alone leaves a thread blocked in accept(); shutdown() wakes it.
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                path = head.split(b" ", 2)[1].decode("latin-1").partition("?")[0]
                if path == "/hang":
                    time.sleep(HANG_SECONDS)
                    return
                conn.sendall(ANSWERS.get(path, ANSWERS["/garbage"]))
            except OSError:
                return
