"""Reading values out of a YAML node tree, collecting problems with their positions.

`NodeReader` is what every check of the route file builds on: it reads a
mapping's entries (reporting unknown and repeated keys), a scalar (reporting one
that YAML cannot construct), a bounded number or a non-empty string, and keeps
going after a problem so that one run lists them all. Positions come from the
nodes PyYAML composes, so a problem points at the key or value to change.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from typing import Any

import yaml

from gateway.routefile.model import Position, Problem

Entries = dict[str, tuple[yaml.Node, yaml.Node]]


# Bounds that keep hints linear in the number of names: a file naming 1,500 unknown
# backends among 1,500 took 5 s and more to check when each typo was compared with
# every name (difflib's ratio per pair), and each message listed all of them.
MAX_COMPARED = 64  # names a typo is compared with, at most
MAX_LISTED = 20  # names a message lists


def hint(value: str, choices: Iterable[str]) -> str:
    """'did you mean X?' for a likely typo of one of `choices`, else what to use."""
    names = _Names.of(frozenset(choices))
    pool = names.near(value)
    if len(pool) <= MAX_COMPARED:
        close = difflib.get_close_matches(value, pool, n=1)
        if close:
            return f"did you mean {close[0]!r}?"
    if len(names.sorted) > MAX_LISTED:
        return f"use one of the {len(names.sorted)} declared names"
    return f"use one of: {', '.join(names.sorted)}"


class _Names:
    """A set of names, indexed for hints when there are many of them.

    A few names are all compared with a typo. Among many, only those one edit
    away are (a letter wrong, missing, extra): each name is indexed under
    itself and every way to delete one of its letters, and two strings one edit
    apart share one of those keys (the "symmetric delete" of spelling checkers).
    The index costs one entry per letter; a lookup, one per letter of the typo."""

    def __init__(self, names: frozenset[str]) -> None:
        self.sorted = sorted(names)
        self.index: dict[str, set[str]] | None = None
        if len(names) > MAX_COMPARED:
            self.index = {}
            for name in self.sorted:
                for key in _deletes(name):
                    self.index.setdefault(key, set()).add(name)

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def of(names: frozenset[str]) -> _Names:
        return _Names(names)

    def near(self, value: str) -> list[str]:
        if self.index is None:
            return self.sorted
        found: set[str] = set()
        for key in _deletes(value):
            found.update(self.index.get(key, ()))
        return sorted(found)


def _deletes(text: str) -> set[str]:
    return {text, *(text[:i] + text[i + 1 :] for i in range(len(text)))}


class NodeReader:
    """Reads node values, collecting every problem instead of stopping at one."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[Problem] = []
        self._loader = yaml.SafeLoader("")
        self._unreadable: set[int] = set()  # ids of nodes already reported unreadable

    def at(self, node: yaml.Node) -> Position:
        return Position(self.source, node.start_mark.line + 1, node.start_mark.column + 1)

    def problem(self, where: yaml.Node | Position | None, message: str) -> None:
        if isinstance(where, yaml.Node):
            where = self.at(where)
        self.problems.append(Problem(where or Position(self.source, 1, 1), message))

    def mapping(self, node: yaml.Node, what: str, known: tuple[str, ...]) -> Entries | None:
        """A mapping's entries by key, reporting unknown and repeated keys."""
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, f"{what} must be a mapping of keys to values")
            return None
        entries: Entries = {}
        for key_node, value_node in node.value:
            key = self.scalar(key_node)
            if not isinstance(key, str):
                self.problem(key_node, f"keys in {what} must be strings")
                continue
            if key in entries:
                self.problem(key_node, f"{key!r} is repeated in {what}; keep only one")
                continue
            if known and key not in known:
                self.problem(key_node, f"unknown key {key!r} in {what}; {hint(key, known)}")
                continue
            entries[key] = (key_node, value_node)
        return entries

    def scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            return _NOT_SCALAR
        # A loader of this check's own: a constructor caches every node it builds, and a
        # shared one would keep each parsed file alive for the life of the process.
        try:
            return self._loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # !tag, 2024-02-30, ...
            reason = getattr(exc, "problem", None) or str(exc)
            if id(node) not in self._unreadable:  # one report per node, however often read
                self._unreadable.add(id(node))
                self.problem(node, f"cannot read this value: {reason}")
            return _UNREADABLE

    def number(
        self, node: yaml.Node, what: str, low: float, high: float, low_open: bool = False
    ) -> float | None:
        """A number from `low` (or above it) to `high`; anything else is reported."""
        value = self.scalar(node)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and (low < value or (value == low and not low_open)) and value <= high:
            return float(value)
        bound = f"above {low:g}" if low_open else f"from {low:g}"
        self.problem(node, f"{what} must be a number {bound} to {high:g} (got {value!r})")
        return None

    def integer(self, node: yaml.Node, what: str, low: int, high: int) -> int | None:
        """A whole number from `low` to `high`; anything else is reported."""
        value = self.scalar(node)
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
        self.problem(node, f"{what} must be a whole number from {low} to {high} (got {value!r})")
        return None

    def flag(self, node: yaml.Node, what: str) -> bool | None:
        value = self.scalar(node)
        if not isinstance(value, bool):
            self.problem(node, f"{what} must be true or false")
            return None
        return value

    def string(self, node: yaml.Node, what: str) -> str | None:
        value = self.scalar(node)
        if not isinstance(value, str) or not value.strip():
            self.problem(node, f"{what} must be a non-empty string")
            return None
        return value.strip()


class _Unusable:
    """What `NodeReader.scalar` gives for a value that is no usable scalar; it reads
    well in a problem's "(got ...)"."""

    def __init__(self, shown: str) -> None:
        self.shown = shown

    def __repr__(self) -> str:
        return self.shown


_NOT_SCALAR = _Unusable("a list or mapping")
_UNREADABLE = _Unusable("an unreadable value")
