"""Steady traffic while routes change: every request's timing, status and backend."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx


@dataclass
class Sample:
    started: float
    finished: float
    status: int  # 0: the request failed without an answer
    backend: str
    error: str = ""


async def request_until(
    stop: asyncio.Event, client: httpx.AsyncClient, path: str, samples: list[Sample]
) -> None:
    """One client: GET `path` again and again until `stop`, each answer or failure a sample."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            r = await client.get(path)
            backend = r.headers.get("x-gateway-backend", "")
            samples.append(Sample(started, time.monotonic(), r.status_code, backend))
        except httpx.HTTPError as exc:
            samples.append(Sample(started, time.monotonic(), 0, "", repr(exc)))
