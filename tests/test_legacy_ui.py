"""The legacy app's HTML pages, through Flask's own test client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from legacy_flask.app import create_app


@pytest.fixture
def anonymous() -> Iterator[FlaskClient]:
    app = create_app()
    app.config["TESTING"] = True
    with app.test_client() as client:
        yield client


@pytest.fixture
def pages(anonymous: FlaskClient) -> FlaskClient:
    """A logged-in user's client: changing books through the pages needs a login."""
    response = anonymous.post("/ui/login", data={"username": "alice", "password": "wonderland"})
    assert response.status_code == 303
    return anonymous


def add_book(pages: FlaskClient, **fields: Any) -> dict[str, Any]:
    response = pages.post("/books", json=fields)
    assert response.status_code == 201
    book: dict[str, Any] = response.get_json()
    return book


def test_list_page_without_books(pages: FlaskClient) -> None:
    response = pages.get("/ui/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "No books yet." in response.text
    assert 'href="/ui/books/new"' in response.text


def test_list_page_links_to_each_book(pages: FlaskClient) -> None:
    dune = add_book(pages, title="Dune", author="Frank Herbert", year=1965)
    emma = add_book(pages, title="Emma", author="Jane Austen")
    html = pages.get("/ui/").text
    assert f'<a href="/ui/books/{dune["id"]}">Dune</a> by Frank Herbert (1965)' in html
    assert f'<a href="/ui/books/{emma["id"]}">Emma</a> by Jane Austen</li>' in html
    assert html.index("Dune") < html.index("Emma")
    assert "No books yet." not in html


def test_new_book_form(pages: FlaskClient) -> None:
    response = pages.get("/ui/books/new")
    assert response.status_code == 200
    assert '<form method="post" action="/ui/books/new">' in response.text
    for name in ("title", "author", "year"):
        assert f'name="{name}" value=""' in response.text


def test_create_through_the_form(pages: FlaskClient) -> None:
    response = pages.post(
        "/ui/books/new", data={"title": " Middlemarch ", "author": "George Eliot", "year": "1871"}
    )
    assert response.status_code == 303
    books = pages.get("/books").get_json()
    assert [(b["title"], b["author"], b["year"]) for b in books] == [
        ("Middlemarch", "George Eliot", 1871)
    ]
    assert response.headers["Location"] == f"/ui/books/{books[0]['id']}"

    detail = pages.get(response.headers["Location"])
    assert detail.status_code == 200
    assert "Book created" in detail.text
    assert "<h1>Middlemarch</h1>" in detail.text
    assert "Book created" not in pages.get(response.headers["Location"]).text  # shown once


def test_form_with_blank_year_creates_a_book_without_year(pages: FlaskClient) -> None:
    response = pages.post("/ui/books/new", data={"title": "Beowulf", "author": "?", "year": " "})
    assert response.status_code == 303
    assert pages.get("/books").get_json()[0]["year"] is None


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"title": "", "author": "Le Guin", "year": "1969"}, "title is required"),
        ({"title": "Left Hand", "author": "   ", "year": "1969"}, "author is required"),
        ({"title": "Left Hand", "author": "Le Guin", "year": "1969a"}, "year must be an integer"),
        ({"title": "Left Hand", "author": "Le Guin", "year": "1e3"}, "year must be an integer"),
    ],
)
def test_form_errors_keep_what_was_typed(
    pages: FlaskClient, form: dict[str, str], message: str
) -> None:
    response = pages.post("/ui/books/new", data=form)
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert 'class="flash flash-error"' in response.text
    assert message in response.text
    for name, value in form.items():
        assert f'name="{name}" value="{value}"' in response.text
    assert pages.get("/books").get_json() == []


def test_detail_page(pages: FlaskClient) -> None:
    book = add_book(pages, title="Kindred", author="Octavia E. Butler", year=1979)
    response = pages.get(f"/ui/books/{book['id']}")
    assert response.status_code == 200
    assert "<h1>Kindred</h1>" in response.text
    assert "<dd>Octavia E. Butler</dd>" in response.text
    assert "<dd>1979</dd>" in response.text
    assert f'datetime="{book["updated_at"]}"' in response.text
    assert f'action="/ui/books/{book["id"]}/delete"' in response.text


def test_unknown_book_page_is_an_html_404(pages: FlaskClient) -> None:
    response = pages.get("/ui/books/999")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "404 Not Found" in response.text
    assert pages.get("/ui/nowhere").status_code == 404
    assert pages.get("/ui/nowhere").mimetype == "text/html"


def test_delete_through_the_page(pages: FlaskClient) -> None:
    book = add_book(pages, title="Ephemera", author="Someone")
    response = pages.post(f"/ui/books/{book['id']}/delete")
    assert response.status_code == 303
    assert response.headers["Location"] == "/ui/"
    listing = pages.get("/ui/")
    assert "Book deleted: Ephemera" in listing.text
    assert "No books yet." in listing.text
    assert pages.get(f"/books/{book['id']}").status_code == 404
    assert pages.post(f"/ui/books/{book['id']}/delete").status_code == 404


