"""The one normalised form of a request path, and the paths the gateway keeps for itself.

A client can spell one path many ways: `//books`, `/./books`, `/x/../books`,
`/%2Fbooks` (the server decodes `%2F` before the app sees the path). Backends
do not agree on what such spellings mean: Werkzeug merges slashes, Starlette
does not. So the gateway decides everything on `canonical(path)`: whether the
path is its own (the admin prefix, the metrics path) and which route serves it.
The backend then gets the path exactly as the client sent it, and applies its
own rules to it (Werkzeug, for one, redirects `//books` to `/books`): a
spelling can change how the app answers, never which app answers.

A path the client *spelled* under the admin prefix is the gateway's even when
its dot segments climb out of it (`/-/x/../../books`): a backend that does not
resolve dot segments would otherwise see a path under the reserved prefix.
"""

from __future__ import annotations

from dataclasses import dataclass


def canonical(path: str) -> str:
    """`path` with empty and `.` segments removed and `..` resolved (RFC 3986 5.2.4,
    never above the root), and `\\` read as `/`; a trailing slash is kept, since
    `/books/` and `/books` are different paths."""
    if "//" not in path and "/." not in path and "\\" not in path:
        return path  # the common case, decided without building anything
    parts = path.replace("\\", "/").split("/")[1:]
    kept: list[str] = []
    for part in parts:
        if part == "..":
            if kept:
                kept.pop()
        elif part and part != ".":
            kept.append(part)
    trailing = bool(parts) and parts[-1] in ("", ".", "..")
    return "/" + "/".join(kept) + ("/" if trailing and kept else "")


@dataclass(frozen=True, slots=True)
class ReservedPaths:
    """The paths the gateway answers itself, so no route may claim them."""

    prefix: str = "/-/"
    metrics: str | None = "/-/metrics"

    def holds(self, path: str, as_sent: str | None = None) -> bool:
        """Whether a request for canonical `path` (spelled `as_sent`) is the gateway's."""
        # is_admin(), spelled out: every request asks.
        prefix = self.prefix
        if path.startswith(prefix) or path == self.metrics or path == prefix[:-1]:
            return True
        return as_sent is not None and as_sent.replace("\\", "/").startswith(prefix)

    def is_admin(self, path: str, as_sent: str | None = None) -> bool:
        prefix = self.prefix
        if path.startswith(prefix) or path == prefix[:-1]:
            return True
        return as_sent is not None and as_sent.replace("\\", "/").startswith(prefix)

    def template_problem(self, template: str) -> str | None:
        """Why a route's path template can never be served, or None when it can."""
        # A parameter segment accepts other paths as well; only literal text before
        # the first parameter is surely reserved.
        literal = template.partition("{")[0]
        if literal.startswith(self.prefix) or template == self.prefix[:-1]:
            where = f"under the admin prefix {self.prefix!r}"
        elif template == self.metrics:
            where = "the metrics path"
        else:
            return None
        return (
            f"path {template!r} is {where}, which the gateway answers itself: "
            "the route could never be served; choose another path"
        )
