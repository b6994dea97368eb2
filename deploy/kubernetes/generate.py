"""Write the Kubernetes objects that carry files kept elsewhere in deploy/.

    python deploy/kubernetes/generate.py          # rewrite them
    python deploy/kubernetes/generate.py --check  # exit 1 if one is out of date

One source of truth each: deploy/prometheus/rules.yml becomes the PrometheusRule of
the base, deploy/grafana/dashboards/gateway.json the dashboard ConfigMap of the
grafana-dashboard overlay (kustomize cannot read files outside a kustomization's
directory). `make test` fails when either is out of date.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gateway.json"
PROMETHEUS_RULE = HERE / "base" / "prometheusrule.yaml"
DASHBOARD_CONFIGMAP = HERE / "overlays" / "grafana-dashboard" / "dashboard-configmap.yaml"
LABELS = {"app.kubernetes.io/name": "gateway"}


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # Multi-line PromQL and JSON stay readable (and diffable) as block scalars.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _dump(header: str, document: dict[str, Any]) -> str:
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)
    return header + body


def prometheus_rule(rules_text: str) -> str:
    groups = yaml.safe_load(rules_text)["groups"]
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "gateway", "labels": LABELS},
        "spec": {"groups": groups},
    }
    header = (
        "# Generated from deploy/prometheus/rules.yml by deploy/kubernetes/generate.py;\n"
        "# edit that file and run the script. Your Prometheus's ruleSelector must match\n"
        "# these labels.\n"
    )
    return _dump(header, document)


def dashboard_configmap(dashboard_text: str) -> str:
    json.loads(dashboard_text)  # a broken dashboard fails here, not in Grafana
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "gateway-dashboard",
            # The label Grafana's dashboard sidecar watches for (its chart's default).
            "labels": {**LABELS, "grafana_dashboard": "1"},
            "annotations": {"grafana_folder": "Strangler gateway"},
        },
        "data": {"gateway.json": dashboard_text},
    }
    header = (
        "# Generated from deploy/grafana/dashboards/gateway.json by\n"
        "# deploy/kubernetes/generate.py; edit that file and run the script.\n"
    )
    return _dump(header, document)


def outputs() -> dict[Path, str]:
    return {
        PROMETHEUS_RULE: prometheus_rule(RULES.read_text(encoding="utf-8")),
        DASHBOARD_CONFIGMAP: dashboard_configmap(DASHBOARD.read_text(encoding="utf-8")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report what is stale")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            name = path.relative_to(DEPLOY.parent)
            print(f"{name}: out of date; run deploy/kubernetes/generate.py", file=sys.stderr)
            stale += 1
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(DEPLOY.parent)}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
