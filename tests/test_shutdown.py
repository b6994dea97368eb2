"""Stopping `gateway serve` with SIGTERM: the drain (gateway/drain.py), its exit code,
and the JSON log format. Real processes on loopback, the demo apps behind them."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, GatewayProcess, free_port

BODY = json.dumps({"title": "Slow Upload", "author": "A. Writer"}).encode()


@pytest.fixture
def demo_routes(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    shutil.copy(ROOT / "routes.yaml", path)
    return path


def wait_exit(gateway: GatewayProcess, seconds: float) -> int:
    assert gateway.proc is not None
    try:
        return gateway.proc.wait(seconds)
    except subprocess.TimeoutExpired:
        pytest.fail(f"gateway still running {seconds}s after SIGTERM:\n{gateway.log()}")


class SlowUpload:
    """A POST whose body arrives in pieces over `seconds`, on a raw socket."""

    def __init__(self, port: int, seconds: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(
            b"POST /books HTTP/1.1\r\nHost: test\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(BODY)}\r\n\r\n".encode()
            + BODY[:5]
        )
        self.seconds = seconds
        self.answer = b""
        self.thread = threading.Thread(target=self._finish, daemon=True)
        self.thread.start()

    def _finish(self) -> None:
        rest = BODY[5:]
        pieces = 5
        step = -(-len(rest) // pieces)
        for i in range(pieces):
            time.sleep(self.seconds / pieces)
            self.sock.sendall(rest[i * step : (i + 1) * step])
        while chunk := self.sock.recv(65536):  # the gateway closes: Connection: close
            self.answer += chunk
        self.sock.close()


def test_sigterm_drains_a_stream_and_a_slow_upload_then_exits_0(demo_routes: Path) -> None:
    delay, graceful = 2.0, 4.0
    args = ("--shutdown-delay", str(delay), "--graceful-timeout", str(graceful))
    with GatewayProcess(demo_routes, *args) as gateway:
        assert gateway.proc is not None
        stream_closed: list[float] = []

        def follow_events() -> None:
            with httpx.stream("GET", gateway.url + "/books/events", timeout=60) as response:
                assert response.status_code == 200
                opened.set()
                for _ in response.iter_raw():  # ended cleanly, not cut
                    pass
            stream_closed.append(time.monotonic())

        opened = threading.Event()
        follower = threading.Thread(target=follow_events, daemon=True)
        follower.start()
        assert opened.wait(10), "the event stream did not open"

        upload = SlowUpload(gateway.port, seconds=delay + 1.5)  # ends while draining
        time.sleep(0.3)
        sent = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)

        # At once: not ready, and responses close their connections ...
        time.sleep(0.3)
        with httpx.Client(timeout=5) as client:
            ready = client.get(gateway.url + "/-/readyz")
            assert (ready.status_code, ready.json()) == (503, {"status": "draining"})
            assert ready.headers["connection"] == "close"
            # ... but requests are still served during the delay.
            books = client.get(gateway.url + "/books")
            assert books.status_code == 200
            assert books.headers["connection"] == "close"
            assert books.headers["x-gateway-backend"] == "new"

        # After the delay: no new connection is accepted.
        time.sleep(max(0.0, sent + delay + 1.0 - time.monotonic()))
        with pytest.raises(httpx.ConnectError):
            httpx.get(gateway.url + "/-/healthz", timeout=2)

        # The upload that finished while draining got its answer.
        upload.thread.join(15)
        head = upload.answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 201"), upload.answer
        assert b"connection: close" in head

        # The stream is closed only when the graceful timeout has run out, then exit 0.
        assert wait_exit(gateway, delay + graceful + 20) == 0
        follower.join(10)
        assert stream_closed, "the event stream was not closed"
        assert stream_closed[0] - sent >= delay + graceful - 0.5
        log = gateway.log()
        assert "shutdown requested: signal=SIGTERM readyz=503 serving_for=2s" in log
        assert "Traceback" not in log


def test_sigterm_with_nothing_open_exits_0_at_once(demo_routes: Path) -> None:
    with GatewayProcess(demo_routes) as gateway:
        assert gateway.proc is not None
        assert httpx.get(gateway.url + "/books", timeout=5).headers.get("connection") != "close"
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        # Was 143 (-15): uvicorn re-raises the signal it stopped on once done.
        assert wait_exit(gateway, 20) == 0
        assert time.monotonic() - started < 10  # no delay by default, nothing to wait for


def test_a_second_sigterm_ends_the_delay(demo_routes: Path) -> None:
    with GatewayProcess(demo_routes, "--shutdown-delay", "600") as gateway:
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert httpx.get(gateway.url + "/-/readyz", timeout=5).status_code == 503
        assert gateway.proc.poll() is None  # serving out its delay
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        assert wait_exit(gateway, 20) == 0
        assert time.monotonic() - started < 15


def test_every_worker_drains(demo_routes: Path) -> None:
    with GatewayProcess(demo_routes, "--workers", "2", "--shutdown-delay", "3") as gateway:
        assert gateway.proc is not None
        gateway.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        # Each request on a new connection: whichever worker takes it is draining.
        for _ in range(6):
            ready = httpx.get(gateway.url + "/-/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.headers["connection"] == "close"
        assert wait_exit(gateway, 30) == 0


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            (),
            {"GATEWAY_PORT": "tcp://10.0.0.1:8000"},
            "gateway serve: GATEWAY_PORT='tcp://10.0.0.1:8000': expected an integer; "
            "Kubernetes sets this for a Service named 'gateway'",
        ),
        (
            ("--log-format", "xml"),
            {},
            "argument --log-format: invalid choice: 'xml' (choose from 'text', 'json')",
        ),
        (
            (),
            {"GATEWAY_LOG_FORMAT": "xml"},
            "gateway serve: GATEWAY_LOG_FORMAT='xml': expected one of text, json",
        ),
        (
            ("--shutdown-delay", "-1"),
            {},
            "gateway serve: --shutdown-delay -1: shutdown delay must be between 0 and 3600 seconds",
        ),
        (
            (),
            {"GATEWAY_GRACEFUL_TIMEOUT": "nan"},
            (
                "gateway serve: GATEWAY_GRACEFUL_TIMEOUT='nan': "
                "graceful timeout must be between 0 and 3600 seconds"
            ),
        ),
    ],
)
def test_bad_settings_are_refused_with_one_line(
    args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    result = run_serve("--config", "routes.yaml", *args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_format(demo_routes: Path, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--config", str(demo_routes)],
            cwd=ROOT,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(ROOT),
                "BOOKSTORE_DB": str(tmp_path / "books.db"),
                "GATEWAY_PORT": str(port),
                "GATEWAY_LOG_FORMAT": "json",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if httpx.get(url + "/-/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            assert httpx.get(url + "/books?secret=1", timeout=5).status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = log_path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    for entry in entries:
        assert {"time", "level", "logger"} <= entry.keys()
        assert entry["level"] in ("INFO", "WARNING", "ERROR")
    loaded = [e for e in entries if e.get("message", "").startswith("route table loaded:")]
    assert len(loaded) == 1 and loaded[0]["logger"] == "gateway"
    assert "routes=5 backends=legacy,new default=legacy" in loaded[0]["message"]
    (access,) = [e for e in entries if e.get("request_line", "").startswith("GET /books")]
    assert access["logger"] == "uvicorn.access"
    # The query may hold secrets: the access line keeps the path only (test_security.py).
    assert access["request_line"] == "GET /books?... HTTP/1.1"
    assert "secret=1" not in log_path.read_text()
    assert access["status_code"] == 200
    assert access["client_addr"].startswith("127.0.0.1:")
    messages = [e.get("message", "") for e in entries]
    assert any(m.startswith("shutdown requested: signal=SIGTERM") for m in messages)


def test_json_log_keeps_an_exception_on_its_line() -> None:
    from gateway.jsonlog import JsonFormatter

    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.LogRecord(
            "gateway", logging.ERROR, __file__, 1, "failed: %s", ("x",), sys.exc_info()
        )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "failed: x"
    assert entry["level"] == "ERROR"
    assert entry["exception"].endswith("ValueError: bad value")
