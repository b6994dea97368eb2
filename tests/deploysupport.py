"""The container image as the deploy tests see it: the Dockerfile parsed (enough of
its grammar for this repo's file), and its environment mapped onto this machine."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT

DOCKERFILE = ROOT / "Dockerfile"
BIN = Path(sys.executable).parent


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                values[key] = value
        return values


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Build args and stages: enough of the Dockerfile grammar for this repo's file."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            stages.append(Stage(base, words[2] if len(words) == 3 else None))
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def image_environment(root: Path, port: int) -> dict[str, str]:
    """The Dockerfile's environment, with the image's paths mapped to this machine's:
    /opt/gateway is the project's virtual environment, the route file and the app
    directory copies of those the image copies, the state directory a fresh one."""
    (copied,) = [a.split() for a in FINAL.all("COPY") if a.split()[0] == "routes.yaml"]
    config_in_image = copied[1]
    workdir = FINAL.last("WORKDIR")
    shutil.copy(ROOT / "routes.yaml", root / "routes.yaml")
    # The apps the image copies into its app directory, copied into one here.
    apps_in_image = FINAL.env()["GATEWAY_APP_DIR"]
    for source, target in (a.split() for a in FINAL.all("COPY") if not a.startswith("--")):
        if target.startswith(apps_in_image + "/"):
            shutil.copytree(ROOT / source, root / "apps" / target.removeprefix(apps_in_image + "/"))
    (root / "state").mkdir()
    mapping = {
        "/opt/gateway/bin": str(BIN),
        config_in_image: str(root / "routes.yaml"),
        apps_in_image: str(root / "apps"),
        workdir: str(root / "state"),
    }
    env: dict[str, str] = {"PATH": os.environ["PATH"]}
    for key, value in FINAL.env().items():
        value = value.replace("$PATH", env["PATH"])
        for image_path, here in mapping.items():
            value = value.replace(image_path, here)
        env[key] = value
    env["GATEWAY_PORT"] = str(port)  # 8000 may be taken on a shared machine
    return env


def wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the entry point exited ({proc.returncode}):\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/-/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the entry point did not become ready:\n{log_path.read_text()}")
