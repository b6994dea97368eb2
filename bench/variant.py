"""Run `gateway serve` with another HTTP client for remote backends, for measurement only.

    python -m bench.variant --transport NAME -- serve --config FILE ...

`--transport` replaces the remote backend's HTTP client (`gateway.upstream`'s
`new_client` and `HTTPBackend`) with one from `bench.transports`; everything
else is the gateway as shipped. Works with one worker: the patches live in
this process.
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

    from gateway.cli import main as gateway_main

    return gateway_main(rest)


if __name__ == "__main__":
    sys.exit(main())
