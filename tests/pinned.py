"""Apps at a team's own versions, older than the venv's: the shared parts of their tests.

`make install` puts older releases in a directory of their own (`.venv/flask2`: Flask
and Werkzeug 2.3; `.venv/fastapi-old`: FastAPI 0.100 on Starlette 0.27). A process of
the venv's interpreter with that directory first on PYTHONPATH imports them instead of
the venv's, and every test checks that it did, so none can pass on the newer ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, write_routes

TIMEOUT = 30  # seconds: generous, on a machine other test runs keep busy
# What a proxy may change: its own headers, the date, the server's name, the framing.
PROXY_HEADERS = {"date", "server", "connection", "transfer-encoding", "x-request-id"}


@dataclass(frozen=True)
class Pinned:
    """Older releases of `modules` in `directory`, for processes that must import them."""

    directory: Path
    modules: tuple[str, ...]
    what: str  # "Flask 2.x", in the message when `make install` has not made them

    def env(self) -> dict[str, str]:
        """The environment of a process that imports these releases first."""
        if not (self.directory / ".installed").is_file():
            pytest.fail(f"{self.what} is not installed in {self.directory}: run `make install`")
        return {**os.environ, "PYTHONPATH": os.pathsep.join([str(self.directory), str(ROOT)])}

    def run_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`gateway ARGS` in such a process, which first checks where it imported them
        from: a command cannot have read the app on the venv's releases."""
        code = (
            f"import sys, {', '.join(self.modules)}\n"
            f"for module in ({', '.join(self.modules)},):\n"
            f"    assert module.__file__.startswith({str(self.directory)!r}), module.__file__\n"
            "from gateway.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n"
        )
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def check_strict(
        self, directory: Path, table: str, summary: str, misrouted: str, warning: str
    ) -> None:
        """`check --strict` passes `table` (`summary` on stdout, nothing on stderr: every
        backend inspected) and fails it plus the `misrouted` route line with `warning`."""
        ok = self.run_cli("check", "--strict", str(write_routes(directory, table)))
        assert ok.returncode == 0, ok.stderr
        assert summary in ok.stdout
        assert ok.stderr == ""
        bad = write_routes(directory, table + misrouted, "misrouted.yaml")
        warned = self.run_cli("check", "--strict", str(bad))
        assert warned.returncode == 1
        assert warning in warned.stderr

    @contextmanager
    def alone(self, command: Sequence[str], log: Path, port: int) -> Iterator[str]:
        """An app served alone by `command` (listening on `port`), up once `/versions`
        answers; its URL."""
        url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env(), stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the app alone did not start:\n{log.read_text()}")
                try:
                    httpx.get(url + "/versions", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(15)


def seen(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """What a client sees of an answer, less what a proxy may change."""
    headers = sorted(
        (name, value)
        for name, value in response.headers.multi_items()
        if name not in PROXY_HEADERS and not name.startswith("x-gateway-")
    )
    return response.status_code, headers, response.content
