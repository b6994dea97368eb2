"""Static checks of deploy/: Prometheus config and rules (promtool), the rules' unit
tests, the Grafana provisioning and dashboard, and deploy/prometheus/ensure-prometheus."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import yaml

from gateway.settings import Settings
from tests.promsupport import (
    DASHBOARD_PROVIDERS,
    DATASOURCES,
    DEPLOY,
    ENSURE_PROMETHEUS,
    LABEL_VALUES,
    PROMETHEUS_CONFIG,
    REPO,
    RULES,
    RULES_TEST,
    all_panels,
    dashboard_queries,
    load_dashboard,
    load_rules,
    prometheus_tools,
    promtool,
    variables_in,
)

RECORDED = re.compile(r"\b([a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b")
ALERTS = {"GatewayNewBackendErrorRatioHigh", "GatewayNewBackendLatencyHigh"}


def _ok(run: subprocess.CompletedProcess[str]) -> None:
    assert run.returncode == 0, f"{' '.join(run.args)} failed:\n{run.stdout}{run.stderr}"
    assert "SUCCESS" in run.stdout + run.stderr


# --- Prometheus ----------------------------------------------------------------


def test_promtool_accepts_the_config() -> None:
    _ok(promtool("check", "config", str(PROMETHEUS_CONFIG)))


def test_promtool_accepts_the_rules() -> None:
    _ok(promtool("check", "rules", str(RULES)))


def test_rules_unit_tests_pass() -> None:
    _ok(promtool("test", "rules", str(RULES_TEST)))


def test_rules_unit_tests_fail_when_an_alert_stops_firing(tmp_path: Path) -> None:
    # The unit tests can fail: the error-ratio alert made 20 times less sensitive
    # misses the routes rules_test.yml expects it to fire for.
    rules = RULES.read_text(encoding="utf-8")
    weakened = rules.replace("> on (route) 2 * route:", "> on (route) 20 * route:")
    assert weakened != rules
    (tmp_path / "rules.yml").write_text(weakened, encoding="utf-8")
    (tmp_path / "rules_test.yml").write_text(RULES_TEST.read_text(encoding="utf-8"))
    run = promtool("test", "rules", str(tmp_path / "rules_test.yml"))
    assert run.returncode != 0
    assert "GatewayNewBackendErrorRatioHigh" in run.stdout + run.stderr


def test_scrape_config_targets_the_gateway() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    assert config["rule_files"] == ["rules.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "gateway"
    assert job["scrape_interval"] == "15s"
    assert job["metrics_path"] == Settings().metrics_path == "/-/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8000"]}]


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    alerts = {rule["alert"] for rule in load_rules() if "alert" in rule}
    assert alerts == ALERTS | {"GatewayConfigReloadFailing"}
    tests = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    firing = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert firing == alerts
    assert quiet == alerts


def test_alerts_carry_for_severity_and_annotations_naming_the_subject() -> None:
    for rule in load_rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert re.fullmatch(r"\d+m", rule.get("for", "")), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        subject = "$labels.route" if name in ALERTS else "$labels.instance"
        for key in ("summary", "description"):
            assert subject in rule["annotations"][key], (name, key)


def test_rules_name_backends_only_by_the_documented_convention() -> None:
    header, rules = RULES.read_text(encoding="utf-8").split("\ngroups:\n")
    assert set(re.findall(r'backend="([^"]*)"', rules)) == {"legacy", "new"}
    assert 'sed -i -e \'s/backend="legacy"/' in header  # how to rename them


def test_renaming_backends_as_documented_keeps_the_unit_tests_passing(tmp_path: Path) -> None:
    # The sed command of the rules file's header, run on copies of both files.
    header = RULES.read_text(encoding="utf-8").split("\ngroups:\n")[0]
    match = re.search(r"^#   (sed -i .*?\\)\n#     (rules\.yml rules_test\.yml)$", header, re.M)
    assert match is not None, "the header no longer shows the rename command"
    command = f"{match.group(1)[:-1]} {match.group(2)}"
    shutil.copy(RULES, tmp_path / "rules.yml")
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    subprocess.run(command, shell=True, cwd=tmp_path, check=True, timeout=10)
    renamed = (tmp_path / "rules.yml").read_text(encoding="utf-8")
    assert 'backend="legacy"' not in renamed and 'backend="flask"' in renamed
    _ok(promtool("test", "rules", str(tmp_path / "rules_test.yml")))


# --- Grafana -------------------------------------------------------------------


def _provisioned_datasource() -> dict[str, Any]:
    (datasource,) = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert isinstance(datasource, dict)
    return datasource


def test_datasource_is_the_prometheus_of_the_readme() -> None:
    datasource = _provisioned_datasource()
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://127.0.0.1:9090"
    assert datasource["jsonData"]["timeInterval"] == "15s"  # the scrape interval


def test_dashboard_provider_loads_the_dashboard_directory() -> None:
    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/gateway"
    assert provider["options"]["path"] in (DEPLOY / "README.md").read_text(encoding="utf-8")


def test_dashboard_queries_go_to_the_provisioned_datasource() -> None:
    dashboard = load_dashboard()
    uid = _provisioned_datasource()["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == uid
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in all_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, panel["title"]
    for annotation in dashboard["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == expected, annotation["name"]


def test_dashboard_has_a_route_variable_from_label_values() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    route = variables["route"]
    match = LABEL_VALUES.match(route["query"]["query"])
    assert match is not None and match.group(2) == "route"
    assert route["multi"] and route["includeAll"]
    assert route["allValue"] == ".*"
    assert variables["new_backend"]["query"] == "new"


def test_dashboard_panels_are_laid_out_without_overlap() -> None:
    panels = all_panels(load_dashboard())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), panel["title"]


def test_dashboard_uses_only_series_the_rules_record() -> None:
    recorded = {rule["record"] for rule in load_rules() if "record" in rule}
    used = {name for q in dashboard_queries() for name in RECORDED.findall(q.expr)}
    assert used, "the dashboard shows no recorded series"
    assert used <= recorded


def test_dashboard_uses_only_known_template_variables() -> None:
    known = {v["name"] for v in load_dashboard()["templating"]["list"]}
    known |= {"__rate_interval", "__range", "__interval"}
    for query in dashboard_queries():
        assert variables_in(query.expr) <= known, query.where


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = " ".join(q.expr for q in dashboard_queries())
    for metric in (
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_requests_in_flight",
        "gateway_backend_errors_total",
        "gateway_route_weight",
        "gateway_config_reloads_total",
        "gateway_config_last_reload_success_timestamp_seconds",
    ):
        assert metric in exprs, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs
    annotations = [a for a in load_dashboard()["annotations"]["list"] if "expr" in a]
    assert {a["name"] for a in annotations} == {"Route table applied", "Route table rejected"}


# --- ensure-prometheus -----------------------------------------------------------


def test_ensure_prometheus_is_an_executable_bash_script() -> None:
    mode = ENSURE_PROMETHEUS.stat().st_mode
    assert mode & stat.S_IXUSR
    assert ENSURE_PROMETHEUS.read_text().startswith("#!/usr/bin/env bash\n")
    subprocess.run(["bash", "-n", str(ENSURE_PROMETHEUS)], check=True, timeout=10)


def test_ensure_prometheus_uses_the_binaries_on_path() -> None:
    tools = prometheus_tools()
    run = subprocess.run(
        [str(ENSURE_PROMETHEUS)], capture_output=True, text=True, timeout=30, check=False
    )
    assert run.returncode == 0, run.stderr
    assert tools.prometheus in run.stdout and tools.promtool in run.stdout


def test_ensure_prometheus_explains_itself_to_a_non_root_user(tmp_path: Path) -> None:
    # A PATH with bash and an `id` that says "not root", and no prometheus.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    (bin_dir / "bash").symlink_to(bash)
    fake_id = bin_dir / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    run = subprocess.run(
        [str(bin_dir / "bash"), str(ENSURE_PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert run.returncode == 1
    assert run.stdout == ""
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and "prometheus/promtool not on PATH" in lines[0]


def test_readme_names_only_files_that_exist() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    named = {m.rstrip(".,:)`") for m in re.findall(r"deploy/[\w./-]+", readme)}
    assert named, "the README names no files"
    for path in named:
        assert (REPO / path).exists(), path
