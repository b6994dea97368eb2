"""A read-only routes.yaml (a Kubernetes ConfigMap) and no store: flips are refused
cleanly, and an automatic rollback still takes the route off the failing backend on
every worker, applied but not persisted."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cli import main
from tests.harness import TEST_BACKENDS, GatewayProcess, gateway_client, write_routes

TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
default: legacy
routes:
  - id: flaky  # the new code answers whatever status it is asked for
    path: "/status/{code}"
    backend: new
    fallback: legacy
    rollback: {error_ratio: 0.5, window: 60, min_requests: 3}
  - {id: other, path: /other, backend: new}
"""
)
REFUSAL = "is read-only; use --store or make it writable"


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    """routes.yaml with no write permission bit, in a directory that takes no new file
    (as root, the tests' usual user, permission bits alone would not stop a write)."""
    directory = tmp_path / "config"
    directory.mkdir()
    path = write_routes(directory, TABLE)
    path.chmod(0o444)
    directory.chmod(0o555)
    yield path
    directory.chmod(0o755)
    path.chmod(0o644)


def test_flips_and_canary_changes_are_refused_with_409_and_exit_1(
    read_only: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with gateway_client(read_only) as client:
        r = client.put("/-/routes/other", json={"backend": "legacy"})
        assert r.status_code == 409
        assert r.json() == {"error": f"{read_only} {REFUSAL}"}
        r = client.put("/-/routes/flaky", json={"canary": {"percent": 5, "backend": "legacy"}})
        assert (r.status_code, r.json()["error"]) == (409, f"{read_only} {REFUSAL}")
        # A change that changes nothing writes nothing, and is no refusal.
        assert client.put("/-/routes/other", json={"backend": "new"}).status_code == 200
        assert client.get("/other").headers["x-gateway-backend"] == "new"
    assert main(["flip", "other", "legacy", "--config", str(read_only)]) == 1
    assert capsys.readouterr().err == f"{read_only}: {read_only} {REFUSAL}; nothing was changed\n"
    assert read_only.read_text() == TABLE


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """routes.yaml (mode 0644) on a read-only bind mount, as a ConfigMap is mounted."""
    directory = tmp_path / "config"
    directory.mkdir()
    path = write_routes(directory, TABLE)

    def run(*args: str) -> bool:
        return subprocess.run(args, capture_output=True).returncode == 0

    if not (
        run("mount", "--bind", str(directory), str(directory))
        and run("mount", "-o", "remount,ro,bind", str(directory))
    ):
        run("umount", str(directory))
        pytest.skip("no read-only bind mount here (needs root with CAP_SYS_ADMIN)")
    try:
        yield path
    finally:
        run("umount", str(directory))


def test_a_read_only_mount_refuses_even_root(read_only_mount: Path) -> None:
    with gateway_client(read_only_mount) as client:
        r = client.put("/-/routes/other", json={"backend": "legacy"})
    assert r.status_code == 409
    assert r.json() == {"error": f"{read_only_mount} {REFUSAL}"}


def test_a_full_disk_refuses_the_change_in_one_line_and_keeps_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "config"
    directory.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(directory)], capture_output=True
    ).returncode:
        pytest.skip("no tmpfs mount here (needs root with CAP_SYS_ADMIN)")
    try:
        path = write_routes(directory, TABLE)
        # Fill the rest of the disk.
        with contextlib.suppress(OSError), open(directory / "filler", "wb", buffering=0) as filler:
            while True:
                filler.write(b"x" * 4096)
        with gateway_client(path) as client:
            r = client.put("/-/routes/other", json={"backend": "legacy"})
            assert r.status_code == 500
            assert r.json() == {
                "error": "cannot write: No space left on device; nothing was changed"
            }
            assert client.get("/other").headers["x-gateway-backend"] == "new"
        assert path.read_text() == TABLE
    finally:
        subprocess.run(["umount", str(directory)], capture_output=True)


def test_an_automatic_rollback_is_applied_on_both_workers_and_shown(read_only: Path) -> None:
    with GatewayProcess(read_only, "--workers", "2") as gw:

        def fresh(path: str) -> httpx.Response:
            # A connection of its own: the kernel spreads them over both workers.
            return httpx.get(gw.url + path, timeout=10, headers={"connection": "close"})

        assert fresh("/status/200").headers["x-gateway-backend"] == "new"
        for _ in range(16):  # at least one worker sees 3 failures of 3 and trips
            r = fresh("/status/503")
            assert r.status_code == 200  # the fallback served it
        # Both workers now serve the route from legacy, though the file says new (the
        # worker that did not trip follows within its watch interval).
        deadline = time.monotonic() + 10
        while fresh("/status/200").headers["x-gateway-backend"] != "legacy":
            assert time.monotonic() < deadline, gw.log()
        time.sleep(1)
        for _ in range(40):
            r = fresh("/status/200")
            assert r.headers["x-gateway-backend"] == "legacy", gw.log()
        for _ in range(10):
            flaky = fresh("/-/routes").json()["routes"][0]
            assert flaky["backend"] == "legacy"
            assert flaky["state"] == "rolled back"
            rolled = flaky["rolled_back"]
            assert (rolled["from"], rolled["to"], rolled["persisted"]) == ("new", "legacy", False)
            assert re.fullmatch(
                r"[23] of 3 answers from new failed in 60s \(over the 0.5 limit\)", rolled["why"]
            )
        events = [e for e in fresh("/-/events").json()["events"] if e["kind"] == "rollback"]
        assert len(events) == 1
        assert events[0]["persisted"] is False and events[0]["route"] == "flaky"
        log = gw.log()
    assert read_only.read_text() == TABLE
    assert "; applied, not persisted: " in log and REFUSAL in log
    assert "stays on legacy until an operator flips it" not in log
