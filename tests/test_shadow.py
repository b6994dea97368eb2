"""Shadow traffic: compared in the background, never in the client's way."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from gateway.app import Gateway
from gateway.bodies import Captured
from gateway.cli import main
from gateway.routefile.policy_rules import parse_json_path
from gateway.settings import Settings
from gateway.shadow import compare, json_differences
from tests import apps
from tests.harness import (
    TEST_BACKENDS,
    GatewayProcess,
    ThreadServer,
    gateway_client,
    write_routes,
)


def table(shadow: str, extra: str = "") -> str:
    return (
        "version: 1\n"
        + TEST_BACKENDS
        + f"""\
default: legacy
routes:
  - id: book
    path: /book
    backend: legacy
    shadow: {shadow}
{extra}"""
    )


def wait_for_counts(
    client: TestClient, route: str, total: int, seconds: float = 5
) -> dict[str, int]:
    deadline = time.monotonic() + seconds
    while True:
        report = client.get("/-/shadow").json()["routes"].get(route)
        counts: dict[str, int] = report["counts"] if report else {}
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.02)


def test_seeded_difference_is_a_mismatch_and_ignored_field_is_not(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table('{backend: new, ignore: ["$.updated_at"]}'))
    with gateway_client(path) as client:
        r = client.get("/book")
        assert r.status_code == 200
        assert r.headers["x-gateway-backend"] == "legacy"
        assert r.json()["price"] == 10  # the client got the primary's answer, unchanged
        counts = wait_for_counts(client, "book", 1)
        report = client.get("/-/shadow?route=book").json()["routes"]["book"]
        metrics = client.get("/-/metrics").text
    assert counts == {"match": 0, "mismatch": 1, "error": 0, "dropped": 0}
    [mismatch] = report["mismatches"]
    assert mismatch["request"] == "GET /book"
    assert mismatch["request_id"] == r.headers["x-request-id"]
    assert mismatch["primary"] == {"backend": "legacy", "status": 200}
    assert mismatch["shadow"] == {"backend": "new", "status": 200}
    # Only the seeded difference: updated_at differs too, but it is ignored.
    assert mismatch["differences"] == ["$.price: legacy 10, new 12"]
    assert 'gateway_shadow_requests_total{result="mismatch",route="book"} 1.0' in metrics


def test_calibration_ignores_what_differs_between_two_primary_answers(tmp_path: Path) -> None:
    # No ignore list: updated_at differs on every answer of either side, so
    # calibration (asking the primary twice) finds it is noise; price is real.
    path = write_routes(tmp_path, table("{backend: new, calibrate: true}"))
    with gateway_client(path) as client:
        client.get("/book")
        wait_for_counts(client, "book", 1)
        report = client.get("/-/shadow").json()["routes"]["book"]
    assert report["counts"]["mismatch"] == 1
    assert report["mismatches"][0]["differences"] == ["$.price: legacy 10, new 12"]


def test_without_calibration_noise_is_a_difference(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table("{backend: new}"))
    with gateway_client(path) as client:
        client.get("/book")
        wait_for_counts(client, "book", 1)
        differences = client.get("/-/shadow").json()["routes"]["book"]["mismatches"][0][
            "differences"
        ]
    assert differences[0] == "$.price: legacy 10, new 12"
    assert differences[1].startswith("$.updated_at: legacy ")


def test_a_hanging_shadow_never_delays_the_primary(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path,
        "version: 1\n"
        + TEST_BACKENDS
        + "routes:\n  - id: hang\n    path: /hang\n    backend: legacy\n"
        + "    shadow: {backend: new, timeout: 2}\n",
    )
    with gateway_client(path) as client:
        started = time.monotonic()
        for _ in range(5):
            r = client.get("/hang")  # the legacy (WSGI) app echoes at once
            assert r.status_code == 200
            assert r.json()["app"] == "wsgi"
        elapsed = time.monotonic() - started
        counts = wait_for_counts(client, "hang", 5)
    # The shadow (the ASGI app's /hang sleeps for an hour) timed out in the background:
    # five primary answers came back before even one shadow timeout could pass.
    assert elapsed < 2
    assert counts == {"match": 0, "mismatch": 0, "error": 5, "dropped": 0}


def test_only_safe_methods_are_shadowed_unless_unsafe(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table("{backend: new}"))
    with gateway_client(path) as client:
        apps.calls["asgi.book"] = 0
        assert client.post("/book", content=b"{}").status_code == 200
        assert client.put("/book", content=b"{}").status_code == 200
        time.sleep(0.2)
        assert apps.calls["asgi.book"] == 0  # both sides share a database: no double write
        assert client.get("/book").status_code == 200
        wait_for_counts(client, "book", 1)
        assert apps.calls["asgi.book"] == 1
    unsafe = write_routes(tmp_path, table("{backend: new}", "    unsafe: true\n"))
    with gateway_client(unsafe) as client:
        apps.calls["asgi.book"] = 0
        assert client.post("/book", content=b"{}").status_code == 200
        wait_for_counts(client, "book", 1)
        assert apps.calls["asgi.book"] == 1


@pytest.mark.parametrize(("percent", "low", "high"), [(0, 0, 0), (100, 200, 200), (25, 20, 80)])
def test_percent_samples_the_copies(tmp_path: Path, percent: int, low: int, high: int) -> None:
    """200 requests: none, every one, or about a quarter copied (25% of 200 is 50; the
    bounds are more than four standard deviations wide)."""
    path = write_routes(tmp_path, table(f"{{backend: new, percent: {percent}}}"))
    with gateway_client(path) as client:
        apps.calls["asgi.book"] = 0
        for _ in range(200):
            assert client.get("/book").headers["x-gateway-backend"] == "legacy"
        counts = wait_for_counts(client, "book", max(low, 1), seconds=10 if low else 0.3)
    assert low <= apps.calls["asgi.book"] <= high
    assert sum(counts.values()) == apps.calls["asgi.book"]


def test_excess_copies_are_dropped_and_counted(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path, table("{backend: new, timeout: 2}").replace("    path: /book", "    path: /hang")
    )
    app = Gateway(Settings(config=str(path)))
    with TestClient(app, client=("127.0.0.1", 1)) as client:
        assert app.shadows is not None
        app.shadows.max_in_flight = 2
        for _ in range(5):
            client.get("/hang")
        counts = client.get("/-/shadow").json()["routes"]["book"]["counts"]
    assert counts["dropped"] == 3


def test_diff_command_prints_the_mismatches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_routes(tmp_path, table('{backend: new, ignore: ["$.updated_at"]}'))
    with ThreadServer(Gateway(Settings(config=str(path)))) as server:
        httpx.get(server.url + "/book")
        deadline = time.monotonic() + 5
        while "mismatch" not in httpx.get(server.url + "/-/shadow").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert main(["diff", "book", "--url", server.url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "book: match 0, mismatch 1, error 0, dropped 0"
    assert out[2].endswith("GET /book  request_id=" + out[2].split("request_id=")[1])
    assert out[3] == "  legacy 200  vs  new 200"
    assert out[4] == "  $.price: legacy 10, new 12"


def test_diff_command_that_cannot_read_the_report_says_why_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_routes(tmp_path, table('{backend: new, ignore: ["$.updated_at"]}'))
    with ThreadServer(Gateway(Settings(config=str(path)))) as server:
        url = server.url
        # A prefix that is not the admin API's: its 404, not a report.
        assert main(["diff", "book", "--url", url, "--admin-prefix", "/-/none/"]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"gateway diff: cannot read {url}/-/none/shadow: it answered 404: "
            "no such admin endpoint\n"
        )
        # A 200 that is not the admin API's report: the legacy app answers this path.
        assert httpx.get(url + "/_admin/shadow").status_code == 200
        assert main(["diff", "book", "--url", url, "--admin-prefix", "/_admin/"]) == 1
        err = capsys.readouterr().err
        assert err == f"gateway diff: cannot read {url}/_admin/shadow: its answer has no 'routes'\n"
    # The gateway is gone now: nothing answers.
    assert main(["diff", "book", "--url", url]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"gateway diff: cannot read {url}/-/shadow: ")
    assert len(err.splitlines()) == 1


HEAD_TABLE = """\
version: 1
backends:
  legacy: {wsgi: "tests.flask_apps:app"}
  new: {asgi: "tests.apps:asgi"}
