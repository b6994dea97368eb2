"""The JSON contract, checked against every implementation of it.

Each test runs once per entry of ``TARGETS``; a target is a factory for a test client
used as a context manager. Both apps must give the same status codes, the same
``Location`` and the byte-identical error bodies.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from legacy_flask.db import DB_ENV_VAR
from tests.support import (
    ISO_UTC,
    assert_book,
    gateway_test_client,
    legacy_test_client,
    new_test_client,
)

TARGETS: dict[str, Callable[[], AbstractContextManager[TestClient]]] = {
    "legacy": legacy_test_client,
    "new": new_test_client,
    "gateway-new": lambda: gateway_test_client("new"),
    "gateway-legacy": lambda: gateway_test_client("legacy"),
}

JSON = {"Content-Type": "application/json"}


@pytest.fixture(params=list(TARGETS))
def api(request: pytest.FixtureRequest) -> Iterator[TestClient]:
    with TARGETS[request.param]() as client:
        yield client


def error_bytes(message: str) -> bytes:
    """The exact error body both apps send."""
    return json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":")).encode()


def assert_error(response: Any, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.content == error_bytes(message)


def create(api: TestClient, **fields: Any) -> dict[str, Any]:
    response = api.post("/books", json=fields)
    assert response.status_code == 201, response.text
    book: dict[str, Any] = response.json()
    return book


# --- success paths ---------------------------------------------------------------


def test_list_is_empty_at_first(api: TestClient) -> None:
    response = api.get("/books")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == []


def test_create_returns_201_location_and_the_stored_book(api: TestClient) -> None:
    response = api.post(
        "/books", json={"title": "  Dune ", "author": "Frank Herbert", "year": 1965}
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    book = response.json()
    assert_book(book, title="Dune", author="Frank Herbert", year=1965)
    assert response.headers["location"] == f"/books/{book['id']}"
    assert api.get(response.headers["location"]).json() == book


def test_create_without_year_stores_null(api: TestClient) -> None:
    book = create(api, title="Beowulf", author="Unknown")
    assert_book(book, title="Beowulf", author="Unknown", year=None)


def test_create_accepts_explicit_null_year_and_non_ascii(api: TestClient) -> None:
    book = create(api, title="Der Zauberberg", author="Thomas Mann ☃", year=None)
    assert_book(book, title="Der Zauberberg", author="Thomas Mann ☃", year=None)


def test_get_book(api: TestClient) -> None:
    book = create(api, title="Emma", author="Jane Austen", year=1815)
    response = api.get(f"/books/{book['id']}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == book


def test_head_book_has_headers_but_no_body(api: TestClient) -> None:
    book = create(api, title="Emma", author="Jane Austen", year=1815)
    get = api.get(f"/books/{book['id']}")
    head = api.head(f"/books/{book['id']}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == str(len(get.content))


def test_head_unknown_book_is_404(api: TestClient) -> None:
    response = api.head("/books/404")
    assert response.status_code == 404
    assert response.content == b""


def test_list_is_ordered_by_id(api: TestClient) -> None:
    books = [create(api, title=f"Volume {n}", author="A. Writer", year=2000 + n) for n in range(3)]
    assert api.get("/books").json() == books
    assert [book["id"] for book in books] == sorted(book["id"] for book in books)


def test_list_filters_by_exact_author(api: TestClient) -> None:
    le_guin = create(api, title="The Dispossessed", author="Ursula K. Le Guin", year=1974)
    create(api, title="Dune", author="Frank Herbert", year=1965)
    lathe = create(api, title="The Lathe of Heaven", author="Ursula K. Le Guin", year=1971)
    response = api.get("/books", params={"author": "Ursula K. Le Guin"})
    assert response.status_code == 200
    assert response.json() == [le_guin, lathe]
    assert api.get("/books", params={"author": "ursula k. le guin"}).json() == []
    assert api.get("/books", params={"author": "Ursula"}).json() == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"title": " The Hobbit "}, {"title": "The Hobbit"}),
        ({"author": "J. R. R. Tolkien"}, {"author": "J. R. R. Tolkien"}),
        ({"year": 1937}, {"year": 1937}),
        ({"year": None}, {"year": None}),
        ({"title": "T", "author": "A", "year": -500}, {"title": "T", "author": "A", "year": -500}),
    ],
)
def test_update_changes_only_the_given_fields(
    api: TestClient, changes: dict[str, Any], expected: dict[str, Any]
) -> None:
    book = create(api, title="Hobbit", author="Tolkien", year=1936)
    response = api.put(f"/books/{book['id']}", json=changes)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    updated = response.json()
    want = {**book, **expected}
    assert_book(
        updated, book_id=book["id"], title=want["title"], author=want["author"], year=want["year"]
    )
    assert updated["updated_at"] >= book["updated_at"]
    assert api.get(f"/books/{book['id']}").json() == updated


def test_delete_returns_204_with_empty_body(api: TestClient) -> None:
    book = create(api, title="Ephemera", author="Someone")
    response = api.delete(f"/books/{book['id']}")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(api.get(f"/books/{book['id']}"), 404, f"book {book['id']} not found")
    assert_error(api.delete(f"/books/{book['id']}"), 404, f"book {book['id']} not found")
    assert api.get("/books").json() == []


def test_me_without_a_login_is_401(api: TestClient) -> None:
    assert_error(api.get("/me"), 401, "unauthorized")


def test_logout_returns_204_with_empty_body(api: TestClient) -> None:
    response = api.post("/logout")
    assert response.status_code == 204
    assert response.content == b""
    assert "content-type" not in response.headers


# --- errors ------------------------------------------------------------------------

NOT_AN_OBJECT = "request body must be a JSON object"

BAD_BODIES = [
    pytest.param(b"{not json", NOT_AN_OBJECT, id="invalid-json"),
    pytest.param(b"", NOT_AN_OBJECT, id="empty-body"),
    pytest.param(b"[]", NOT_AN_OBJECT, id="array"),
    pytest.param(b"null", NOT_AN_OBJECT, id="null"),
    pytest.param(b'"title"', NOT_AN_OBJECT, id="string"),
    pytest.param(b"42", NOT_AN_OBJECT, id="number"),
    pytest.param(b"\xff\xfe\x00{", NOT_AN_OBJECT, id="not-utf8"),
]

CREATE_ERRORS = [
    pytest.param({"title": "T", "author": "A", "isbn": "x"}, "unknown field: isbn", id="unknown"),
    pytest.param({"zeta": 1, "alpha": 2}, "unknown field: alpha", id="unknown-sorted-first"),
    pytest.param({"id": 3, "title": 5}, "unknown field: id", id="unknown-before-title"),
    pytest.param({"ünknown": 1}, "unknown field: ünknown", id="unknown-non-ascii"),
    pytest.param({}, "title is required", id="empty-object"),
    pytest.param({"author": "A"}, "title is required", id="no-title"),
    pytest.param({"author": 5, "year": "x"}, "title is required", id="title-before-author"),
    pytest.param({"title": "T"}, "author is required", id="no-author"),
    pytest.param({"title": "T", "year": "x"}, "author is required", id="author-before-year"),
    pytest.param({"title": "", "author": "A"}, "title must be a non-empty string", id="t-empty"),
    pytest.param(
        {"title": " \t\n", "author": "A"}, "title must be a non-empty string", id="t-blank"
    ),
    pytest.param({"title": None, "author": "A"}, "title must be a non-empty string", id="t-null"),
    pytest.param({"title": 12, "author": "A"}, "title must be a non-empty string", id="t-number"),
    pytest.param({"title": ["T"], "author": "A"}, "title must be a non-empty string", id="t-list"),
    pytest.param({"title": "T", "author": ""}, "author must be a non-empty string", id="a-empty"),
    pytest.param({"title": "T", "author": False}, "author must be a non-empty string", id="a-bool"),
    pytest.param({"title": "T", "author": "A", "year": "1999"}, "year must be an integer or null"),
    pytest.param({"title": "T", "author": "A", "year": 1999.0}, "year must be an integer or null"),
    pytest.param({"title": "T", "author": "A", "year": 1999.5}, "year must be an integer or null"),
    pytest.param({"title": "T", "author": "A", "year": True}, "year must be an integer or null"),
    pytest.param({"title": "T", "author": "A", "year": [1]}, "year must be an integer or null"),
    pytest.param({"title": "T", "author": "A", "year": 2**63}, "year is out of range"),
]

UPDATE_ERRORS = [
    pytest.param({}, "no fields to update", id="empty-object"),
    pytest.param({"title": "T", "updated_at": "x"}, "unknown field: updated_at", id="unknown"),
    pytest.param({"title": None}, "title must be a non-empty string", id="t-null"),
    pytest.param({"title": "  "}, "title must be a non-empty string", id="t-blank"),
    pytest.param({"author": None}, "author must be a non-empty string", id="a-null"),
    pytest.param({"author": 1, "title": 1}, "title must be a non-empty string", id="t-before-a"),
    pytest.param({"year": "MMXX"}, "year must be an integer or null", id="year-text"),
    pytest.param({"year": False}, "year must be an integer or null", id="year-bool"),
    pytest.param({"year": -(2**63) - 1}, "year is out of range", id="year-too-small"),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_create_rejects_a_body_that_is_not_an_object(
    api: TestClient, body: bytes, message: str
) -> None:
    assert_error(api.post("/books", content=body, headers=JSON), 400, message)


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_update_rejects_a_body_that_is_not_an_object(
    api: TestClient, body: bytes, message: str
) -> None:
    book = create(api, title="T", author="A")
    assert_error(api.put(f"/books/{book['id']}", content=body, headers=JSON), 400, message)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_json_body_needs_a_json_content_type(api: TestClient, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = b'{"title": "T", "author": "A"}'
    assert_error(api.post("/books", content=body, headers=headers), 400, NOT_AN_OBJECT)


def test_a_json_suffix_content_type_is_accepted(api: TestClient) -> None:
    body = b'{"title": "T", "author": "A"}'
    headers = {"Content-Type": "application/vnd.bookstore+json; charset=utf-8"}
    assert api.post("/books", content=body, headers=headers).status_code == 201


@pytest.mark.parametrize(("payload", "message"), CREATE_ERRORS)
def test_create_validation_errors(api: TestClient, payload: dict[str, Any], message: str) -> None:
    assert_error(api.post("/books", json=payload), 400, message)
    assert api.get("/books").json() == []


@pytest.mark.parametrize(("payload", "message"), UPDATE_ERRORS)
def test_update_validation_errors(api: TestClient, payload: dict[str, Any], message: str) -> None:
    book = create(api, title="T", author="A", year=1)
    assert_error(api.put(f"/books/{book['id']}", json=payload), 400, message)
    assert api.get(f"/books/{book['id']}").json() == book


def test_validation_comes_before_the_lookup(api: TestClient) -> None:
    assert_error(api.put("/books/999", json={}), 400, "no fields to update")
    assert_error(api.put("/books/999", json={"title": "T"}), 404, "book 999 not found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("book_id", ["999", "9223372036854775807", "99999999999999999999999"])
def test_unknown_book_is_404(api: TestClient, method: str, book_id: str) -> None:
    response = api.request(method, f"/books/{book_id}", json={"year": 1})
    assert_error(response, 404, f"book {book_id} not found")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "path", ["/books/abc", "/books/-1", "/books/+1", "/books/1.0", "/books/1_0"]
)
def test_a_book_id_that_is_not_digits_is_an_unknown_path(
    api: TestClient, method: str, path: str
) -> None:
    create(api, title="T", author="A")
    assert_error(api.request(method, path, json={"year": 1}), 404, "not found")


@pytest.mark.parametrize("path", ["/", "/nope", "/books/", "/books/1/", "/books/1/extra"])
def test_unknown_path_is_json_404(api: TestClient, path: str) -> None:
    create(api, title="T", author="A")
    assert_error(api.get(path), 404, "not found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/books/1", {"GET", "HEAD", "PUT", "DELETE"}),
        ("POST", "/books/1", {"GET", "HEAD", "PUT", "DELETE"}),
        ("PUT", "/books", {"GET", "HEAD", "POST"}),
        ("DELETE", "/books", {"GET", "HEAD", "POST"}),
    ],
)
def test_wrong_method_is_json_405_with_allow(
    api: TestClient, method: str, path: str, allowed: set[str]
) -> None:
    create(api, title="T", author="A")
    response = api.request(method, path, json={"title": "x"})
    assert_error(response, 405, "method not allowed")
    assert allowed <= {m.strip() for m in response.headers["allow"].split(",")}


# --- the targets agree with each other -----------------------------------------------


def _transcript(client: TestClient) -> list[tuple[Any, ...]]:
    """Run a fixed session of requests; record what a client can observe."""
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/books", {}),
        ("POST", "/books", {"json": {"title": "Dune", "author": "Frank Herbert", "year": 1965}}),
        ("POST", "/books", {"json": {"title": "Emma", "author": "Jane Austen"}}),
        ("POST", "/books", {"json": {"title": "Emma"}}),
        ("POST", "/books", {"json": {"title": "X", "author": "Y", "extra": 1}}),
        ("POST", "/books", {"content": b"[", "headers": JSON}),
        ("GET", "/books", {}),
        ("GET", "/books?author=Jane%20Austen", {}),
        ("GET", "/books/1", {}),
        ("HEAD", "/books/1", {}),
        ("GET", "/books/3", {}),
        ("GET", "/books/x", {}),
        ("PUT", "/books/2", {"json": {"year": 1815}}),
        ("PUT", "/books/2", {"json": {}}),
        ("PUT", "/books/2", {"json": {"year": 1.5}}),
        ("PUT", "/books/3", {"json": {"year": 1}}),
        ("PATCH", "/books/2", {"json": {"year": 1}}),
        ("DELETE", "/books/1", {}),
        ("DELETE", "/books/1", {}),
        ("GET", "/books", {}),
        ("GET", "/missing", {}),
    ]
    transcript: list[tuple[Any, ...]] = []
    for method, url, kwargs in requests:
        response = client.request(method, url, **kwargs)
        body: Any = response.content
        # Books are compared as parsed JSON; error bodies must match byte for byte.
        is_json = response.headers.get("content-type") == "application/json"
        if is_json and response.content and response.status_code < 400:
            body = json.loads(response.content)
        text = json.dumps(body) if not isinstance(body, bytes) else body.decode()
        for stamp in set(ISO_UTC.findall(text)):
            text = text.replace(stamp, "<timestamp>")
        transcript.append(
            (
                method,
                url,
                response.status_code,
                response.headers.get("content-type"),
                response.headers.get("location"),
                text,
            )
        )
    return transcript


def test_all_targets_answer_a_session_identically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    transcripts = {}
    for name, factory in TARGETS.items():
        monkeypatch.setenv(DB_ENV_VAR, str(tmp_path / f"{name}.db"))
        with factory() as client:
            transcripts[name] = _transcript(client)
    reference_name, reference = next(iter(transcripts.items()))
    assert [row[2] for row in reference] == [
        200, 201, 201, 400, 400, 400, 200, 200, 200, 200, 404, 404,
        200, 400, 400, 404, 405, 204, 404, 200, 404,
    ]  # fmt: skip
    for name, transcript in transcripts.items():
        assert transcript == reference, f"{name} differs from {reference_name}"


def test_new_app_documents_its_real_responses() -> None:
    with new_test_client() as client:
        spec = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    operations = spec["paths"]["/books/{book_id}"]
    assert set(operations) == {"get", "head", "put", "delete"}
    assert set(operations["put"]["responses"]) == {"200", "400", "404"}
    assert "422" not in json.dumps(spec["paths"])
    events = spec["paths"]["/books/events"]["get"]
    assert "text/event-stream" in events["responses"]["200"]["content"]
