"""Checking the shared-login keys of a backend: `session_from` and `session_header`.

`session_from` (asgi and url backends) names the wsgi backend whose Flask session
the backend shares (see `gateway.session`); `session_header` (url backends with
`session_from`) names the header that carries it. Whether the named app really is
a Flask app with a secret key is known only once it is imported, at startup.
"""

from __future__ import annotations

import re

import yaml

from gateway.routefile.model import BackendSpec
from gateway.routefile.nodes import Entries, NodeReader, hint

SESSION_KEYS = ("session_from", "session_header")
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP field name (RFC 9110)
# Fields whose meaning the gateway or HTTP itself owns: never a session header.
_RESERVED_HEADERS = frozenset(
    {
        "host",
        "cookie",
        "set-cookie",
        "content-length",
        "content-type",
        "transfer-encoding",
        "connection",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    }
)


class SessionRules:
    """The session keys of one file's backends, reported through `reader`."""

    def __init__(self, reader: NodeReader) -> None:
        self.reader = reader
        self._from_at: dict[str, yaml.Node] = {}  # backend name: its session_from value

    def keys(self, name: str, kind: str, entries: Entries) -> tuple[str | None, str | None] | None:
        """(session_from, session_header) of one backend, or None once a problem is reported."""
        reader = self.reader
        what = f"backend {name!r}"
        source = header = None
        ok = True
        if "session_from" in entries:
            key_node, node = entries["session_from"]
            self._from_at[name] = node
            source = reader.string(node, f"{what}: 'session_from'")
            ok = source is not None
            if kind == "wsgi":
                reader.problem(
                    key_node,
                    f"{what}: 'session_from' is for asgi and url backends; a wsgi app has "
                    "its own session",
                )
                ok = False
        if "session_header" in entries:
            key_node, node = entries["session_header"]
            header = reader.string(node, f"{what}: 'session_header'")
            if kind != "url" or "session_from" not in entries:
                reader.problem(
                    key_node, f"{what}: 'session_header' needs a url backend with 'session_from'"
                )
                ok = False
            elif header is not None and (
                not _TOKEN_RE.match(header) or header.lower() in _RESERVED_HEADERS
            ):
                reader.problem(
                    node,
                    f"{what}: 'session_header' {header!r} is not a header name of its own; "
                    "use one such as X-Legacy-Session",
                )
                ok = False
            ok = ok and header is not None
        return (source, header) if ok else None

    def sources(self, specs: list[BackendSpec], declared: set[str]) -> list[BackendSpec]:
        """The specs whose 'session_from' names a declared wsgi backend (others reported)."""
        kinds = {spec.name: spec.kind for spec in specs}
        kept = []
        for spec in specs:
            source = spec.session_from
            if source is not None and kinds.get(source) != "wsgi":
                if source in declared and source not in kinds:
                    continue  # that backend's own problem is reported already
                if source in kinds:
                    reason = f"{source!r} is {kinds[source]}, not a wsgi (Flask) backend"
                else:
                    wsgi = [name for name, kind in kinds.items() if kind == "wsgi"]
                    reason = f"no backend is named {source!r}; " + (
                        hint(source, wsgi) if wsgi else "declare the wsgi (Flask) backend"
                    )
                where = self._from_at.get(spec.name)
                self.reader.problem(where, f"backend {spec.name!r}: 'session_from': {reason}")
                continue
            kept.append(spec)
        return kept
