"""The forwarded headers a url backend receives: who the client is and what it asked for.

The upstream sees the gateway's address as its peer, so the gateway says who
the client was: `X-Forwarded-For` (the chain so far, the gateway's own peer
appended), `X-Forwarded-Proto` (the client's scheme), `X-Forwarded-Host` and
`X-Forwarded-Port` (what the client spoke to), and an RFC 7239 `Forwarded`
element for its own hop (for= its peer, host= the Host it got, proto= the
scheme it got) appended to the chain the request came with.

A request still carries forwarded headers only when they come from a trusted
proxy (gateway.proxies removed any other's): then its chain is extended, and the
Host and port it states pass on unchanged. Otherwise the chain starts here, with
the gateway's own statement, as for a client that spoke to the gateway directly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from aiohttp import hdrs

from gateway.proxies import PEER, Peer
from gateway.types import Scope

# The headers written here; a request's own values of them are given to `forwarding_headers`.
OWN = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"forwarded",
    }
)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
_PROTO = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
# RFC 7230 token characters: a Forwarded value made only of them needs no quotes.
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def forwarding_headers(
    scope: Scope, host: str, came_with: dict[bytes, list[str]]
) -> Sequence[tuple[str, str]]:
    """The forwarded headers for the upstream. `host` is the client's Host ("" if none);
    `came_with` maps each header of `OWN` the request has to its values."""
    scheme = scope.get("scheme", "http")
    peer: Peer | None = scope.get(PEER)
    if peer is None:
        # No forwarded header came (`proxies.peer_of`): the scope's client and scheme
        # are the socket's own, and the chain starts here. The headers then depend
        # only on the client, the Host and the scheme, which recur on every request
        # of a connection: built once per such set.
        client = scope.get("client")
        return _first_hop(client[0] if client else None, host, scheme, scheme)
    address = peer.client[0] if peer.client else None
    if came_with:
        return _headers(address, host, scheme, peer.scheme, came_with)
    return _first_hop(address, host, scheme, peer.scheme)  # all of them dropped as untrusted


@functools.lru_cache(maxsize=1024)
def _first_hop(
    address: str | None, host: str, scheme: str, own_scheme: str
) -> tuple[tuple[str, str], ...]:
    return tuple(_headers(address, host, scheme, own_scheme, {}))


def _headers(
    address: str | None,
    host: str,
    scheme: str,
    own_scheme: str,
    came_with: dict[bytes, list[str]],
) -> list[tuple[str, str]]:
    """`address` and `own_scheme`: the gateway's peer and how it spoke (the socket's
    view); `scheme`: the client's, as a trusted proxy may have stated it. The names are
    aiohttp's own (multidict's `istr`): its header dicts take them without folding their
    case again at each of the three insertions per request."""
    proto = _PROTO.get(scheme, "http")
    chain = came_with.get(b"x-forwarded-for", [])
    if address is not None:
        chain = [*chain, address]
    headers: list[tuple[str, str]] = []
    if chain:
        headers.append((hdrs.X_FORWARDED_FOR, ", ".join(chain)))
    headers.append((hdrs.X_FORWARDED_PROTO, proto))
    stated_host = ", ".join(came_with.get(b"x-forwarded-host", [])) or host
    if stated_host:
        headers.append((hdrs.X_FORWARDED_HOST, stated_host))
    port = ", ".join(came_with.get(b"x-forwarded-port", []))
    port = port or port_of(stated_host.partition(",")[0].strip()) or _DEFAULT_PORTS[proto]
    headers.append((hdrs.X_FORWARDED_PORT, port))
    element = []
    if address is not None:
        element.append("for=" + _quoted(_node(address)))
    if host:
        element.append("host=" + _quoted(host))
    element.append("proto=" + _PROTO.get(own_scheme, "http"))
    headers.append(
        (hdrs.FORWARDED, ", ".join([*came_with.get(b"forwarded", []), ";".join(element)]))
    )
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
