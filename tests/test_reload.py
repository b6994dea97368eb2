"""Following routes.yaml while serving: every way a file changes, and bad files."""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from gateway import control, heap
from gateway.app import Gateway
from gateway.routefile.loading import parse_config
from gateway.routefile.model import GatewayConfig
from gateway.settings import Settings
from tests import apps
from tests.harness import TEST_BACKENDS, ThreadServer, gateway_client, wait_for, write_routes


def table(backend: str, extra: str = "") -> str:
    return (
        "version: 1\n"
        + TEST_BACKENDS
        + extra
        + f"default: legacy\nroutes:\n  - id: item\n    path: /item\n    backend: {backend}\n"
    )


def backend_of(client: TestClient) -> str:
    r = client.get("/item")
    assert r.status_code == 200
    return r.headers["x-gateway-backend"]


def test_in_place_write_is_applied(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table("new"))
    with gateway_client(path) as client:
        assert backend_of(client) == "new"
        with path.open("r+") as f:  # an editor that writes the same inode
            f.seek(0)
            f.write(table("legacy"))
            f.truncate()
        wait_for(lambda: backend_of(client) == "legacy")


def test_temp_file_renamed_over_is_applied(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table("new"))
    with gateway_client(path) as client:
        tmp = write_routes(tmp_path, table("legacy"), name=".routes.yaml.swp")
        os.replace(tmp, path)
        wait_for(lambda: backend_of(client) == "legacy")


def test_configmap_style_symlink_swap_is_applied(tmp_path: Path) -> None:
    # Kubernetes mounts routes.yaml -> ..data/routes.yaml, ..data -> ..<timestamp>/
    # and updates by pointing ..data at a new directory in one rename.
    first = tmp_path / "..2026_11_01"
    first.mkdir()
    write_routes(first, table("new"))
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "routes.yaml").symlink_to("..data/routes.yaml")
    with gateway_client(tmp_path / "routes.yaml") as client:
        assert backend_of(client) == "new"
        second = tmp_path / "..2026_11_02"
        second.mkdir()
        write_routes(second, table("legacy"))
        (tmp_path / "..data_tmp").symlink_to(second.name)
        os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
        wait_for(lambda: backend_of(client) == "legacy")


def test_invalid_file_keeps_the_old_table_and_reports_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_routes(tmp_path, table("new"))
    with gateway_client(path) as client:
        before = client.get("/-/routes").json()
        bad = table("nowhere").replace("methods", "methds")
        path.write_text(bad)
        wait_for(lambda: client.get("/-/routes").json()["last_error"] is not None)
        state = client.get("/-/routes").json()
        assert state["sha256"] == before["sha256"]  # the old table is still live
        assert state["last_error"]["problems"] == [
            f"{path}:9:14: route 'item': unknown backend 'nowhere'; use one of: legacy, new"
        ]
        assert backend_of(client) == "new"
        # Triggers after the first (here: an explicit reload) do not log it again.
        assert client.post("/-/reload").status_code == 422
        rejected = [r for r in caplog.records if "route table rejected" in r.getMessage()]
        assert len(rejected) == 1
        detail = [r.getMessage() for r in caplog.records if r.getMessage().startswith("  ")]
        assert detail == [
            f"  {path}:9:14: route 'item': unknown backend 'nowhere'; use one of: legacy, new"
        ]
        path.write_text(table("legacy"))
        wait_for(lambda: backend_of(client) == "legacy")
        assert client.get("/-/routes").json()["last_error"] is None


def test_unchanged_content_is_a_no_op(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table("new"))
    with gateway_client(path) as client:
        loaded_at = client.get("/-/routes").json()["loaded_at"]
        path.write_text(table("new"))  # same bytes, new mtime
        r = client.post("/-/reload")
        assert r.status_code == 200
        assert r.json()["reloaded"] is False
        time.sleep(0.4)
        assert client.get("/-/routes").json()["loaded_at"] == loaded_at


