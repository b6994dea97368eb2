"""Who serves which revision: the heartbeats of a fleet's workers, grouped by instance.

Each `gateway serve` process is one instance; each of its workers publishes a
heartbeat (expiring after its TTL, so a worker that died drops out). An
instance serves the lowest revision among its workers: a change has reached
the fleet when every instance serves the store's revision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fleet_view(revision: int, beats: list[dict[str, Any]]) -> dict[str, Any]:
    """`GET /-/fleet` and `gateway fleet`: the store's revision and every live instance."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for beat in beats:
        grouped.setdefault(str(beat["instance"]), []).append(beat)
    instances = []
    for instance_id, workers in sorted(grouped.items()):
        workers.sort(key=lambda b: int(b["pid"]))
        first = workers[0]
        errors = [b["last_error"] for b in workers if b.get("last_error")]
        instances.append(
            {
                "id": instance_id,
                "host": first["host"],
                "pid": first["instance_pid"],
                "revision": min(int(b["revision"]) for b in workers),
                "since": iso(first["instance_since"]),
                "last_error": errors[0] if errors else None,
                "workers": [
                    {"pid": b["pid"], "revision": b["revision"], "last_seen": iso(b["last_seen"])}
                    for b in workers
                ],
            }
        )
    return {"revision": revision, "instances": instances}


def behind(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The instances that do not serve the store's revision (yet)."""
    return [i for i in view["instances"] if i["revision"] != view["revision"]]
