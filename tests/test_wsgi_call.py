"""How the gateway calls a WSGI app and relays its answer (`gateway.wsgi_call`), and
how a backend's threads are shared (`gateway.wsgi`): through a real server."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import Gateway
from gateway.settings import Settings
from gateway.types import Message
from gateway.wsgi_call import QUEUE, WSGICall
from tests import wsgi_call_apps
from tests.harness import GatewayProcess, ThreadServer, write_routes

ROUTES = """\
version: 1
backends:
  legacy: {wsgi: "tests.wsgi_call_apps:app", threads: 1, timeout: 10}
default: legacy
routes:
  - {id: hold, path: /hold, backend: legacy, timeout: 0.5}
  - {id: hung, path: /hung, backend: legacy, timeout: 0.5}
"""


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    routes = write_routes(tmp_path_factory.mktemp("wsgi_call"), ROUTES)
    with ThreadServer(Gateway(Settings(config=str(routes), wsgi_wait=10))) as server:
        yield server.url


def test_chunks_and_close(url: str) -> None:
    r = httpx.get(url + "/plain", timeout=10)
    assert (r.status_code, r.text) == (200, "one two")
    assert "/plain" in wsgi_call_apps.closed


def test_an_empty_body_still_sends_the_start(url: str) -> None:
    r = httpx.get(url + "/empty", timeout=10)
    assert (r.status_code, r.headers["x-empty"], r.content) == (204, "yes", b"")
    assert "/empty" in wsgi_call_apps.closed


def test_the_write_callable_comes_before_the_iterable(url: str) -> None:
    r = httpx.get(url + "/write", timeout=10)
    assert (r.status_code, r.text) == (201, "written and returned")


def test_exc_info_replaces_a_start_that_has_not_gone_out(url: str) -> None:
    r = httpx.get(url + "/replaced", timeout=10)
    assert (r.status_code, r.headers["x-why"], r.text) == (500, "late", "replaced")


def test_a_failure_before_the_first_byte_gets_the_gateways_answer(url: str) -> None:
    r = httpx.get(url + "/fails-before-body", timeout=10)
    assert r.status_code == 500
    assert r.json()["kind"] == "exception"
    assert r.json()["request_id"] == r.headers["x-request-id"]


def test_a_failure_mid_body_cuts_the_answer_short(url: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(url + "/fails-mid-body", timeout=10)
    assert httpx.get(url + "/plain", timeout=10).status_code == 200  # the thread is back


def test_many_chunks_reach_a_slow_reader_whole_and_in_order(url: str) -> None:
    with httpx.stream("GET", url + "/many", timeout=10) as r:
        received = b""
        for part in r.iter_raw(64):
            received += part
            time.sleep(0.001)
    assert received == b"".join(b"%03d\n" % i for i in range(200))


def test_a_request_waits_for_the_thread_and_gets_it_when_it_frees(url: str) -> None:
    """One thread: the second request waits (within --wsgi-wait) while a first holds
    it past the first one's timeout, and gets the thread when the app returns; a third,
    sent later, is served after it (first come, first served)."""
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        held = pool.submit(httpx.get, url + "/hold", timeout=10)
        time.sleep(0.2)
        second = pool.submit(httpx.get, url + "/write", timeout=10)
        time.sleep(0.2)
        third = pool.submit(httpx.get, url + "/plain", timeout=10)
        assert held.result().status_code == 504  # its timeout, the thread still taken
        assert second.result().status_code == 201
        assert time.monotonic() - started >= wsgi_call_apps.HOLD_SECONDS
        assert third.result().status_code == 200


def test_a_wait_past_wsgi_wait_is_a_503_and_leaves_the_queue(tmp_path: Path) -> None:
    routes = write_routes(tmp_path, ROUTES)
    with ThreadServer(Gateway(Settings(config=str(routes), wsgi_wait=0.3))) as server:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = pool.submit(httpx.get, server.url + "/hold", timeout=10)
            time.sleep(0.2)
            busy = httpx.get(server.url + "/plain", timeout=10)
            assert busy.status_code == 503
            assert busy.json()["kind"] == "busy"
            assert held.result().status_code == 504
        # The request that gave up waiting holds no place: the freed thread serves.
        time.sleep(wsgi_call_apps.HOLD_SECONDS)
        assert httpx.get(server.url + "/plain", timeout=10).status_code == 200


def test_a_hung_handler_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    """Its request timed out long ago; SIGTERM still ends the gateway at once, with the
    handler still running on its thread."""
    with GatewayProcess(write_routes(tmp_path, ROUTES)) as gateway:
        assert gateway.proc is not None
        assert httpx.get(gateway.url + "/hung", timeout=10).status_code == 504
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            assert gateway.proc.wait(30) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"gateway still running 30s after SIGTERM:\n{gateway.log()}")
        assert time.monotonic() - started < wsgi_call_apps.HUNG_SECONDS


class Endless:
    """A WSGI app that streams 100 chunks as fast as it is let, counting them."""

    def __init__(self) -> None:
        self.produced = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for _ in range(100):
            self.produced += 1
            yield b"x"


async def slow_client(app: Endless, stop: bool) -> tuple[list[Message], list[bool], int]:
    """Relay `app`'s answer to a client that stops reading after its first chunk, for
    half a second: then reads on, or (`stop`) leaves (the relay is cancelled). What
    the client got, the thread's releases, and how many chunks the app had produced
    by then."""
    loop = asyncio.get_running_loop()
    released: list[bool] = []
    call = WSGICall(app, {}, loop, lambda: released.append(True))
    reading = asyncio.Event()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) == 2:
            await reading.wait()

    thread = threading.Thread(target=call.run)
    thread.start()
    relay = asyncio.ensure_future(call.relay(send))
    await asyncio.sleep(0.5)
    produced = app.produced
    if stop:
        relay.cancel()
    else:
        reading.set()
    with contextlib.suppress(asyncio.CancelledError):
        await relay
    await asyncio.to_thread(thread.join, 10)
    await asyncio.sleep(0.1)  # the thread's own release, through the loop
    return sent, released, produced


def test_a_thread_runs_at_most_a_queue_ahead_of_a_slow_client() -> None:
    app = Endless()
    sent, released, produced = asyncio.run(slow_client(app, stop=False))
    assert QUEUE <= produced <= 2 * QUEUE  # it waited for the client, then went on
    assert b"".join(m.get("body", b"") for m in sent) == b"x" * 100
    assert sent[-1].get("more_body", False) is False
    assert released == [True]


def test_a_client_gone_mid_stream_frees_the_waiting_thread_once() -> None:
    app = Endless()
    sent, released, produced = asyncio.run(slow_client(app, stop=True))
    assert produced <= 2 * QUEUE
    assert app.produced == 100  # the app ran to its end, its chunks dropped
    assert len(sent) == 2
    assert released == [True]
