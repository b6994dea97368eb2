"""Canary splits: which side serves this request.

A request's sticky key (a header, a cookie, or the client address) is hashed
with the route id into a point in [0, 1); the canary serves it when that point
is below `percent / 100`. So a key always lands on the same side for a given
percent, and raising the percent only moves keys from the primary to the
canary, never back. A request without the key is split at random.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from gateway.routefile.model import CanarySpec
from gateway.types import Scope

_SPAN = float(1 << 64)


def route_salt(route_id: str) -> bytes:
    """Each route splits its keys independently of every other route."""
    return hashlib.blake2b(route_id.encode(), digest_size=16).digest()


def key_point(salt: bytes, key: bytes) -> float:
    """Where a sticky key falls in [0, 1) (stable across processes and restarts)."""
    digest = hashlib.blake2b(key, digest_size=8, key=salt).digest()
    return int.from_bytes(digest, "big") / _SPAN


def cookie_value(header: bytes, name: bytes) -> bytes | None:
    for part in header.split(b";"):
        key, sep, value = part.strip().partition(b"=")
        if sep and key == name:
            return value.strip(b'"')
    return None


class CanarySplit:
    """Decides per request whether the canary serves it."""

    __slots__ = ("_cookie", "_header", "_kind", "_salt", "fraction")

    def __init__(self, route_id: str, spec: CanarySpec) -> None:
        self._salt = route_salt(route_id)
        self.fraction = spec.percent / 100.0
        sticky = spec.sticky
        self._kind = sticky.kind if sticky else None
        self._header = sticky.name.encode() if sticky and sticky.kind == "header" else b""
        self._cookie = sticky.name.encode() if sticky and sticky.kind == "cookie" else b""

    def key(self, scope: Scope) -> bytes | None:
        if self._kind == "client_ip":
            client = scope.get("client")
            return client[0].encode() if client else None
        if self._kind is None:
            return None
        wanted = self._header or b"cookie"
        for name, value in scope["headers"]:
            if name == wanted:
                return value if self._header else cookie_value(value, self._cookie)
        return None

    def to_canary(self, scope: Scope, chance: Callable[[], float] = random.random) -> bool:
        if self.fraction <= 0.0:
            return False
        if self.fraction >= 1.0:
            return True
        key = self.key(scope)
        point = chance() if key is None else key_point(self._salt, key)
        return point < self.fraction
