"""The fidelity suite's servers, each a real subprocess on a free loopback port:
gunicorn and uvicorn as teams run their apps alone, nginx in front as a typical
reverse proxy, and `gateway serve` on a route file of the suite's."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness import ROOT


@contextlib.contextmanager
def serving(
    argv: list[str], port: int, log: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    """A server subprocess, ready once its port accepts; stopped (and waited for) after."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            # One hash seed for every server: an app that lists a set (Werkzeug's Allow
            # header) then lists it in the same order under each.
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited early:\n{log.read_text()}")
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), timeout=1),
                ):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()}")
                time.sleep(0.05)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def gunicorn(target: str, port: int, workers: int = 1) -> list[str]:
    """gunicorn as a team runs a Flask app: sync workers, each serving one request at
    a time (httpbin's slow stream holds its worker a while after its last byte: more
    workers keep the next requests from queueing behind it)."""
    return [
        sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "sync",
        "--bind", f"127.0.0.1:{port}", "--log-level", "warning", target,
    ]  # fmt: skip


def uvicorn(target: str, port: int) -> list[str]:
    """uvicorn as a team runs a FastAPI app alone (its defaults)."""
    return [
        sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip


def gateway(config: Path, port: int) -> list[str]:
    return [
        sys.executable, "-m", "gateway.cli", "serve", "--config", str(config),
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]  # fmt: skip


# A typical reverse-proxy configuration: the client's Host kept, the forwarded headers
# set, HTTP/1.1 to the upstream; everything else nginx's defaults.
NGINX_CONF = """\
worker_processes 1;
daemon off;
user root;  # its workers write bodies to the temp paths below (ignored unless root)
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-Port $server_port;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """Where nginx is: on PATH, else where Debian puts it (/usr/sbin, on root's PATH)."""
    return shutil.which("nginx") or "/usr/sbin/nginx"


def nginx(directory: Path, port: int, upstream: int) -> list[str]:
    binary = nginx_binary()
    conf = directory / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=directory, port=port, upstream=upstream))
    return [binary, "-p", str(directory), "-c", str(conf), "-e", str(directory / "error.log")]


def routes(directory: Path, backend: str, *extra: str) -> Path:
    """A route file with `backend` as the default, and the same app as a backend with a
    two-second `timeout` for /drip, the slow stream: a timeout bounds the wait for the
    answer, never the gaps in a stream that has started (README, `timeout`). `extra`:
    more routes, each a YAML flow mapping."""
    path = directory / "routes.yaml"
    path.write_text(
        "version: 1\n"
        f"backends:\n  app: {{{backend}}}\n  slow: {{{backend}, timeout: 2}}\n"
        "default: app\n"
        "routes:\n  - {id: drip, path: /drip, backend: slow}\n"
        + "".join(f"  - {route}\n" for route in extra)
    )
    return path
