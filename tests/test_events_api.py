"""GET /-/events without a store: edits, applied reloads and rejected files, as one
worker records them in the serve's state directory."""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness import TEST_BACKENDS, gateway_client, write_routes

TABLE = "version: 1\n" + TEST_BACKENDS + "routes:\n  - {id: r, path: /r, backend: legacy}\n"


def test_edits_reloads_and_rejections_are_events(tmp_path: Path) -> None:
    path = write_routes(tmp_path, TABLE)
    with gateway_client(path, watch_interval=0.05) as client:
        assert client.put("/-/routes/r", json={"backend": "new"}).status_code == 200
        path.write_text("version: 1\nroutes: [")
        deadline = time.monotonic() + 10
        while client.get("/-/routes").json()["last_error"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.2)  # events are written in the background
        events = client.get("/-/events").json()["events"]
        assert [e["kind"] for e in events] == ["flip", "reload", "rejected"]
        flip, reload, rejected = events
        assert flip["by"] == "admin API client=127.0.0.1" and flip["routes"] == ["r"]
        assert (reload["routes"], reload["by"]) == (["r"], "admin API client=127.0.0.1")
        assert rejected["by"] == "file change"
        assert rejected["problems"][0].startswith(f"{path}:2:")
        assert [e["id"] for e in events] == [1, 2, 3]
        assert client.get("/-/events?since=2").json()["events"] == [rejected]
        r = client.get("/-/events?since=x")
        assert (r.status_code, r.json()) == (
            400,
            {"error": "since must be an event id (0 or more)"},
        )
        r = client.get("/-/fleet")
        assert r.status_code == 404 and "no store" in r.json()["error"]
