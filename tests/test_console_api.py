"""The console's side of the admin API: the page and its headers, the traffic figures
(one sampler per host), POST /-/flip-all, and the Origin check of changes."""

from __future__ import annotations

import itertools
import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from gateway.console import ASSETS, VERSION
from gateway.console.sampler import INTERVAL, SPACING, WINDOW, keep, quantile
from gateway.metrics import BUCKETS
from gateway.routefile.loading import load_config
from tests.harness import ROOT, TEST_BACKENDS, GatewayProcess, gateway_client, write_routes

TOKEN = "s3cret-console"
BEARER = {"authorization": f"Bearer {TOKEN}"}
TABLE = "version: 1\n" + TEST_BACKENDS + "routes:\n  - {id: r, path: /r, backend: new}\n"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def test_the_page_is_served_open_with_a_strict_policy_and_nothing_external(
    tmp_path: Path,
) -> None:
    with gateway_client(write_routes(tmp_path, TABLE), admin_token=TOKEN) as client:
        page = client.get("/-/console")  # no token: a browser cannot send one with a page load
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.headers["content-security-policy"] == CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert f'<meta name="console-version" content="{VERSION}">' in page.text
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert scripts == [f'<script src="console/console.js?v={VERSION}" defer>']
        assert " style=" not in page.text and "<style" not in page.text
        for name in re.findall(r'(?:src|href)="console/([\w.]+)\?v=', page.text):
            asset = client.get(f"/-/console/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-security-policy"] == CSP
            assert asset.content == ASSETS[name]
        # Open are the page's own assets only: any other path needs the token.
        assert client.get("/-/console/secrets.json").status_code == 401
        missing = client.get("/-/console/secrets.json", headers=BEARER)
        assert (missing.status_code, missing.json()) == (404, {"error": "no such console asset"})
    for name, body in ASSETS.items():  # no CDN, no web font: nothing but the gateway
        body = body.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")  # a name, not a URL
        assert b"http://" not in body and b"https://" not in body, name


def test_figures_need_the_token_or_loopback(tmp_path: Path) -> None:
    path = write_routes(tmp_path, TABLE)
    with gateway_client(path, admin_token=TOKEN) as client:
        r = client.get("/-/console/figures")
        assert (r.status_code, r.json()) == (
            401,
            {"error": "missing 'Authorization: Bearer <token>'"},
        )
        r = client.get("/-/console/figures", headers={"authorization": "Bearer nope"})
        assert (r.status_code, r.json()) == (403, {"error": "wrong admin token"})
        r = client.get("/-/console/figures", headers=BEARER)
        assert r.status_code == 200 and r.json()["counted"] is True
    with gateway_client(path, client=("10.1.2.3", 5000)) as client:
        r = client.get("/-/console/figures")
        assert r.status_code == 403 and "loopback" in r.json()["error"]
    with gateway_client(path, metrics=False) as client:
        figures = client.get("/-/console/figures").json()
        assert figures == {"counted": False, "at": None, "window_seconds": None, "routes": {}}


def test_figures_give_rate_errors_and_percentiles_since_the_oldest_sample(tmp_path: Path) -> None:
    table = TABLE + "  - {id: s, path: '/status/{code}', backend: new}\n"
    with gateway_client(write_routes(tmp_path, table)) as client:
        for _ in range(3):
            client.get("/r")  # before the first sample: not in the figures
        first = client.get("/-/console/figures").json()
        assert first["window_seconds"] is None and first["routes"] == {}
        for _ in range(7):
            assert client.get("/r").status_code == 200
        assert client.get("/status/503").status_code == 503
        time.sleep(INTERVAL + 0.1)
        figures = client.get("/-/console/figures").json()
    assert figures["window_seconds"] >= INTERVAL
    served = figures["routes"]["r"]["new"]
    assert served["requests"] == 7
    assert served["rate"] == pytest.approx(7 / figures["window_seconds"], rel=0.05)
    assert served["error_ratio"] == 0.0
    assert 0 < served["p50"] <= served["p99"] <= 1.0
    failing = figures["routes"]["s"]["new"]
    assert (failing["requests"], failing["error_ratio"]) == (1, 1.0)


def test_one_sampler_serves_every_worker_and_viewer(tmp_path: Path) -> None:
    """Two workers, twenty viewers at once: the figures count both workers' requests,
    and are sampled once per interval, not once per worker or viewer."""
    with GatewayProcess(write_routes(tmp_path, TABLE), "--workers", "2") as gw:
        httpx.get(gw.url + "/-/console/figures", timeout=10)
        for _ in range(40):
            assert httpx.get(gw.url + "/r", timeout=10).status_code == 200  # a new connection
        time.sleep(INTERVAL + 0.1)
        seen: list[float] = []

        def viewer() -> None:
            for _ in range(3):
                seen.append(httpx.get(gw.url + "/-/console/figures", timeout=10).json()["at"])

        viewers = [threading.Thread(target=viewer) for _ in range(20)]
        for thread in viewers:
            thread.start()
        for thread in viewers:
            thread.join()
        figures = httpx.get(gw.url + "/-/console/figures", timeout=10).json()
    assert figures["routes"]["r"]["new"]["requests"] == 40
    assert len(seen) == 60
    samples = sorted(set(seen))  # however many viewers and workers: one per interval
    assert all(b - a >= INTERVAL for a, b in itertools.pairwise(samples))


