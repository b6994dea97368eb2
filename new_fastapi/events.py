"""The ``GET /books/events`` Server-Sent Events feed.

Events come from the ``book_events`` table, which SQLite triggers fill on every change
to ``books``, so changes made through the legacy app show up here too. The table is
polled; all database work runs in a worker thread so the event loop never blocks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import anyio.to_thread
from starlette.responses import StreamingResponse

from new_fastapi.repository import BookEvent, events_after

#: Seconds between two looks at the ``book_events`` table.
POLL_INTERVAL = 0.2
#: Seconds of silence after which a comment line is sent to keep proxies from timing out.
KEEPALIVE_INTERVAL = 15.0
#: Most events fetched in one query.
BATCH_SIZE = 100

KEEPALIVE = b": keep-alive\n\n"


class EventStreamResponse(StreamingResponse):
    """A streaming response with the ``text/event-stream`` media type."""

    media_type = "text/event-stream"


def format_event(event: BookEvent) -> bytes:
    """One event in the SSE wire format, terminated by a blank line."""
    # JSON text has no raw line breaks, but split on SSE's line terminators (only these:
    # str.splitlines would also split on U+2028 and friends) to be safe.
    lines = event.book.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    data = "".join(f"data: {line}\n" for line in lines)
    return f"id: {event.id}\nevent: {event.kind}\n{data}\n".encode()


async def stream_events(
    after_id: int,
    *,
    is_disconnected: Callable[[], Awaitable[bool]],
    limit: int | None = None,
    poll_interval: float = POLL_INTERVAL,
    keepalive_interval: float = KEEPALIVE_INTERVAL,
) -> AsyncIterator[bytes]:
    """Yield events newer than ``after_id`` as they appear, one chunk per event.

    Stops after ``limit`` events (if given) or as soon as ``is_disconnected()`` says the
    client has gone; it is asked before every poll, so within ``poll_interval``.
    """
    sent = 0
    last_write = anyio.current_time()
    while limit is None or sent < limit:
        if await is_disconnected():
            return
        batch = BATCH_SIZE if limit is None else min(BATCH_SIZE, limit - sent)
        events = await anyio.to_thread.run_sync(events_after, after_id, batch)
        for event in events:
            yield format_event(event)
            after_id = event.id
            sent += 1
        now = anyio.current_time()
        if events:
            last_write = now
            if len(events) == batch:
                continue  # there may be more waiting: fetch again without sleeping
        elif now - last_write >= keepalive_interval:
            yield KEEPALIVE
            last_write = now
        await anyio.sleep(poll_interval)
