"""A route's `strip_prefix`: its spelling, and that the route's path lies under it.

The prefix is compared with the path a client sent as text (`gateway.prefix`), so it
is written the one way a path can carry it unencoded: segments of RFC 3986 `pchar`
without percent-encoding (letters, digits and `-._~!$&'()*+,;=:@`), no empty, `.` or
`..` segment, no trailing slash. Every path the route matches must begin with it,
whole segments at a time: else some requests would reach the backends with nothing
to strip.
"""

from __future__ import annotations

import re

import yaml

from gateway.matching import Template
from gateway.routefile.nodes import NodeReader

_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")


def prefix_problem(prefix: str) -> str | None:
    """Why `prefix` cannot be a `strip_prefix`, or None when it can."""
    if not prefix.startswith("/") or prefix == "/":
        return f"'strip_prefix' {prefix!r} must start with '/' and name at least one segment"
    if prefix.endswith("/"):
        return f"'strip_prefix' {prefix!r} must not end with '/'; write {prefix.rstrip('/')!r}"
    for segment in prefix[1:].split("/"):
        if segment in ("", ".", ".."):
            return f"'strip_prefix' {prefix!r} has an empty, '.' or '..' segment"
        if not _SEGMENT_RE.match(segment):
            return (
                f"'strip_prefix' {prefix!r}: segment {segment!r} has a character other than "
                "ASCII letters, digits and -._~!$&'()*+,;=:@ (no '%', '{', '?' or spaces)"
            )
    return None


def outside_problem(template: Template, prefix: str) -> str | None:
    """Why a route whose path is `template` cannot strip `prefix`, or None when every
    path it matches begins with it."""
    wanted = prefix[1:].split("/")
    segments = template.segments
    under = len(segments) >= len(wanted) and all(
        s.kind == "literal" and s.value == w for s, w in zip(segments, wanted, strict=False)
    )
    if under:
        return None
    return (
        f"path {template.text!r} is not under 'strip_prefix' {prefix!r}: every path the "
        f"route matches must begin with it; write the path as {prefix + '/...'!r} or "
        "change the prefix"
    )


def strip_prefix(
    reader: NodeReader,
    entry: tuple[yaml.Node, yaml.Node] | None,
    what: str,
    template: Template | None,
) -> tuple[bool, str | None]:
    """(valid, prefix) of a route's `strip_prefix` entry, its problems reported to
    `reader`; `template` is the route's path when that is valid."""
    if entry is None:
        return True, None
    node = entry[1]
    prefix = reader.string(node, f"{what}: 'strip_prefix' (a path such as /api/v2)")
    if prefix is None:
        return False, None
    problem = prefix_problem(prefix)
    if problem is None and template is not None:
        problem = outside_problem(template, prefix)
    if problem is not None:
        reader.problem(node, f"{what}: {problem}")
        return False, None
    return True, prefix
