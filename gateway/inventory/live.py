"""Live figures for the inventory, from the gateway's own per-route counters.

The gateway counts every request per route and backend anyway (`gateway.metrics`);
this module only reads those counters (merged across workers by prometheus-client's
multiprocess mode), so the inventory adds no work to the request path. Per route and
backend: requests, the share of them answered 5xx, and the p99 latency over the whole
run, given as the upper bound of the histogram bucket it falls in. Per route: the
shadow comparison counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

from gateway.inventory.joining import Inventory

Figures = dict[str, dict[str, Any]]


def figures_from_metrics(families: Iterable[Metric]) -> Figures:
    """{route: {"backends": {backend: {...}}, "shadow": {result: n}}} from metric families."""
    requests: dict[tuple[str, str], list[int]] = {}  # (route, backend) -> [requests, 5xx]
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    shadow: dict[str, dict[str, int]] = {}
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "gateway_requests_total":
                key = (labels["route"], labels["backend"])
                counts = requests.setdefault(key, [0, 0])
                counts[0] += int(sample.value)
                if labels.get("code", "").startswith("5"):
                    counts[1] += int(sample.value)
            elif sample.name == "gateway_request_duration_seconds_bucket":
                key = (labels["route"], labels["backend"])
                buckets.setdefault(key, []).append((float(labels["le"]), sample.value))
            elif sample.name == "gateway_shadow_requests_total":
                results = shadow.setdefault(labels["route"], {})
                results[labels["result"]] = results.get(labels["result"], 0) + int(sample.value)
    figures: Figures = {}
    for (route, backend), (total, errors) in sorted(requests.items()):
        if total == 0:
            continue
        entry = figures.setdefault(route, {"backends": {}, "shadow": None})
        entry["backends"][backend] = {
            "requests": total,
            "error_ratio": round(errors / total, 6),
            "p99_seconds": _p99(buckets.get((route, backend), [])),
        }
    for route, results in sorted(shadow.items()):
        if any(results.values()):
            figures.setdefault(route, {"backends": {}, "shadow": None})["shadow"] = results
    return figures


def _p99(buckets: list[tuple[float, float]]) -> float | None:
    """The upper bound of the bucket the 99th percentile falls in; None past the last
    finite bound (or without requests)."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    wanted = 0.99 * ordered[-1][1]
    for bound, cumulative in ordered:
        if cumulative >= wanted:
            return None if math.isinf(bound) else bound
    return None


def attach_figures(inventory: Inventory, figures: Figures) -> None:
    """Give the inventory its `routes` figures, each endpoint its traffic (when its route
    claims exactly that endpoint), and the share of all requests the new sides served."""
    inventory.figures = figures
    for route_id, endpoints in inventory.claims.items():
        if len(endpoints) != 1:
            continue
        backends = figures.get(route_id, {}).get("backends", {})
        endpoints[0].traffic = {name: data["requests"] for name, data in backends.items()}


def traffic_share_new(inventory: Inventory) -> float | None:
    if inventory.figures is None:
        return None
    total = new = 0
    for entry in inventory.figures.values():
        for backend, data in entry["backends"].items():
            total += data["requests"]
            if backend != inventory.legacy:
                new += data["requests"]
    return round(new / total, 4) if total else 0.0
