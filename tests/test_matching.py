"""Matching precedence, documented in gateway/matching.py and the README."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import matching
from gateway.matching import Router, parse_template


def router(*routes: tuple[str, str, tuple[str, ...] | None]) -> Router[str]:
    r: Router[str] = Router()
    for name, path, methods in routes:
        r.add(parse_template(path), methods, name)
    return r


def test_literal_beats_parameter_and_parameter_beats_rest() -> None:
    r = router(
        ("rest", "/books/{tail:path}", None),
        ("param", "/books/{book_id}", None),
        ("literal", "/books/events", None),
    )
    assert r.match("GET", "/books/events") == "literal"
    assert r.match("GET", "/books/7") == "param"
    assert r.match("GET", "/books/7/reviews") == "rest"
    assert r.match("GET", "/books/") == "rest"  # {tail:path} may be empty
    assert r.match("GET", "/books") is None


def test_route_with_methods_beats_route_without() -> None:
    r = router(("any", "/books", None), ("get", "/books", ("GET", "HEAD")))
    assert r.match("GET", "/books") == "get"
    assert r.match("HEAD", "/books") == "get"
    assert r.match("POST", "/books") == "any"


def test_methods_are_exact() -> None:
    r = router(("get", "/books", ("GET",)))
    assert r.match("GET", "/books") == "get"
    assert r.match("HEAD", "/books") is None
    assert r.match("POST", "/books") is None


def test_more_specific_branch_that_cannot_accept_falls_back() -> None:
    r = router(("events", "/books/events", ("GET",)), ("update", "/books/{id}", ("PUT",)))
    assert r.match("GET", "/books/events") == "events"
    assert r.match("PUT", "/books/events") == "update"  # the literal route has no PUT
    assert r.match("DELETE", "/books/events") is None


def test_first_differing_segment_decides() -> None:
    r = router(("a", "/{x}/static", None), ("b", "/users/{id}", None))
    assert r.match("GET", "/users/static") == "b"  # literal 'users' wins at segment one
    assert r.match("GET", "/teams/static") == "a"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/", "root"), ("/books", None), ("/books/", None), ("//", None), ("/books//1", None)],
)
def test_exact_segments(path: str, expected: str | None) -> None:
    r = router(("root", "/", None), ("get", "/books/{id}/x", None))
    assert r.match("GET", path) == expected


def test_parameters_never_match_empty_segments() -> None:
    r = router(("get", "/books/{id}", None))
    assert r.match("GET", "/books/1") == "get"
    assert r.match("GET", "/books/") is None


def test_large_tables_match_by_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """A match visits the trie nodes along the path: as many with 10,000 routes as with 10."""
    visits = 0
    walk = matching._walk

    def counting_walk(*args: Any) -> Any:
        nonlocal visits
        visits += 1
        return walk(*args)

    monkeypatch.setattr(matching, "_walk", counting_walk)

    def cost(size: int, path: str) -> tuple[int | None, int]:
        nonlocal visits
        r: Router[int] = Router()
        for i in range(size):
            r.add(parse_template(f"/svc{i}/items/{{item_id}}"), ("GET",), i)
        visits = 0
        found = r.match("GET", path)
        return found, visits

    assert cost(10_000, "/svc9999/items/abc") == (9999, 4)  # root, svc9999, items, {item_id}
    assert cost(10_000, "/svc0/items/abc") == (0, 4)
    assert cost(10, "/svc9/items/abc") == (9, 4)
    assert cost(10_000, "/svc10000/items/abc") == (None, 1)  # no such literal: stop at the root


def reference_match(
    routes: list[tuple[str, tuple[str, ...] | None]], method: str, path: str
) -> int | None:
    """The precedence rule, stated over the route list (no trie): compare candidates
    segment by segment, a literal before a parameter before a `{x:path}` rest; a route
    with the method named before one for any method; a later route wins a tie."""
    segments = path[1:].split("/")

    def rank(template: str) -> tuple[int, ...] | None:
        parts = template[1:].split("/")
        ranks: list[int] = []
        for index, part in enumerate(parts):
            if part.endswith(":path}"):
                return (*ranks, 2) if index < len(segments) else None
            if index >= len(segments):
                return None
            if part.startswith("{"):
                if not segments[index]:
                    return None
                ranks.append(1)
            elif part == segments[index]:
                ranks.append(0)
            else:
                return None
        return tuple(ranks) if len(parts) == len(segments) else None

    best: tuple[tuple[int, ...], int, int] | None = None
    for index, (template, methods) in enumerate(routes):
        ranked = rank(template)
        if ranked is None or (methods is not None and method not in methods):
            continue
        key = (ranked, 0 if methods is not None else 1, -index)
        if best is None or key < best:
            best = key
    return None if best is None else -best[2]


TEMPLATE_PARTS = ["a", "b", "{p}", "{q}"]


@settings(max_examples=300, deadline=None)
@given(
    templates=st.lists(
        st.tuples(
            st.lists(st.sampled_from(TEMPLATE_PARTS), max_size=3),
            st.booleans(),
            st.sampled_from([None, ("GET",), ("POST",)]),
        ),
        min_size=1,
        max_size=8,
    ),
    path=st.lists(st.sampled_from(["a", "b", "c", ""]), min_size=1, max_size=4),
    method=st.sampled_from(["GET", "POST"]),
)
def test_the_trie_finds_what_the_precedence_rule_says(
    templates: list[tuple[list[str], bool, tuple[str, ...] | None]], path: list[str], method: str
) -> None:
    """The trie's walk against the rule stated over the route list, on random tables
    and paths (backtracking included)."""
    routes = []
    for parts, rest, methods in templates:
        names = iter(f"v{i}" for i in range(10))
        spelled = [next(names) if p.startswith("{") else p for p in parts]
        template = "/" + "/".join(f"{{{p}}}" if p.startswith("v") else p for p in spelled)
        if rest:
            template = template.rstrip("/") + "/{tail:path}"
        routes.append((template, methods))
    r: Router[int] = Router()
    for index, (template, methods) in enumerate(routes):
        r.add(parse_template(template), methods, index)
    full = "/" + "/".join(path)
    assert r.match(method, full) == reference_match(routes, method, full), (routes, full)
