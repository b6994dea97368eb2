"""The forwarded headers a url backend receives: who the client is and what it asked for.

The upstream sees the gateway's address as its peer, so the gateway says who
the client was: `X-Forwarded-For` (the chain so far, the client's address
appended), `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-Port` (what
the client spoke to), and the same facts as an RFC 7239 `Forwarded` element
appended to the chain the request came with. `-Proto`, `-Host` and `-Port`
are the gateway's own statement, not the client's, so a client's are dropped.
"""

from __future__ import annotations

import re

from gateway.types import Scope

_DEFAULT_PORTS = {"http": "80", "https": "443"}
_PROTO = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
# RFC 7230 token characters: a Forwarded value made only of them needs no quotes.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def forwarding_headers(
    scope: Scope, host: str, chain: list[str], forwarded: list[str]
) -> list[tuple[str, str]]:
    """The forwarded headers for the upstream. `host` is the client's Host ("" if none);
    `chain` and `forwarded` are the X-Forwarded-For and Forwarded values it came with."""
    proto = _PROTO.get(scope.get("scheme", "http"), "http")
    client = scope.get("client")
    headers: list[tuple[str, str]] = []
    if client:
        chain = [*chain, client[0]]
    if chain:
        headers.append(("X-Forwarded-For", ", ".join(chain)))
    headers.append(("X-Forwarded-Proto", proto))
    element = []
    if client:
        element.append("for=" + _quoted(_node(client[0])))
    if host:
        headers.append(("X-Forwarded-Host", host))
        element.append("host=" + _quoted(host))
    headers.append(("X-Forwarded-Port", port_of(host) or _DEFAULT_PORTS[proto]))
    element.append("proto=" + proto)
    headers.append(("Forwarded", ", ".join([*forwarded, ";".join(element)])))
    return headers


def port_of(host: str) -> str | None:
    """The port a Host value names ("example.com:8080", "[::1]:8080"), or None."""
    _, colon, port = host.rpartition(":")
    if colon and port.isdigit() and "]" not in port:
        return port
    return None


def _node(address: str) -> str:
    # RFC 7239 section 6: an IPv6 address is written in brackets.
    return f"[{address}]" if ":" in address else address


def _quoted(value: str) -> str:
    if _TOKEN.match(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
