"""A real redis-server for tests: on a free loopback port, never the default one.

It keeps its data in an append-only file in the test's directory (so a restart
finds the table again, as a production Redis would), and can be stopped and
started again on the same port, or frozen with SIGSTOP (it keeps accepting
connections, answers nothing).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness import free_port


class RedisServer:
    def __init__(self, directory: Path, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:  # `make test` installs it (deploy/redis/ensure-redis-server)
            pytest.fail("redis-server is not on PATH: run deploy/redis/ensure-redis-server")
        self.binary = binary
        self.directory = directory
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            str(self.directory),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.directory / f"redis-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited early (port {self.port})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.thaw()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def cli(self, *args: str) -> str:
        """Run redis-cli against this server (as someone outside the gateway would)."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        command = ["redis-cli", "-p", str(self.port), *auth, *args]
        done = subprocess.run(command, capture_output=True, check=True, timeout=10)
        return done.stdout.decode()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
