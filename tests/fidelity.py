"""The fidelity suite's comparison: a raw HTTP/1.1 client that sends exactly the bytes
a case names, and the comparison of two answers after removing only what a proxy may
change (the servers it runs: tests/fidelity_servers.py).

What a proxy may change, and nothing else, is dropped before comparing:
`Date`, `Server`, `X-Request-ID`, `X-Gateway-*` and the framing (`Transfer-Encoding`,
`Connection`, `Keep-Alive`; `Content-Length` once each side's is checked against its
own body). Everything else (status, every other header with its repeats in order,
the body's bytes) must be equal, or be one of the differences the README lists.
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import brotlicffi  # type: ignore[import-untyped]

from tests.harness import ROOT

HOST = "fidelity.example:8080"  # the same Host on both sides, whatever their ports


@dataclass(frozen=True)
class Case:
    """One request, sent byte for byte as written (no client library normalising it)."""

    name: str
    target: str
    method: str = "GET"
    headers: Sequence[tuple[str, str | bytes]] = ()
    body: bytes = b""
    chunked: bool = False  # send the body as chunks of `chunk` bytes, no Content-Length
    chunk: int = 1000
    expect: bool = False  # Expect: 100-continue, the body sent after the 100 only
    # The app seeds its process's one random generator for it: two at once in one
    # asyncio process would interleave (httpbinx), so such a pair goes one at a time.
    seeded: bool = False


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]  # names lowercased, in the order received
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before it


def exchange(port: int, case: Case, timeout: float = 30) -> Answer:
    head = [f"{case.method} {case.target} HTTP/1.1".encode(), b"Host: " + HOST.encode()]
    for name, value in case.headers:
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        head.append(name.encode() + b": " + raw)
    if case.chunked:
        head.append(b"Transfer-Encoding: chunked")
    elif case.body or case.method in ("POST", "PUT", "PATCH"):
        head.append(b"Content-Length: " + str(len(case.body)).encode())
    if case.expect:
        head.append(b"Expect: 100-continue")
    payload = case.body
    if case.chunked:
        parts = [payload[i : i + case.chunk] for i in range(0, len(payload), case.chunk)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        interim: list[int] = []
        if case.expect:
            interim.append(_read_interim(sock))
        sock.sendall(payload)
        response = http.client.HTTPResponse(sock, method=case.method)
        response.begin()  # skips (and so hides) any further 1xx
        body = response.read()
        headers = [(name.lower(), value) for name, value in response.getheaders()]
        return Answer(response.status, headers, body, interim)


def exchange_both(
    alone_port: int, through_port: int, case: Case, *, together: bool = True
) -> tuple[Answer, Answer]:
    """The case sent to the app alone and through the proxy, at once (a slow case costs
    its time once) unless `together` is false (see `Case.seeded`)."""
    if not together:
        return exchange(alone_port, case), exchange(through_port, case)
    with ThreadPoolExecutor(2) as pool:
        alone = pool.submit(exchange, alone_port, case)
        through = pool.submit(exchange, through_port, case)
        return alone.result(), through.result()


def _read_interim(sock: socket.socket) -> int:
    """The status of the interim answer to an Expect: 100-continue, read to its end."""
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError("closed before the interim answer")
        data += byte
    return int(data.split(b" ", 2)[1])


# What a proxy may change: dropped on both sides before comparing.
PROXY_HEADERS = frozenset({"date", "server", "x-request-id", "connection", "keep-alive"})
FRAMING = frozenset({"transfer-encoding", "content-length"})


def comparable(answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, headers, body) with only what a proxy may change removed.

    Headers are sorted by name only: the order of different fields carries no meaning,
    the order of a repeated one does (RFC 9110 section 5.3), so it is kept."""
    problems = framing_problems(answer)
    assert not problems, problems
    kept = [
        (name, value)
        for name, value in answer.headers
        if name not in PROXY_HEADERS and name not in FRAMING and not name.startswith("x-gateway-")
    ]
    return answer.status, sorted(kept, key=lambda item: item[0]), answer.body


def framing_problems(answer: Answer) -> list[str]:
    """What is wrong with an answer's own framing: its Content-Length against its body,
    both Content-Length and chunked, a Date or a Server given twice."""
    names = [name for name, _ in answer.headers]
    problems = [
        f"{n} given {names.count(n)} times" for n in ("date", "server") if names.count(n) > 1
    ]
    lengths = [value for name, value in answer.headers if name == "content-length"]
    if lengths and "transfer-encoding" in names:
        problems.append("both Content-Length and Transfer-Encoding")
    if lengths and answer.body and int(lengths[0]) != len(answer.body):
        problems.append(f"Content-Length {lengths[0]} for a body of {len(answer.body)} bytes")
    return problems