default: legacy
routes:
  - {id: same, path: /same, backend: legacy, shadow: {backend: new}}
"""


def test_head_compares_status_and_headers_not_bodies(tmp_path: Path) -> None:
    # Flask gives HEAD no body; Starlette gives it the GET body (uvicorn drops it).
    with gateway_client(write_routes(tmp_path, HEAD_TABLE)) as client:
        assert client.get("/same").status_code == 200
        assert client.head("/same").status_code == 200
        counts = wait_for_counts(client, "same", 2)
    assert counts == {"match": 2, "mismatch": 0, "error": 0, "dropped": 0}


@pytest.mark.parametrize(
    ("query", "difference"),
    [
        ("status=404", "status: legacy 404, new 200"),
        ("type=text/plain", "content-type: legacy 'text/plain', new 'application/json'"),
    ],
)
def test_head_with_another_status_or_type_is_a_mismatch(
    tmp_path: Path, query: str, difference: str
) -> None:
    with gateway_client(write_routes(tmp_path, HEAD_TABLE)) as client:
        client.head(f"/same?{query}")
        counts = wait_for_counts(client, "same", 1)
        [mismatch] = client.get("/-/shadow").json()["routes"]["same"]["mismatches"]
    assert counts["mismatch"] == 1
    assert mismatch["request"] == f"HEAD /same?{query}"
    assert mismatch["differences"] == [difference]


def test_comparison_rules() -> None:
    def captured(status: int, ctype: str, body: bytes) -> Captured:
        return Captured(status, [(b"content-type", ctype.encode())], bytearray(body))

    same = compare(
        captured(200, "application/json", b'{"a": 1, "b": [1, 2]}'),
        captured(200, "application/json; charset=utf-8", b'{"b":[1,2],"a":1}'),
        (),
        "legacy",
        "new",
    )
    assert same == []  # key order, spacing and charset parameter do not matter
    assert compare(
        captured(200, "application/json", b'{"a": 1}'),
        captured(404, "text/html", b"<p>no</p>"),
        (),
        "legacy",
        "new",
    )[:2] == [
        "status: legacy 200, new 404",
        "content-type: legacy 'application/json', new 'text/html'",
    ]
    assert (
        json_differences(
            {"items": [{"id": 1, "t": 1}, {"id": 2, "t": 2}]},
            {"items": [{"id": 1, "t": 9}, {"id": 2, "t": 8}]},
            (parse_json_path("$.items[*].t"),),
        )
        == []
    )
    assert json_differences({"a": 1}, {"a": 1.0}) != []  # 1 and 1.0 are different JSON
    text = compare(
        captured(200, "text/plain", b"a\nb\n"),
        captured(200, "text/plain", b"a\nc\n"),
        (),
        "legacy",
        "new",
    )
    assert text[0].startswith("body differs:\n--- legacy\n+++ new")


def test_every_worker_reports_the_results_of_all_workers(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table('{backend: new, ignore: ["$.updated_at"]}'))
    with GatewayProcess(path, "--workers", "2") as gw:
        for _ in range(12):
            assert httpx.get(gw.url + "/book").status_code == 200  # a new connection each
        deadline = time.monotonic() + 10
        while True:
            # Each ask may land on either worker: both must see all twelve.
            views = [httpx.get(gw.url + "/-/shadow").json()["routes"] for _ in range(6)]
            if all(v.get("book", {}).get("counts", {}).get("mismatch") == 12 for v in views):
                break
            assert time.monotonic() < deadline, views
            time.sleep(0.2)
    assert len(views[0]["book"]["mismatches"]) == 12


def test_diff_sends_the_admin_token_and_says_when_one_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway with an admin token answers the CLI's reads only with it: `gateway
    diff` sends GATEWAY_ADMIN_TOKEN, as `gateway serve` reads it, and without it says
    what to set."""
    path = write_routes(tmp_path, table('{backend: new, ignore: ["$.updated_at"]}'))
    gateway = Gateway(Settings(config=str(path), admin_token="t0ken"))
    with ThreadServer(gateway) as server:
        monkeypatch.delenv("GATEWAY_ADMIN_TOKEN", raising=False)
        assert main(["diff", "book", "--url", server.url]) == 1
        err = capsys.readouterr().err
        assert err == (
            f"gateway diff: cannot read {server.url}/-/shadow: it answered 401: missing "
            "'Authorization: Bearer <token>'; set GATEWAY_ADMIN_TOKEN to the gateway's "
            "admin token\n"
        )
        monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "wrong")
        assert main(["diff", "book", "--url", server.url]) == 1
        assert "it answered 403: wrong admin token\n" in capsys.readouterr().err
        monkeypatch.setenv("GATEWAY_ADMIN_TOKEN", "t0ken\n")  # as a Secret file holds it
        assert main(["diff", "book", "--url", server.url]) == 0
        assert capsys.readouterr().out.startswith("book: match 0, mismatch 0, error 0")
