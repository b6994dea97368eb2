"""The url backend's own keys: `host` (the Host sent upstream) and the TLS keys
(`verify`, `ca`, `cert`, `key`), checked on the node tree like the rest of the file.

Files named by `ca`, `cert` and `key` are resolved against the route file's
directory, so a route file and its certificates move together; whether they hold
usable PEM is checked when the file is loaded (`gateway.tls.check`).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from gateway.routefile.model import HOST_PRESERVE, HOST_UPSTREAM, TLSSpec
from gateway.routefile.nodes import Entries, NodeReader

TLS_KEYS = ("verify", "ca", "cert", "key")
UPSTREAM_KEYS = ("host", *TLS_KEYS)
# A host name or IPv4 address, or a bracketed IPv6 address, and an optional port.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


class UpstreamChecker:
    """Reads a backend's url-only keys into (host, TLSSpec), reporting every problem."""

    def __init__(self, reader: NodeReader, what: str) -> None:
        self.reader = reader
        self.what = what

    def check(self, entries: Entries, kind: str, target: str | None) -> tuple[str, TLSSpec]:
        given = [key for key in UPSTREAM_KEYS if key in entries]
        if kind != "url":
            for name in given:
                self.reader.problem(
                    entries[name][0], f"{self.what}: {name!r} is for url backends only"
                )
            return HOST_PRESERVE, TLSSpec()
        host = self.host(entries.get("host"))
        tls_given = [key for key in TLS_KEYS if key in entries]
        if tls_given and target is not None and not target.startswith("https://"):
            for name in tls_given:
                self.reader.problem(
                    entries[name][0],
                    f"{self.what}: {name!r} is for https:// URLs; this backend speaks plain http",
                )
            return host, TLSSpec()
        verify = True
        if "verify" in entries:
            verify = self.reader.flag(entries["verify"][1], f"{self.what}: 'verify'") is not False
        ca = self.path(entries.get("ca"), "a CA bundle (PEM)")
        cert = self.path(entries.get("cert"), "a client certificate (PEM)")
        key = self.path(entries.get("key"), "the client certificate's private key (PEM)")
        if key is not None and cert is None:
            self.reader.problem(
                entries["key"][0], f"{self.what}: 'key' needs 'cert', the certificate it signs"
            )
        if ca is not None and not verify:
            self.reader.problem(
                entries["ca"][0],
                f"{self.what}: 'ca' with 'verify: false' would never be used; remove one",
            )
        return host, TLSSpec(verify, ca, cert, key)

    def host(self, entry: tuple[yaml.Node, yaml.Node] | None) -> str:
        if entry is None:
            return HOST_PRESERVE
        what = f"{self.what}: 'host'"
        value = self.reader.string(entry[1], what)
        if value is None:
            return HOST_PRESERVE
        if value in (HOST_PRESERVE, HOST_UPSTREAM) or _HOST_RE.match(value):
            return value
        self.reader.problem(
            entry[1],
            f"{what} is 'preserve' (the client's Host), 'upstream' (the URL's) or a host "
            f"such as 'shop.example.com' (got {value!r})",
        )
        return HOST_PRESERVE

    def path(self, entry: tuple[yaml.Node, yaml.Node] | None, holds: str) -> str | None:
        if entry is None:
            return None
        key = self.reader.scalar(entry[0])
        value = self.reader.string(entry[1], f"{self.what}: {key!r} (the path of {holds})")
        if value is None:
            return None
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = Path(self.reader.source).parent / path
        return str(path.resolve())