def differences(alone: Answer, through: Answer, body_view: Body | None = None) -> list[str]:
    """Every difference between the app alone and through a proxy, one line each."""
    a_status, a_headers, a_body = comparable(alone)
    t_status, t_headers, t_body = comparable(through)
    found = []
    if a_status != t_status:
        found.append(f"status: {a_status} alone, {t_status} through")
    if a_headers != t_headers:
        names = sorted({n for n, _ in a_headers} | {n for n, _ in t_headers})
        for name in names:
            a_values = [v for n, v in a_headers if n == name]
            t_values = [v for n, v in t_headers if n == name]
            if a_values != t_values:
                found.append(f"header {name}: {a_values} alone, {t_values} through")
    if body_view is not None:
        a_body, t_body = body_view(alone), body_view(through)
    if a_body != t_body:
        found.append("body: " + _body_difference(a_body, t_body))
    if alone.interim != through.interim:
        found.append(f"interim answers: {alone.interim} alone, {through.interim} through")
    return found


def _body_difference(alone: bytes, through: bytes) -> str:
    """Where two bodies part: the differing keys of two JSON objects (one level into
    "headers"), else the first differing byte and what surrounds it."""
    try:
        a_doc, t_doc = json.loads(alone), json.loads(through)
    except ValueError:
        a_doc = t_doc = None
    if isinstance(a_doc, dict) and isinstance(t_doc, dict):
        lines = []
        for key in sorted(set(a_doc) | set(t_doc)):
            a_value, t_value = a_doc.get(key), t_doc.get(key)
            if key == "headers" and isinstance(a_value, dict) and isinstance(t_value, dict):
                for name in sorted(set(a_value) | set(t_value)):
                    if a_value.get(name) != t_value.get(name):
                        a_seen, t_seen = a_value.get(name), t_value.get(name)
                        lines.append(f"headers[{name}]: {a_seen!r} alone, {t_seen!r} through")
            elif a_value != t_value:
                lines.append(f"{key}: {str(a_value)[:200]!r} alone, {str(t_value)[:200]!r} through")
        return "\n  ".join(["JSON", *lines])
    pairs = enumerate(zip(alone, through, strict=False))
    at = next((i for i, (x, y) in pairs if x != y), min(len(alone), len(through)))
    return (
        f"{len(alone)} bytes alone, {len(through)} through, first difference at {at}:"
        f"\n  alone:   {alone[max(0, at - 60) : at + 100]!r}"
        f"\n  through: {through[max(0, at - 60) : at + 100]!r}"
    )


# The request header the gateway adds on its way to any app: its request id, for the
# app's logs to name (README, "Fidelity").
GATEWAY_HOP = frozenset({"x-request-id"})


# Request headers a proxy hop adds or rewrites on its way to the app, removed from
# httpbin's echo of the request before comparing (README, "Fidelity").
NGINX_HOP = GATEWAY_HOP | frozenset(
    {
        # nginx names its own port, the gateway the port the client's Host names
        "x-forwarded-port",
        # RFC 7239: the gateway adds it, nginx (by default) does not
        "forwarded",
        # framing: nginx reads a chunked upload whole, then sends it with a
        # Content-Length; the gateway streams it chunked, and frames a DELETE
        # without a body with Content-Length: 0
        "content-length",
        "transfer-encoding",
        # nginx answers a 100-continue itself and drops the expectation; the gateway
        # passes it on (RFC 9110 allows both), so the app sees it as it would alone
        "expect",
    }
)


class Body:
    """A body as compared: decoded from its Content-Encoding (a compressor's output
    varies with its settings and clock, the content does not), and where it is
    httpbin's JSON echo of the request (one document, or one per line when streamed),
    without the named request headers: those a proxy hop adds or changes."""

    def __init__(self, hop_headers: frozenset[str]) -> None:
        self.hop_headers = hop_headers

    def __call__(self, answer: Answer) -> bytes:
        body = _decoded(answer)
        whole = self._without_hop_headers(body)
        if whole is not None:
            return whole
        lines = body.split(b"\n")
        return b"\n".join(self._without_hop_headers(line) or line for line in lines)

    def _without_hop_headers(self, text: bytes) -> bytes | None:
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        if isinstance(doc, dict) and isinstance(doc.get("headers"), dict):
            doc["headers"] = {
                k: v for k, v in doc["headers"].items() if k.lower() not in self.hop_headers
            }
        return json.dumps(doc, sort_keys=True).encode()


def _decoded(answer: Answer) -> bytes:
    encoding = next((v for n, v in answer.headers if n == "content-encoding"), "").strip()
    if not answer.body or encoding in ("", "identity"):
        return answer.body
    if encoding == "gzip":
        return gzip.decompress(answer.body)
    if encoding == "deflate":
        return zlib.decompress(answer.body)
    if encoding == "br":
        decompressed: bytes = brotlicffi.decompress(answer.body)
        return decompressed
    raise AssertionError(f"unexpected Content-Encoding {encoding!r}")


def readme_differences() -> str:
    """The README's Fidelity section, where every difference the suite allows is listed."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Fidelity")
    return text[start : text.index("\n## ", start + 1)]