def test_delete_needs_post(pages: FlaskClient) -> None:
    book = add_book(pages, title="Sturdy", author="Someone")
    assert pages.get(f"/ui/books/{book['id']}/delete").status_code == 405
    assert pages.get(f"/books/{book['id']}").status_code == 200


def test_everything_user_supplied_is_escaped(pages: FlaskClient) -> None:
    book = add_book(pages, title="<script>alert(1)</script>", author='"Bob" & <i>co</i>')
    for url in ("/ui/", f"/ui/books/{book['id']}"):
        html = pages.get(url).text
        assert "<script>alert(1)</script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "&#34;Bob&#34; &amp; &lt;i&gt;co&lt;/i&gt;" in html

    form = {"title": '"><script>x</script>', "author": "", "year": ""}
    response = pages.post("/ui/books/new", data=form)
    assert response.status_code == 400
    assert "<script>x</script>" not in response.text
    assert 'value="&#34;&gt;&lt;script&gt;x&lt;/script&gt;"' in response.text


def test_the_login_page_logs_in_and_the_nav_says_who(anonymous: FlaskClient) -> None:
    page = anonymous.get("/ui/login")
    assert page.status_code == 200
    assert '<input type="password" name="password"' in page.text
    assert '<a href="/ui/login">Log in</a>' in anonymous.get("/ui/").text
    response = anonymous.post("/ui/login", data={"username": "bob", "password": "builder"})
    assert (response.status_code, response.headers["Location"]) == (303, "/ui/")
    listing = anonymous.get("/ui/").text
    assert "Logged in as bob" in listing
    assert '<span id="user">bob</span>' in listing
    assert anonymous.get("/me").get_json() == {"user": "bob"}


@pytest.mark.parametrize(
    ("username", "password"), [("alice", "builder"), ("carol", "wonderland"), ("", "")]
)
def test_a_wrong_login_is_refused(anonymous: FlaskClient, username: str, password: str) -> None:
    response = anonymous.post("/ui/login", data={"username": username, "password": password})
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text
    assert f'name="username" value="{username}"' in response.text
    assert anonymous.get("/me").status_code == 401


def test_logout_ends_the_session(pages: FlaskClient) -> None:
    response = pages.post("/ui/logout")
    assert (response.status_code, response.headers["Location"]) == (303, "/ui/")
    assert "Logged out" in pages.get("/ui/").text
    assert pages.get("/me").status_code == 401


def test_json_me_and_logout(pages: FlaskClient) -> None:
    assert pages.get("/me").get_json() == {"user": "alice"}
    response = pages.post("/logout")
    assert (response.status_code, response.data, response.content_type) == (204, b"", None)
    response = pages.get("/me")
    assert (response.status_code, response.get_json()) == (401, {"error": "unauthorized"})


def test_changing_books_through_the_pages_needs_a_login(anonymous: FlaskClient) -> None:
    book = add_book(anonymous, title="Kept", author="Someone")
    for method, url in (
        ("GET", "/ui/books/new"),
        ("POST", "/ui/books/new"),
        ("GET", f"/ui/books/{book['id']}/edit"),
        ("POST", f"/ui/books/{book['id']}/edit"),
        ("POST", f"/ui/books/{book['id']}/delete"),
    ):
        response = anonymous.open(url, method=method, data={"title": "X", "author": "Y"})
        assert response.status_code == 303, url
        assert response.headers["Location"] == f"/ui/login?next={url}"
    assert anonymous.get("/books").get_json() == [book]
    assert "Log in to change books" in anonymous.get("/ui/login").text


def test_change_through_the_page(pages: FlaskClient) -> None:
    book = add_book(pages, title="Dune", author="Frank Herbert")
    assert f'href="/ui/books/{book["id"]}/edit"' in pages.get(f"/ui/books/{book['id']}").text
    form = pages.get(f"/ui/books/{book['id']}/edit")
    assert f'action="/ui/books/{book["id"]}/edit"' in form.text
    assert 'name="title" value="Dune"' in form.text
    assert 'name="year" value=""' in form.text
    response = pages.post(
        f"/ui/books/{book['id']}/edit",
        data={"title": "Dune", "author": "Frank Herbert", "year": "1965"},
    )
    assert (response.status_code, response.headers["Location"]) == (
        303,
        f"/ui/books/{book['id']}",
    )
    assert "Book saved" in pages.get(response.headers["Location"]).text
    assert pages.get(f"/books/{book['id']}").get_json()["year"] == 1965
    bad = pages.post(f"/ui/books/{book['id']}/edit", data={"title": "", "author": "F"})
    assert (bad.status_code, "title is required" in bad.text) == (400, True)
    assert pages.get("/ui/books/999/edit").status_code == 404
