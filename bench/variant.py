"""Run `gateway serve` with one mechanism swapped or disabled, for measurement only.

    python -m bench.variant [--transport NAME] [--no-refreeze] -- serve --config FILE ...

`--transport` replaces the remote backend's HTTP client (`gateway.upstream`'s
`new_client` and `HTTPBackend`) with one from `bench.transports`.
`--no-refreeze` leaves a table built by a reload out of the frozen heap (what
the gateway did before `Gateway._refreeze_soon`). Everything else is the
gateway as shipped. Works with one worker: the patches live in this process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def replace(original: object, substitute: object) -> None:
    """Rebind `original` to `substitute` wherever a gateway module imported it."""
    for name, module in list(sys.modules.items()):
        if name == "gateway" or name.startswith("gateway."):
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, substitute)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.variant")
    parser.add_argument("--transport", default=None)
    parser.add_argument("--no-refreeze", action="store_true")
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

    from gateway.cli import main as gateway_main

    return gateway_main(rest)


if __name__ == "__main__":
    sys.exit(main())
