"""Helpers for the tests of deploy/: Prometheus binaries and processes, the PromQL in
the dashboard and the rules, and a small client for Prometheus's HTTP API."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
ENSURE_PROMETHEUS = PROMETHEUS_DIR / "ensure-prometheus"
GRAFANA_DIR = DEPLOY / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "gateway.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "gateway.yml"

T = TypeVar("T")


# --- binaries ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromTools:
    prometheus: str
    promtool: str


def _on_path() -> PromTools | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus is None or promtool is None:
        return None
    return PromTools(prometheus, promtool)


@functools.cache
def _find_or_install() -> PromTools | str:
    """The tools, or why there are none (cached: the installer runs once per session)."""
    tools = _on_path()
    if tools is not None:
        return tools
    try:
        run = subprocess.run(
            [str(ENSURE_PROMETHEUS)], capture_output=True, text=True, timeout=900, check=False
        )
        output = (run.stdout + run.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        output = f"could not run it: {exc}"
    return _on_path() or output


def prometheus_tools() -> PromTools:
    """`prometheus` and `promtool`, installed by deploy/prometheus/ensure-prometheus if missing.

    Fails (never skips) the calling test when they cannot be had: these tests
    guard the dashboard and the alerts, so CI must run them.
    """
    found = _find_or_install()
    if isinstance(found, str):
        pytest.fail(
            "prometheus and promtool are needed and not on PATH; "
            f"deploy/prometheus/ensure-prometheus did not provide them:\n{found}",
            pytrace=False,
        )
    return found


def promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_tools().promtool, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


# --- the PromQL in deploy/ ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """A PromQL expression and where it comes from, e.g. `panel "Title" A`."""

    where: str
    expr: str


LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([^,()]+?)\s*,\s*(\w+)\s*\)\s*$")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def all_panels(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included, in order."""
    found: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def dashboard_queries(path: Path = DASHBOARD) -> list[Query]:
    dashboard = load_dashboard(path)
    queries: list[Query] = []
    for panel in all_panels(dashboard):
        for target in panel.get("targets", []):
            queries.append(Query(f'panel "{panel["title"]}" {target["refId"]}', target["expr"]))
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            queries.append(Query(f'annotation "{annotation["name"]}"', annotation["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            expr = query["query"] if isinstance(query, dict) else query
            queries.append(Query(f"variable {variable['name']}", expr))
    return queries


def load_rules(path: Path = RULES) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [rule for group in data["groups"] for rule in group["rules"]]


def rule_queries(path: Path = RULES) -> list[Query]:
    queries = []
    for rule in load_rules(path):
        if "record" in rule:
            queries.append(Query(f"record {rule['record']}", rule["expr"]))
        else:
            queries.append(Query(f"alert {rule['alert']}", rule["expr"]))
    return queries


def variables_in(expr: str) -> set[str]:
    return {m.group(1) or m.group(2) for m in _VARIABLE.finditer(expr)}


def substitute(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's `$name` / `${name}` with concrete values, as Grafana would."""
    unknown = variables_in(expr) - set(values)
    if unknown:
        raise KeyError(f"no value for {sorted(unknown)} in {expr!r}")
    return _VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)


# --- processes ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started with `start_new_session=True`, and its children."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def running(
    args: list[str], *, log: Path, env: Mapping[str, str] | None = None, cwd: Path = REPO
) -> Iterator[subprocess.Popen[bytes]]:
    """A process in a session of its own (so it can be stopped with its children)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop(process)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(
    condition: Callable[[], T | None],
    what: str,
    *,
    timeout: float = 30,
    interval: float = 0.2,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> T:
    """Poll `condition` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = condition()
        except (httpx.HTTPError, OSError) as exc:
            result, last = None, exc
        else:
            last = result
        if result:
            return result
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"process exited ({process.returncode}) while waiting for {what}\n"
                + (log_tail(log) if log else "")
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last: {last!r}\n"
                + (log_tail(log) if log else "")
            )
        time.sleep(interval)


def prometheus_config_for(
    gateway_port: int, *, interval: str = "1s", rules: Path = RULES
) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml, pointed at a gateway under test and sped up."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(rules)]
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "gateway")
    job["scrape_interval"] = interval
    job["static_configs"] = [{"targets": [f"127.0.0.1:{gateway_port}"]}]
    return config


# --- Prometheus's HTTP API ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    labels: dict[str, str]
    value: float


class PrometheusAPI:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, params: Mapping[str, str] | None = None, post: bool = False) -> Any:
        # A form has room for any expression; a URL may not.
        response = self.http.post(path, data=params) if post else self.http.get(path, params=params)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def ready(self) -> bool:
        return self.http.get("/-/ready").status_code == 200

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params, post=True)
        if data["resultType"] == "scalar":
            return [Sample({}, float(data["result"][1]))]
        return [Sample(item["metric"], float(item["value"][1])) for item in data["result"]]

    def value(self, expr: str, at: float | None = None) -> float | None:
        """The single value `expr` returns, or None if it returns nothing."""
        samples = self.query(expr, at)
        if not samples:
            return None
        assert len(samples) == 1, f"{expr} returned {len(samples)} series"
        return samples[0].value

    def label_values(self, label: str, match: str) -> list[str]:
        values: list[str] = self._get(f"/api/v1/label/{label}/values", {"match[]": match})
        return values

    def rule_groups(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts


# --- comparing results -------------------------------------------------------


class Where:
    """A value that compares equal to the floats `predicate` accepts (for dict asserts)."""

    def __init__(self, predicate: Callable[[float], bool], text: str) -> None:
        self.predicate = predicate
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, float | int) and self.predicate(float(other))

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return self.text


def within(low: float, high: float) -> Where:
    return Where(lambda v: low <= v <= high, f"within [{low:g}, {high:g}]")


POSITIVE = Where(lambda v: 0 < v < math.inf, "> 0")
NAN = Where(math.isnan, "NaN")
