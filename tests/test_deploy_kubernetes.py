"""deploy/kubernetes/, checked without a cluster: every kustomization rendered with
`kubectl kustomize`, validated against the Kubernetes schemas offline
(kubernetes-validate, strict); the Prometheus Operator kinds, which those schemas do
not cover, against their required fields here; the generated files against their
sources; and what the manifests promise the gateway (probes, drain, mounts)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from gateway.settings import Settings
from tests.deploysupport import FINAL, image_environment, wait_ready
from tests.harness import ROOT, free_port

KUBERNETES = ROOT / "deploy" / "kubernetes"
GENERATE = KUBERNETES / "generate.py"
KUSTOMIZATIONS = ["base", "overlays/redis-store", "overlays/grafana-dashboard"]
# The oldest Kubernetes release still commonly run, and the newest the installed
# kubernetes-validate knows.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]
OPERATOR_KINDS = {"PodMonitor", "PrometheusRule"}
KUBECTL = shutil.which("kubectl")

needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not found: the kustomize rendering checks are skipped"
)

Doc = dict[str, Any]


@cache
def render(kustomization: str) -> tuple[Doc, ...]:
    assert KUBECTL is not None
    run = subprocess.run(
        [KUBECTL, "kustomize", str(KUBERNETES / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return tuple(doc for doc in yaml.safe_load_all(run.stdout) if doc)


def find(docs: tuple[Doc, ...], kind: str, name: str | None = None) -> Doc:
    (doc,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def gateway_container(docs: tuple[Doc, ...]) -> Doc:
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "gateway"]
    return container


def env_of(container: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@needs_kubectl
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_are_valid_kubernetes(kustomization: str, version: str) -> None:
    docs = render(kustomization)
    unchecked = set()
    for doc in docs:
        if doc["kind"] in OPERATOR_KINDS:
            unchecked.add(doc["kind"])  # not in the schemas: test_operator_* below
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    assert unchecked == OPERATOR_KINDS


def test_validation_catches_a_misspelt_field() -> None:
    # The check can fail: strict validation refuses a key Kubernetes does not know.
    deployment = yaml.safe_load((KUBERNETES / "base" / "deployment.yaml").read_text())
    deployment["spec"]["template"]["spec"]["enableServicelinks"] = False
    with pytest.raises(kubernetes_validate.ValidationError, match="enableServicelinks"):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@needs_kubectl
def test_operator_pod_monitor_scrapes_the_gateway_pods() -> None:
    docs = render("base")
    monitor = find(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["name"]
    pod = find(docs, "Deployment", "gateway")["spec"]["template"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= pod["metadata"]["labels"].items()
    ports = {p["name"] for p in gateway_container(docs)["ports"]}
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] in ports
    assert endpoint["path"] == Settings().metrics_path
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert endpoint["interval"] == scrape["scrape_configs"][0]["scrape_interval"]


@needs_kubectl
def test_operator_prometheus_rule_holds_the_rules_file() -> None:
    rule = find(render("base"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"]
    groups = rule["spec"]["groups"]
    assert groups
    for group in groups:
        assert group["name"] and group["rules"]
        for item in group["rules"]:
            assert item["expr"]
            assert ("record" in item) != ("alert" in item), item
            if "alert" in item:
                assert item["labels"]["severity"] in ("critical", "warning")
    source = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    assert groups == source["groups"]


def run_generate(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=60
    )


def test_generated_files_are_up_to_date() -> None:
    run = run_generate(GENERATE, "--check")
    assert run.returncode == 0, run.stderr


def test_a_changed_rules_file_is_reported_until_regenerated(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", copy)
    rules = copy / "prometheus" / "rules.yml"
    text = rules.read_text()
    assert "for: 5m" in text
    rules.write_text(text.replace("for: 5m", "for: 7m", 1))
    stale = run_generate(copy / "kubernetes" / "generate.py", "--check")
    assert stale.returncode == 1
    assert "deploy/kubernetes/base/prometheusrule.yaml: out of date" in stale.stderr
    assert run_generate(copy / "kubernetes" / "generate.py").returncode == 0
    assert "for: 7m" in (copy / "kubernetes" / "base" / "prometheusrule.yaml").read_text()
    assert run_generate(copy / "kubernetes" / "generate.py", "--check").returncode == 0


@needs_kubectl
def test_deployment_runs_the_gateway_as_the_image_expects() -> None:
    docs = render("base")
    deployment = find(docs, "Deployment", "gateway")
    pod = deployment["spec"]["template"]["spec"]
    container = gateway_container(docs)
    env = env_of(container)
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert container["image"] == "strangler-gateway:0.1.0"
    assert "command" not in container and "args" not in container  # the image's entry point
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthz"
    (port,) = container["ports"]
    assert str(port["containerPort"]) == FINAL.last("EXPOSE")
    assert container["resources"]["requests"] and container["resources"]["limits"]
    # Non-root, read-only, with the image's working directory as a writable emptyDir.
    user, group = FINAL.last("USER").split(":")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(user),
        int(group),
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[FINAL.last("WORKDIR")]["name"]]
    assert FINAL.env()["TMPDIR"] == FINAL.last("WORKDIR")
    # The route table: a ConfigMap mounted as a directory (no subPath, so that updates
    # arrive), holding the file GATEWAY_CONFIG names.
    config = Path(env["GATEWAY_CONFIG"])
    routes_mount = mounts[str(config.parent)]
    assert "subPath" not in routes_mount
    configmap = find(docs, "ConfigMap", volumes[routes_mount["name"]]["configMap"]["name"])
    assert configmap["data"][config.name] == (ROOT / "routes.yaml").read_text()
    # Drain: the grace period covers the delay, the drain and the backends' shutdown.
    drain = float(env["GATEWAY_SHUTDOWN_DELAY"]) + float(env["GATEWAY_GRACEFUL_TIMEOUT"])
    assert pod["terminationGracePeriodSeconds"] >= drain + 10  # 10 s for the backends
    assert env["GATEWAY_LOG_FORMAT"] == "json"
    # The ingress's range is a setting the gateway reads (one it refuses stops the pod).
    trusted = Settings.load({"GATEWAY_FORWARDED_ALLOW_IPS": env["GATEWAY_FORWARDED_ALLOW_IPS"]})
    assert trusted.forwarded_allow_ips == "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"
    assert pod["enableServiceLinks"] is False
    spread = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in spread


@needs_kubectl
def test_service_budget_and_autoscaler_target_the_gateway() -> None:
    docs = render("base")
    labels = find(docs, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    service = find(docs, "Service", "gateway")
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in gateway_container(docs)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    budget = find(docs, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert budget["spec"]["maxUnavailable"] == 1
    autoscaler = find(docs, "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert autoscaler["spec"]["minReplicas"] >= 2


@needs_kubectl
def test_redis_overlay_points_the_gateway_at_its_redis() -> None:
    docs = render("overlays/redis-store")
    env = env_of(gateway_container(docs))
    assert env["REDIS_PASSWORD"] == {"secretKeyRef": {"name": "gateway-redis", "key": "password"}}
    assert env["GATEWAY_STORE"] == "redis://:$(REDIS_PASSWORD)@gateway-redis:6379/0"
    # Kubernetes expands $(VAR) only from variables defined earlier in the list.
    names = list(env)
    assert names.index("REDIS_PASSWORD") < names.index("GATEWAY_STORE")
    service = find(docs, "Service", "gateway-redis")
    assert [p["port"] for p in service["spec"]["ports"]] == [6379]
    redis = find(docs, "Deployment", "gateway-redis")["spec"]["template"]
    assert service["spec"]["selector"].items() <= redis["metadata"]["labels"].items()
    # Everything else is the base's.
    assert env["GATEWAY_LOG_FORMAT"] == "json"


@needs_kubectl
def test_dashboard_overlay_carries_the_dashboard_for_the_sidecar() -> None:
    configmap = find(render("overlays/grafana-dashboard"), "ConfigMap", "gateway-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = ROOT / "deploy" / "grafana" / "dashboards" / "gateway.json"
    assert configmap["data"]["gateway.json"] == dashboard.read_text()
    json.loads(configmap["data"]["gateway.json"])


@needs_kubectl
def test_the_deployments_environment_serves(tmp_path: Path) -> None:
    # The image's entry point with the Deployment's variables on top, its ConfigMap
    # as the mounted directory: every value it sets is one the gateway accepts.
    docs = render("base")
    port = free_port()
    env = image_environment(tmp_path, port)
    pod_env = env_of(gateway_container(docs))
    config = Path(pod_env["GATEWAY_CONFIG"])
    mounted = tmp_path / "configmap"
    mounted.mkdir()
    data = find(docs, "ConfigMap", "gateway-routes")["data"]
    for name, text in data.items():
        (mounted / name).write_text(text)
    env.update({k: v for k, v in pod_env.items() if isinstance(v, str)})
    env["GATEWAY_CONFIG"] = str(mounted / config.name)
    env["GATEWAY_PORT"] = str(port)  # the container port, mapped to a free one here
    env["GATEWAY_SHUTDOWN_DELAY"] = "0.5"  # the manifests' 10 s, shortened for the test
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            json.loads(FINAL.last("ENTRYPOINT")),
            cwd=env["TMPDIR"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, proc, log_path)
            probe = gateway_container(docs)["readinessProbe"]["httpGet"]["path"]
            assert httpx.get(url + probe, timeout=5).status_code == 200
            assert httpx.get(url + "/books", timeout=5).headers["x-gateway-backend"] == "new"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert any(e.get("message", "").startswith("route table loaded:") for e in entries)
