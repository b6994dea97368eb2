"""Who the client is and how it spoke: the socket peer, or what a trusted proxy says.

Behind a load balancer the socket peer is the balancer. `--forwarded-allow-ips`
names the peers whose forwarded headers are believed (uvicorn's setting and
syntax: `*`, or IP addresses and networks, comma-separated). `TrustedProxies.resolve`
applies it once per request, at the front door (`Gateway.__call__`), to the scope:

- From a trusted peer, `X-Forwarded-For` and `X-Forwarded-Proto` (or, when the request
  has neither, RFC 7239 `Forwarded` for= and proto=) set `scope["client"]` and
  `scope["scheme"]`. The client is the right-most address of the chain that is not
  itself trusted: each proxy appends the peer it got the request from, so what lies
  left of the first untrusted entry was written by whoever that was, and may be
  made up. The headers stay: an app behind the gateway (a Flask app with ProxyFix)
  sees what it would see behind that proxy alone.
- From any other peer, every `X-Forwarded-*`, `Forwarded` and `X-Real-IP` header is
  removed (as Traefik does): no client can name itself someone else or claim https,
  to the gateway or to an app behind it.

Everything after reads the result: the `client_ip` canary key, the access log
(uvicorn logs the scope's client), the WSGI environ (a2wsgi's `REMOTE_ADDR` and
`wsgi.url_scheme`), an ASGI app's `request.client` and URLs. The socket's own view
of such a request stays in `scope[PEER]` (`peer_of`): the admin API judges the real
peer (gateway.admin), and the chain a url backend gets is extended with it
(gateway.forwarding).
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from gateway.types import Scope

PEER = "gateway.peer"  # the scope key holding the connection's own `Peer`

_WS = {"http": "ws", "https": "wss"}
# One `name=value` pair of a Forwarded header, then what ends it (RFC 7239 section 4).
_PAIR = re.compile(r'\s*([^=;,\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*(;|,|$)')
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Peer(NamedTuple):
    """The connection as the socket saw it, before any forwarded header was believed."""

    client: tuple[str, int] | None
    scheme: str
    # The request carried forwarded headers, believed or not: it came through a proxy.
    proxied: bool


def peer_of(scope: Scope) -> Peer:
    """The request's `Peer`. Only a request with forwarded headers has one in the
    scope: for any other the scope's client and scheme are the socket's own."""
    peer: Peer | None = scope.get(PEER)
    if peer is None:
        peer = Peer(scope.get("client"), scope.get("scheme", "http"), False)
    return peer


_OTHER_FORWARDING = frozenset({b"forwarded", b"x-real-ip"})


def _is_forwarding(name: bytes) -> bool:
    """Whether a (lower-case) header name states something about an earlier hop."""
    return name.startswith(b"x-forwarded-") or name in _OTHER_FORWARDING


class TrustedProxies:
    """The peers whose forwarded headers are believed."""

    __slots__ = ("_all", "_hosts", "_networks")

    def __init__(self, spec: str) -> None:
        """`spec`: "*", or IP addresses and networks separated by commas ("" trusts no
        peer). Raises ValueError with one line saying which entry is wrong."""
        entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
        self._all = "*" in entries
        self._hosts: set[str] = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in entries:
            if entry == "*":
                continue
            try:
                if "/" in entry:
                    self._networks.append(ipaddress.ip_network(entry))
                else:
                    self._hosts.add(str(ipaddress.ip_address(entry)))
            except ValueError:
                raise ValueError(
                    f"forwarded allow ips: {_wrong(entry)}; expected '*', or IP addresses "
                    "and networks (10.0.0.0/8) separated by commas"
                ) from None

    def trusts(self, host: str) -> bool:
        if self._all or host in self._hosts:
            return True
        if not self._networks:
            return False
        address = _address(host)
        if address is None:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return any(address in network for network in self._networks)

    def resolve(self, scope: Scope) -> None:
        """Set the scope's client and scheme, and its headers, by the rule above; the
        socket's own view of a request with forwarded headers goes to `scope[PEER]`."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        # Every request passes here: the common case (no such header) costs one loop.
        for name, _ in headers:
            if name[:12] == b"x-forwarded-" or name in _OTHER_FORWARDING:
                break
        else:
            return
        client: tuple[str, int] | None = scope.get("client")
        scope[PEER] = Peer(client, scope.get("scheme", "http"), True)
        if not (self._all or (client is not None and self.trusts(client[0]))):
            scope["headers"] = [(n, v) for n, v in headers if not _is_forwarding(n)]
            return
        host, proto = self._stated(headers)
        if host is not None:
            scope["client"] = (host, 0)  # the port a proxy saw is not the client's own
        if proto is not None:
            scope["scheme"] = _WS[proto] if scope["type"] == "websocket" else proto

    def _stated(self, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
        """(client address, scheme) the trusted peer's headers state, each None when
        they state none that can be used."""
        values: dict[bytes, list[str]] = {}
        for name, value in headers:
            if name in (b"x-forwarded-for", b"x-forwarded-proto", b"forwarded"):
                values.setdefault(name, []).append(value.decode("latin-1"))
        if b"x-forwarded-for" in values or b"x-forwarded-proto" in values:
            chain = _items(values.get(b"x-forwarded-for", []))
            protos = _items(values.get(b"x-forwarded-proto", []))
            # The last proto is the one the trusted peer itself states.
            return self._client(chain), _proto(protos[-1] if protos else "")
        elements = _forwarded(",".join(values.get(b"forwarded", [])))
        nodes = [element.get("for", "") for element in elements]
        index = self._index(nodes)
        if index is None:
            return None, None
        # The element naming the client was written by the proxy that it spoke to.
        return _host(nodes[index]), _proto(elements[index].get("proto", ""))

    def _client(self, chain: list[str]) -> str | None:
        index = self._index(chain)
        return None if index is None else _host(chain[index])

    def _index(self, nodes: list[str]) -> int | None:
        """Which node of a chain is the client: the right-most one not trusted; the
        first when all are (then the client was a trusted host itself)."""
        if not nodes:
            return None
        if self._all:
            return 0
        for index in range(len(nodes) - 1, -1, -1):
            host = _host(nodes[index])
            if host is None or not self.trusts(host):
                return index
        return 0


def _wrong(entry: str) -> str:
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return f"{entry!r} is not an IP address or network"
    return f"{entry!r} has bits set right of the mask (the network is {network})"


def _items(values: list[str]) -> list[str]:
    """The comma-separated items of a header given once or several times."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def _proto(value: str) -> str | None:
    value = value.strip().lower()
    return value if value in _WS else None


def _host(node: str) -> str | None:
    """The IP address a chain entry names ("192.0.2.1", "192.0.2.1:4711",
    "[2001:db8::1]:4711", "2001:db8::1"), or None ("unknown", an obfuscated name)."""
    node = node.strip()
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:
        node = node.partition(":")[0]
    address = _address(node)
    return None if address is None else str(address)


def _address(host: str) -> _Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _forwarded(text: str) -> list[dict[str, str]]:
    """The elements of a Forwarded header (its pairs, names in lower case, values
    unquoted); none when it cannot be read."""
    elements: list[dict[str, str]] = [{}]
    position = 0
    while position < len(text):
        match = _PAIR.match(text, position)
        if match is None:
            return []
        name, value, end = match.groups()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elements[-1][name.lower()] = value
        if end == ",":
            elements.append({})
        position = match.end()
    return [element for element in elements if element]