def test_admin_reload_applies_at_once(tmp_path: Path) -> None:
    path = write_routes(tmp_path, table("new"))
    with gateway_client(path, watch_interval=5) as client:
        # Served by the old table first: what it knew of the path goes with it.
        assert backend_of(client) == "new"
        path.write_text(table("legacy"))
        r = client.post("/-/reload")
        assert r.status_code == 200
        assert r.json()["reloaded"] is True
        assert backend_of(client) == "legacy"


def test_added_backends_start_before_the_swap_and_removed_ones_close(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path,
        'version: 1\nbackends:\n  legacy: {wsgi: "tests.apps:wsgi"}\ndefault: legacy\n',
    )
    apps.lifespan_events.clear()
    with gateway_client(path, watch_interval=5) as client:
        assert apps.lifespan_events == []
        path.write_text(table("new"))
        assert client.post("/-/reload").status_code == 200
        assert apps.lifespan_events == ["startup"]
        assert backend_of(client) == "new"
        path.write_text(
            'version: 1\nbackends:\n  legacy: {wsgi: "tests.apps:wsgi"}\ndefault: legacy\n'
        )
        assert client.post("/-/reload").status_code == 200
        wait_for(lambda: apps.lifespan_events == ["startup", "shutdown"])
        assert client.get("/item").headers["x-gateway-backend"] == "legacy"


def test_unreadable_file_keeps_serving(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)
    path = write_routes(tmp_path, table("new"))
    with gateway_client(path) as client:
        path.unlink()
        wait_for(lambda: client.get("/-/routes").json()["last_error"] is not None)
        assert "cannot read the file" in client.get("/-/routes").json()["last_error"]["problems"][0]
        assert backend_of(client) == "new"
        path.write_text(table("legacy"))
        wait_for(lambda: backend_of(client) == "legacy")


def test_a_reloaded_table_is_frozen_with_the_long_lived_heap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full collections skip the table a reload built, as they skip the startup one."""
    monkeypatch.setattr(heap, "REFREEZE_DELAY", 0.05)
    path = write_routes(tmp_path, table("new"))
    with gateway_client(path, watch_interval=5) as client:
        gateway = client.app
        assert isinstance(gateway, Gateway)
        first = gateway.table
        assert first is not None and not _collector_walks(first)  # frozen at startup
        path.write_text(table("legacy"))
        assert client.post("/-/reload").json()["reloaded"] is True
        second = gateway.table
        assert second is not None and second is not first
        assert _collector_walks(second)  # just built: young, walked by every pass
        wait_for(lambda: not _collector_walks(second))
        assert backend_of(client) == "legacy"


def _collector_walks(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_requests_are_served_while_a_new_file_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parse runs off the event loop (a 10,000-route file takes seconds), with the
    cyclic collector paused meanwhile; an unchanged file is not parsed at all."""
    parsing = threading.Event()
    release = threading.Event()
    collector_during_parse: list[bool] = []

    def slow_parse(data: bytes, source: str, **options: Any) -> GatewayConfig:
        collector_during_parse.append(gc.isenabled())
        parsing.set()
        assert release.wait(10)
        return parse_config(data, source, **options)

    path = write_routes(tmp_path, table("new"))
    with ThreadServer(Gateway(Settings(config=str(path), watch_interval=5))) as server:
        monkeypatch.setattr(control, "parse_config", slow_parse)
        path.write_text(table("legacy"))
        reload = threading.Thread(
            target=lambda: httpx.post(server.url + "/-/reload", timeout=15), daemon=True
        )
        reload.start()
        assert parsing.wait(5)
        # The parse is under way and holds still: the gateway answers meanwhile.
        r = httpx.get(server.url + "/item", timeout=5)
        assert r.status_code == 200
        assert r.headers["x-gateway-backend"] == "new"
        release.set()
        reload.join(15)
        assert httpx.get(server.url + "/item", timeout=5).headers["x-gateway-backend"] == "legacy"
        assert collector_during_parse == [False]
        assert gc.isenabled()
        # Same bytes again: nothing to parse.
        path.write_text(table("legacy"))
        assert httpx.post(server.url + "/-/reload", timeout=5).json()["reloaded"] is False
        assert len(collector_during_parse) == 1
