"""Which routes differ between two tables: for the event log and the store's history."""

from __future__ import annotations

from gateway.routefile.model import DEFAULT_ROUTE_ID, GatewayConfig


def changed_routes(before: GatewayConfig | None, after: GatewayConfig) -> list[str]:
    """Ids of the routes `after` adds, drops or changes compared with `before` (every
    route when there is no `before`), and the default route's when the default moved."""
    if before is None:
        return [r.id for r in after.routes]
    was = {r.id: r for r in before.routes}
    now = {r.id: r for r in after.routes}
    changed = [rid for rid in now if was.get(rid) != now[rid]]
    changed += [rid for rid in was if rid not in now]
    if before.default != after.default:
        changed.append(DEFAULT_ROUTE_ID)
    return changed