def test_quantiles_interpolate_within_the_bucket() -> None:
    bounds = [*BUCKETS, float("inf")]
    cumulative = [0.0] * len(bounds)
    for i, bound in enumerate(bounds):  # 10 answers between 5 and 10 ms, 10 over 10 s
        cumulative[i] = (10.0 if bound >= 0.01 else 0.0) + (10.0 if bound == float("inf") else 0)
    assert quantile(0.25, bounds, cumulative) == pytest.approx(0.0075)
    assert quantile(0.99, bounds, cumulative) == 10.0  # past the last bound: that bound
    assert quantile(0.5, bounds, [0.0] * len(bounds)) is None


def test_kept_samples_are_spaced_and_reach_back_one_window() -> None:
    samples: list[dict[str, object]] = []
    for second in range(0, 1200, 2):
        samples = keep(samples, {"at": float(second), "counts": {}})
    times = [s["at"] for s in samples]
    assert times[-1] == 1198.0
    assert times[0] <= 1198.0 - WINDOW < times[1]
    assert all(b - a >= SPACING for a, b in itertools.pairwise(times[:-1]))
    assert len(samples) <= WINDOW / SPACING + 3


def demo(tmp_path: Path) -> Path:
    return write_routes(tmp_path, (ROOT / "routes.yaml").read_text())


def test_flip_all_leaves_the_routes_the_target_does_not_implement(tmp_path: Path) -> None:
    path = demo(tmp_path)
    on_new = [r.id for r in load_config(path).routes if r.backend != "legacy"]
    assert {"books.list", "books.get", "books.events"} <= set(on_new)
    with gateway_client(path) as client:
        r = client.post("/-/flip-all", json={"backend": "legacy"})
        assert r.status_code == 200
        assert r.json() == {
            "backend": "legacy",
            "changed": [rid for rid in on_new if rid != "books.events"],
            "left": {"books.events": "'legacy' does not implement GET /books/events"},
            "unknown": None,
        }
        routes = {x["id"]: x["backend"] for x in client.get("/-/routes").json()["routes"]}
        assert {rid for rid, backend in routes.items() if backend != "legacy"} == {"books.events"}
        again = client.post("/-/flip-all", json={"backend": "legacy"}).json()
        assert again["changed"] == [] and list(again["left"]) == ["books.events"]
        time.sleep(0.2)  # events are written in the background
        flips = [e for e in client.get("/-/events").json()["events"] if e["kind"] == "flip"]
        assert [(e["routes"], e["change"]) for e in flips] == [
            ([rid for rid in on_new if rid != "books.events"], "flip route=* backend=legacy")
        ]
    assert "backend: legacy" in path.read_text()


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"backend": 1}, 400, 'the body must be {"backend": "<name>"}'),
        ({"backend": "legacy", "force": True}, 400, 'the body must be {"backend": "<name>"}'),
        ("legacy", 400, 'the body must be {"backend": "<name>"}'),
    ],
)
def test_flip_all_refuses_a_bad_body_and_changes_nothing(
    tmp_path: Path, body: object, status: int, error: str
) -> None:
    path = demo(tmp_path)
    before = path.read_bytes()
    with gateway_client(path) as client:
        r = client.post("/-/flip-all", json=body)
        assert (r.status_code, r.json()) == (status, {"error": error})
    assert path.read_bytes() == before


def test_flip_all_to_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    path = demo(tmp_path)
    before = path.read_bytes()
    with gateway_client(path) as client:
        r = client.post("/-/flip-all", json={"backend": "nope"})
        assert r.status_code >= 400 and "nope" in r.json()["error"]
    assert path.read_bytes() == before


def test_changes_need_the_token_and_the_gateways_own_origin(tmp_path: Path) -> None:
    path = demo(tmp_path)
    before = path.read_bytes()
    flip_all = {"backend": "legacy"}
    with gateway_client(path, admin_token=TOKEN) as client:
        assert client.post("/-/flip-all", json=flip_all).status_code == 401
        bad = {"authorization": "Bearer nope"}
        assert client.post("/-/flip-all", json=flip_all, headers=bad).status_code == 403
        for origin in ("http://evil.example", "null", "http://testserver.evil.example"):
            headers = {**BEARER, "origin": origin}
            r = client.post("/-/flip-all", json=flip_all, headers=headers)
            assert r.status_code == 403
            assert r.json() == {
                "error": f"refused: the request comes from a page of {origin}, not of this gateway"
            }
            r = client.put("/-/routes/books.get", json={"backend": "legacy"}, headers=headers)
            assert r.status_code == 403
        assert path.read_bytes() == before
        same = {**BEARER, "origin": "http://testserver"}
        assert client.post("/-/flip-all", json=flip_all, headers=same).status_code == 200
    assert path.read_bytes() != before


def test_a_page_of_another_site_cannot_act_through_a_loopback_browser(tmp_path: Path) -> None:
    """No token, loopback: the operator's own browser, on a page of another site,
    sending a change to the gateway (a cross-site request) is refused."""
    path = demo(tmp_path)
    before = path.read_bytes()
    with gateway_client(path) as client:
        r = client.post(
            "/-/flip-all", json={"backend": "legacy"}, headers={"origin": "http://evil.example"}
        )
        assert r.status_code == 403 and "evil.example" in r.json()["error"]
        r = client.post("/-/reload", headers={"origin": "http://evil.example"})
        assert r.status_code == 403
        assert path.read_bytes() == before
        # Reads carry no Origin check: a browser's GET changes nothing.
        assert client.get("/-/routes", headers={"origin": "http://evil.example"}).status_code == 200
