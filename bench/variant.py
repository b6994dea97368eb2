"""Run `gateway serve` with one mechanism swapped or disabled, for measurement only.

    python -m bench.variant [--transport NAME] [--no-refreeze] [--gc-report FILE] \
        -- serve --config FILE ...

`--transport` replaces the remote backend's HTTP client (`gateway.upstream`'s
`new_client` and `HTTPBackend`) with one from `bench.transports`.
`--no-refreeze` leaves a table built by a reload out of the frozen heap (what
the gateway did before `Gateway._refreeze_soon`). `--gc-report` times every
full garbage collection; on SIGUSR1 the process writes what it timed since the
last report, and the collector's object counts, to FILE as JSON
(`bench.gcpauses` reads it). Everything else is the gateway as shipped. Works
with one worker: the patches live in this process.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def replace(original: object, substitute: object) -> None:
    """Rebind `original` to `substitute` wherever a gateway module imported it."""
    for name, module in list(sys.modules.items()):
        if name == "gateway" or name.startswith("gateway."):
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, substitute)


def report_full_collections(path: Path) -> None:
    """Time every full collection; write the pauses so far to `path` on SIGUSR1."""
    pauses_ms: list[float] = []
    started = [0.0]

    def hook(phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses_ms.append((time.perf_counter() - started[0]) * 1000)

    def report(signum: int, frame: object) -> None:
        data = {
            "pauses_ms": list(pauses_ms),
            "tracked": len(gc.get_objects()),
            "frozen": gc.get_freeze_count(),
        }
        pauses_ms.clear()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    gc.callbacks.append(hook)
    signal.signal(signal.SIGUSR1, report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.variant")
    parser.add_argument("--transport", default=None)
    parser.add_argument("--no-refreeze", action="store_true")
    parser.add_argument("--gc-report", type=Path, default=None)
    parser.add_argument("gateway_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = list(args.gateway_args)
    if rest[:1] == ["--"]:
        rest = rest[1:]

    import gateway.app  # noqa: F401 - loads every gateway module that may hold the names
    from gateway import upstream

    if args.transport:
        from bench.transports import TRANSPORTS

        if args.transport not in TRANSPORTS:
            parser.error(f"unknown transport {args.transport!r}; one of {sorted(TRANSPORTS)}")
        new_client, backend = TRANSPORTS[args.transport]
        replace(upstream.new_client, new_client)
        replace(upstream.HTTPBackend, backend)

    if args.no_refreeze:
        from gateway.app import Gateway

        def no_refreeze(self: Gateway) -> None:
            pass

        Gateway._refreeze_soon = no_refreeze  # type: ignore[method-assign]

    if args.gc_report is not None:
        report_full_collections(args.gc_report)

    from gateway.cli import main as gateway_main

    return gateway_main(rest)


if __name__ == "__main__":
    sys.exit(main())
