"""deploy/compose.yaml, checked without a container runtime: the Compose
specification's JSON schema (check-jsonschema's vendored copy, offline), loopback-bound
ports, mounted files that exist, and its Prometheus and Grafana files in step with the
ones deploy/README.md documents."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.deploysupport import FINAL
from tests.promsupport import DATASOURCES, DEPLOY, PROMETHEUS_CONFIG, RULES, promtool

COMPOSE = DEPLOY / "compose.yaml"
SPEC = yaml.safe_load(COMPOSE.read_text())
SERVICES: dict[str, Any] = SPEC["services"]


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run(
        [str(binary), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compose_file_matches_the_compose_specification() -> None:
    run = check_jsonschema(COMPOSE)
    assert run.returncode == 0, run.stdout + run.stderr


def test_schema_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text(COMPOSE.read_text().replace("stop_grace_period:", "stop_grace_periods:"))
    run = check_jsonschema(bad)
    assert run.returncode == 1
    assert "stop_grace_periods" in run.stdout


def test_the_four_services_publish_on_loopback_only() -> None:
    assert set(SERVICES) == {"gateway", "redis", "prometheus", "grafana"}
    for name, service in SERVICES.items():
        for port in service["ports"]:
            assert port.startswith("127.0.0.1:"), (name, port)


def test_mounted_files_exist() -> None:
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source


def test_gateway_service_runs_the_image() -> None:
    gateway = SERVICES["gateway"]
    assert (DEPLOY / gateway["build"]["context"] / gateway["build"]["dockerfile"]).is_file()
    assert gateway["read_only"] is True
    (state,) = gateway["volumes"]
    assert state.split(":")[1] == FINAL.last("WORKDIR")
    assert gateway["ports"] == [f"127.0.0.1:{FINAL.env()['GATEWAY_PORT']}:8000"]
    # Longer than the gateway's graceful timeout (default 30 s), or Docker kills it mid-drain.
    assert int(gateway["stop_grace_period"].rstrip("s")) > 30


def test_prometheus_config_is_the_documented_one_aimed_at_the_service(tmp_path: Path) -> None:
    own = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    documented = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    documented["scrape_configs"][0]["static_configs"] = [{"targets": ["gateway:8000"]}]
    assert own == documented
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/rules.yml"] == "./prometheus/rules.yml"
    # promtool resolves rule_files beside the config, as in the container.
    shutil.copy(DEPLOY / "compose" / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(RULES, tmp_path / "rules.yml")
    run = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert run.returncode == 0, run.stdout + run.stderr


def test_grafana_data_source_is_the_documented_one_aimed_at_the_service() -> None:
    own = yaml.safe_load((DEPLOY / "compose" / "grafana-datasource.yml").read_text())
    documented = yaml.safe_load(DATASOURCES.read_text())
    documented["datasources"][0]["url"] = "http://prometheus:9090"
    assert own == documented
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/gateway.yml").read_text())
    dashboards_dir = providers["providers"][0]["options"]["path"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"]}
    assert mounts[dashboards_dir] == "./grafana/dashboards"
