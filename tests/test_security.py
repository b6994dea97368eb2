"""Security: no request secret in a log line, one normalised path deciding where a
request goes, reserved paths, and who may read and change the admin API."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import Gateway
from gateway.settings import Settings
from tests.harness import GatewayProcess, ThreadServer, free_port, write_routes
from tests.raw_upstream import RawUpstream

SECRETS = {
    "authorization": "Bearer s3cr3t-AUTH",
    "cookie": "session=s3cr3t-COOKIE",
    "x-api-key": "s3cr3t-KEY",
}
SECRET_QUERY = "token=s3cr3t-QUERY"


def served_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The gateway's and its server's log lines (not the test client's own)."""
    return [r.getMessage() for r in caplog.records if r.name.startswith(("gateway", "uvicorn"))]


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    with RawUpstream() as upstream:
        yield upstream


@pytest.fixture
def remote_gateway(tmp_path: Path, raw_upstream: RawUpstream) -> Iterator[ThreadServer]:
    path = write_routes(
        tmp_path,
        f"""\
version: 1
backends:
  raw: {{url: "{raw_upstream.url}", timeout: 5}}
  impatient: {{url: "{raw_upstream.url}", timeout: 0.5}}
  down: {{url: "http://127.0.0.1:{free_port()}"}}
default: raw
routes:
  - {{id: hang, path: /hang, backend: impatient}}
  - {{id: down, path: /down, backend: down}}
""",
    )
    with ThreadServer(Gateway(Settings(config=str(path)))) as server:
        yield server


# Each failure kind of a remote upstream: (path, status, kind)
FAILURES = [
    ("/down", 502, "connect"),
    ("/hang", 504, "timeout"),
    ("/garbage", 502, "protocol"),
    ("/crlf-header", 502, "protocol"),
    ("/close", 502, "protocol"),
]


@pytest.mark.parametrize(("path", "status", "kind"), FAILURES)
def test_no_secret_of_the_request_reaches_the_log(
    remote_gateway: ThreadServer,
    caplog: pytest.LogCaptureFixture,
    path: str,
    status: int,
    kind: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    r = httpx.post(
        f"{remote_gateway.url}{path}?{SECRET_QUERY}",
        headers=SECRETS,
        content=b"body=s3cr3t-BODY",
        timeout=10,
    )
    assert r.status_code == status
    assert r.json()["kind"] == kind
    assert r.json()["request_id"] == r.headers["x-request-id"]
    lines = served_log(caplog)
    failures = [line for line in lines if "backend failed" in line]
    assert failures, lines  # the failure is logged, with its kind
    assert f"kind={kind}" in failures[0]
    assert not [line for line in lines if "s3cr3t" in line]


def test_a_stream_broken_mid_body_logs_no_secret(
    remote_gateway: ThreadServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{remote_gateway.url}/short-body?{SECRET_QUERY}", headers=SECRETS, timeout=10)
    lines = served_log(caplog)
    assert [line for line in lines if "stream" in line], lines
    assert not [line for line in lines if "s3cr3t" in line]


def test_the_access_log_carries_no_query_string(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path,
        """\
version: 1
backends:
  legacy: {wsgi: "tests.apps:wsgi"}
default: legacy
""",
    )
    with GatewayProcess(path, "--access-log") as gateway:
        r = httpx.get(f"{gateway.url}/some/page?{SECRET_QUERY}", timeout=5)
        assert r.status_code == 200
        log = gateway.log()
    assert "/some/page?..." in log
    assert "s3cr3t" not in log
