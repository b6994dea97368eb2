"""The migration inventory: which endpoints each app has, where each is served now,
and how much traffic has moved, read from the apps' own route tables.

    reading   an in-process app's routes (Flask/Werkzeug, Starlette/FastAPI)
    remote    a url backend's OpenAPI document
    joining   the join by method and path shape, and each endpoint's status
    live      figures from the gateway's own per-route counters
    render    the JSON document and the table
    starter   `gateway init`'s starter route file
    commands  the CLI commands and the warnings of `gateway check`
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.metrics_core import Metric

from gateway.inventory.joining import InventoryError, build_inventory, read_backends
from gateway.inventory.live import attach_figures, figures_from_metrics
from gateway.inventory.render import to_json
from gateway.routefile.model import GatewayConfig

__all__ = ["live_report"]


def live_report(config: GatewayConfig, families: Iterable[Metric] | None) -> dict[str, Any]:
    """`GET /-/inventory`: the inventory of the live table with the gateway's own figures
    (None: the gateway counts nothing, `--no-metrics`). Blocking (it reads the apps, and
    maybe a remote OpenAPI document): run it off the event loop."""
    figures = None if families is None else figures_from_metrics(families)
    try:
        inventory = build_inventory(config, read_backends(config))
    except InventoryError as exc:
        return {"legacy": None, "error": str(exc), "routes": figures}
    if figures is not None:
        attach_figures(inventory, figures)
    return to_json(inventory)
