"""The new app's ``GET /books/events`` Server-Sent Events feed."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import httpx
import pytest
from starlette.testclient import TestClient

from new_fastapi.events import KEEPALIVE, format_event, stream_events
from new_fastapi.repository import BookEvent

TIMEOUT = 5.0


def read_chunks(response: httpx.Response) -> list[bytes]:
    """Every body chunk until the server ends the stream; fails instead of hanging."""
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(response.iter_raw()), daemon=True)
    reader.start()
    reader.join(TIMEOUT)
    assert not reader.is_alive(), f"stream still open after {TIMEOUT}s; got {chunks!r}"
    return chunks


def parse_event(chunk: bytes) -> dict[str, Any]:
    """One chunk must be exactly one event: ``id``, ``event``, ``data``, blank line."""
    text = chunk.decode()
    assert text.endswith("\n\n"), text
    lines = text[:-2].split("\n")
    assert [line.split(": ", 1)[0] for line in lines] == ["id", "event", "data"], text
    fields = dict(line.split(": ", 1) for line in lines)
    return {"id": int(fields["id"]), "event": fields["event"], "data": json.loads(fields["data"])}


def assert_event_stream_headers(response: httpx.Response) -> None:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"


def test_changes_from_both_apps_are_streamed(
    legacy_client: TestClient, new_client: TestClient
) -> None:
    with new_client.stream("GET", "/books/events", params={"limit": 3}) as response:
        assert_event_stream_headers(response)
        created = legacy_client.post("/books", json={"title": "Solaris", "author": "Lem"}).json()
        updated = new_client.put(f"/books/{created['id']}", json={"year": 1961}).json()
        assert legacy_client.delete(f"/books/{created['id']}").status_code == 204
        events = [parse_event(chunk) for chunk in read_chunks(response)]

    assert [event["event"] for event in events] == ["created", "updated", "deleted"]
    assert [event["data"] for event in events] == [created, updated, updated]
    ids = [event["id"] for event in events]
    assert ids == sorted(ids) and len(set(ids)) == 3


def test_stream_starts_after_the_latest_event(
    legacy_client: TestClient, new_client: TestClient
) -> None:
    new_client.post("/books", json={"title": "Before", "author": "A"})
    with new_client.stream("GET", "/books/events?limit=1") as response:
        after = legacy_client.post("/books", json={"title": "After", "author": "B"}).json()
        events = [parse_event(chunk) for chunk in read_chunks(response)]
    assert [(event["event"], event["data"]) for event in events] == [("created", after)]


def test_last_event_id_resumes_after_that_event(new_client: TestClient) -> None:
    book = new_client.post("/books", json={"title": "T", "author": "A"}).json()
    new_client.put(f"/books/{book['id']}", json={"title": "T2"})
    new_client.delete(f"/books/{book['id']}")

    headers = {"Last-Event-ID": "1"}
    with new_client.stream("GET", "/books/events?limit=2", headers=headers) as response:
        assert_event_stream_headers(response)
        events = [parse_event(chunk) for chunk in read_chunks(response)]
    assert [(event["id"], event["event"]) for event in events] == [(2, "updated"), (3, "deleted")]
    assert events[0]["data"]["title"] == "T2"


def test_limit_closes_the_stream_after_that_many_events(new_client: TestClient) -> None:
    for n in range(3):
        new_client.post("/books", json={"title": f"T{n}", "author": "A"})
    headers = {"Last-Event-ID": "0"}
    with new_client.stream("GET", "/books/events?limit=2", headers=headers) as response:
        chunks = read_chunks(response)  # returns only because the server closed the stream
    assert [parse_event(chunk)["data"]["title"] for chunk in chunks] == ["T0", "T1"]


@pytest.mark.parametrize(
    ("url", "headers", "message"),
    [
        ("/books/events?limit=0", {}, "invalid query parameter: limit"),
        ("/books/events?limit=many", {}, "invalid query parameter: limit"),
        ("/books/events", {"Last-Event-ID": "abc"}, "invalid header parameter: last-event-id"),
        ("/books/events", {"Last-Event-ID": "-1"}, "invalid header parameter: last-event-id"),
    ],
)
def test_bad_parameters_are_400(
    new_client: TestClient, url: str, headers: dict[str, str], message: str
) -> None:
    response = new_client.get(url, headers=headers)
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_event_wire_format() -> None:
    event = BookEvent(id=7, kind="updated", book='{"id":1,"title":"T"}')
    assert format_event(event) == b'id: 7\nevent: updated\ndata: {"id":1,"title":"T"}\n\n'
    multiline = BookEvent(id=8, kind="created", book="a\r\nb\rc\u2028d")
    assert (
        format_event(multiline)
        == "id: 8\nevent: created\ndata: a\ndata: b\ndata: c\u2028d\n\n".encode()
    )


def test_idle_stream_sends_keepalives_and_stops_when_the_client_leaves() -> None:
    checks = 0

    async def is_disconnected() -> bool:
        nonlocal checks
        checks += 1
        return checks > 3

    async def collect() -> list[bytes]:
        stream = stream_events(
            0, is_disconnected=is_disconnected, poll_interval=0.01, keepalive_interval=0.0
        )
        with anyio.fail_after(TIMEOUT):
            return [chunk async for chunk in stream]

    chunks = anyio.run(collect)
    assert chunks == [KEEPALIVE] * 3
    assert checks == 4
