"""The inventory as one JSON document, and as a table for a person, grouped by status."""

from __future__ import annotations

from typing import Any

from gateway.inventory.joining import STATUSES, Endpoint, Inventory, summary
from gateway.inventory.live import traffic_share_new


def to_json(inventory: Inventory) -> dict[str, Any]:
    totals = summary(inventory)
    totals["traffic_share_new"] = traffic_share_new(inventory)
    return {
        "legacy": inventory.legacy,
        "summary": totals,
        "endpoints": [_endpoint(e) for e in _by_status(inventory.endpoints)],
        "routes": inventory.figures,
        "backends": {
            name: {
                "inspected": read.endpoints is not None,
                "endpoints": None if read.endpoints is None else len(read.endpoints),
                "reason": read.reason,
            }
            for name, read in inventory.backends.items()
        },
        "problems": inventory.problems,
    }


def _endpoint(e: Endpoint) -> dict[str, Any]:
    data: dict[str, Any] = {
        "method": e.method,
        "path": e.path,
        "status": e.status,
        "route": e.route,
        "backend": e.backend,
        "implemented_by": e.implemented_by,
        "traffic": e.traffic,
        "canary": e.canary,
        "shadowed": e.shadowed,
        "names": e.names,
        "hidden": e.hidden,
    }
    if e.routed is not None:
        data["routed"] = e.routed
    return data


def _by_status(endpoints: list[Endpoint]) -> list[Endpoint]:
    rank = {status: i for i, status in enumerate(STATUSES)}
    return sorted(endpoints, key=lambda e: rank[e.status])  # stable: path order within


def summary_line(inventory: Inventory) -> str:
    totals = summary(inventory)
    counts = ", ".join(f"{totals[s]} {s}" for s in STATUSES if totals[s])
    line = (
        f"{totals['legacy_migrated']} of {totals['legacy_endpoints']} endpoints migrated "
        f"({totals['endpoints']} endpoints: {counts or 'none'})"
    )
    share = traffic_share_new(inventory)
    if share is not None:
        line += f"; {share:.1%} of requests served by new sides"
    return line


def to_text(inventory: Inventory) -> str:
    lines: list[str] = []
    rows = [("STATUS", "METHOD", "PATH", "ROUTE", "BACKEND", "IMPLEMENTED BY", "TRAFFIC")]
    for e in _by_status(inventory.endpoints):
        status = e.status
        if e.routed is not None:
            status += " (routed)" if e.routed else " (not routed)"
        if e.canary is not None and e.status == "canary":
            status += f" {e.canary['percent']:g}% to {e.canary['backend']}"
        traffic = "-" if e.traffic is None else _traffic(e.traffic)
        rows.append(
            (
                status,
                e.method,
                e.path + (" (hidden)" if e.hidden else ""),
                e.route or "-",
                e.backend or "-",
                ",".join(e.implemented_by),
                traffic,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    if inventory.figures:
        lines.append("")
        lines.append("ROUTE FIGURES (whole run)")
        for route_id, entry in sorted(inventory.figures.items()):
            for backend, data in entry["backends"].items():
                p99 = data["p99_seconds"]
                p99_text = "over 10 s" if p99 is None else f"<= {p99 * 1000:g} ms"
                lines.append(
                    f"  {route_id} -> {backend}: {data['requests']} requests, "
                    f"{data['error_ratio']:.2%} 5xx, p99 {p99_text}"
                )
            if entry["shadow"]:
                results = ", ".join(f"{k} {v}" for k, v in sorted(entry["shadow"].items()))
                lines.append(f"  {route_id} shadow: {results}")
    for name, read in inventory.backends.items():
        if read.endpoints is None:
            lines.append(f"note: backend {name!r} not inspected: {read.reason}")
    for problem in inventory.problems:
        lines.append(f"note: {problem}")
    lines.append("")
    lines.append(summary_line(inventory))
    return "\n".join(lines)


def _traffic(traffic: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in traffic.items()) or "0"
