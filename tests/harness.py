"""Helpers to run the gateway (and real servers) in tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.testclient import TestClient

from gateway.app import Gateway
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent

TEST_BACKENDS = """\
backends:
  legacy: {wsgi: "tests.apps:wsgi"}
  new: {asgi: "tests.apps:asgi"}
"""

# The test pair with /books on new, everything else on legacy; tests append routes to it.
BOOKS_ON_NEW = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
default: legacy
routes:
  - {id: books, path: /books, backend: new}
"""
)

# The demo pair with the new app reading the legacy app's session: /me and /logout on new.
SHARED_LOGIN_TABLE = """\
version: 1
backends:
  legacy: {wsgi: "legacy_flask.app:app"}
  new: {asgi: "new_fastapi.app:app", session_from: legacy}
default: legacy
routes:
  - {id: me, path: /me, methods: [GET], backend: new}
  - {id: logout, path: /logout, methods: [POST], backend: new}
"""


def write_routes(directory: Path, text: str, name: str = "routes.yaml") -> Path:
    path = directory / name
    path.write_text(text)
    return path


@contextlib.contextmanager
def gateway_client(
    config: Path, client: tuple[str, int] = ("127.0.0.1", 50000), **settings: Any
) -> Iterator[TestClient]:
    """An in-process gateway (lifespan run) on a route file, behind Starlette's TestClient.

    The client address is loopback unless `client` says otherwise (admin rules depend on it).
    """
    app = Gateway(Settings(config=str(config), **settings))
    with TestClient(app, raise_server_exceptions=False, client=client) as test_client:
        yield test_client


def wait_for(condition: Callable[[], bool], seconds: float = 5.0, what: str = "condition") -> float:
    """Seconds until `condition` held; fails the test, naming `what`, past `seconds`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            pytest.fail(f"{what} not met within {seconds}s")
        time.sleep(0.02)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ThreadServer:
    """A real uvicorn server on loopback, in a thread of this process."""

    def __init__(self, app: Any, **options: Any) -> None:
        self.port = free_port()
        self.config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            proxy_headers=False,  # as `gateway serve` runs: the socket peer is the client
            timeout_graceful_shutdown=1,  # a test may leave a hanging request behind
            **options,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class GatewayProcess:
    """`gateway serve` as a real subprocess, the way operators run it."""

    def __init__(
        self,
        config: Path,
        *args: str,
        env: dict[str, str] | None = None,
        admin_listener: bool = False,
        ready_within: float = 30,
    ) -> None:
        """`admin_listener`: serve the admin API on a port of its own (`admin_url`)."""
        self.port = free_port()
        self.ready_within = ready_within
        self.admin_port = free_port() if admin_listener else self.port
        if admin_listener:
            args = (*args, "--admin-listen", f"127.0.0.1:{self.admin_port}")
        self.config = config
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.log_path = config.parent / f"gateway-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def __enter__(self) -> GatewayProcess:
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--config",
                str(self.config),
                "--port",
                str(self.port),
                "--no-access-log",
                *self.args,
            ],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.ready_within
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited early:\n{self.log()}")
            try:
                if httpx.get(self.admin_url + "/-/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"gateway did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
