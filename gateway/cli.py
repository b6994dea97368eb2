"""The `gateway` command: a thin layer over the library.

    gateway check  [FILE]                       validate, list every problem, exit 1 if any
    gateway routes [FILE] [--json]              print the route table
    gateway serve  [--config FILE] [--host] [--port] [--workers N] ...
    gateway flip   ROUTE_ID BACKEND [--config]  point one route at a backend
    gateway flip   --all BACKEND [--config]     the emergency switch: every route

Exit codes: 0 success, 1 invalid config or refused change, 2 usage error.
Expected failures print one plain line each, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.editing import EditError, flip


def _default_config() -> str:
    return os.environ.get("GATEWAY_CONFIG", "routes.yaml")


def _report(exc: ConfigError, source: str) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    count = len(exc.problems)
    print(
        f"{source}: {count} problem{'s' if count != 1 else ''}; nothing was applied",
        file=sys.stderr,
    )
    return 1


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        return _report(exc, args.file)
    print(
        f"{args.file}: OK ({len(config.routes)} routes, {len(config.backends)} backends, "
        f"default: {config.default or 'none'})"
    )
    return 0


def routes_table(config: GatewayConfig) -> str:
    rows = [("ID", "METHODS", "PATH", "BACKEND")]
    for route in config.routes:
        rows.append((route.id, ",".join(route.methods or ("*",)), route.path, route.backend))
    rows.append(("_default", "*", "(anything else)", config.default or "(404)"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def cmd_routes(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, resolve_imports=False)
    except ConfigError as exc:
        return _report(exc, args.file)
    if args.json:
        print(
            json.dumps(
                {
                    "default": config.default,
                    "backends": {
                        b.name: {"kind": b.kind, "target": b.target} for b in config.backends
                    },
                    "routes": [
                        {
                            "id": r.id,
                            "path": r.path,
                            "methods": list(r.methods) if r.methods else None,
                            "backend": r.backend,
                        }
                        for r in config.routes
                    ],
                },
                indent=2,
            )
        )
    else:
        print(routes_table(config))
    return 0


def cmd_flip(args: argparse.Namespace) -> int:
    if args.all:
        if args.backend is not None:
            print("gateway flip --all takes one argument: the backend", file=sys.stderr)
            return 2
        route_id, backend = None, args.route_id
    else:
        if args.backend is None:
            print("usage: gateway flip ROUTE_ID BACKEND (or --all BACKEND)", file=sys.stderr)
            return 2
        route_id, backend = args.route_id, args.backend
    try:
        result = flip(args.config, route_id, backend)
    except ConfigError as exc:
        return _report(exc, args.config)
    except EditError as exc:
        print(f"{args.config}: {exc}; nothing was changed", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.config}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if result.changed:
        print(f"{args.config}: {', '.join(result.changed)} -> {backend}")
    else:
        target = route_id or "every route"
        print(f"{args.config}: {target} already on {backend}; nothing to change")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Strangler migration gateway: route each endpoint to the legacy or new app.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate a route file and list every problem")
    check.add_argument("file", nargs="?", default=_default_config())
    check.set_defaults(func=cmd_check)

    routes = sub.add_parser("routes", help="print the route table")
    routes.add_argument("file", nargs="?", default=_default_config())
    routes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    routes.set_defaults(func=cmd_routes)

    flip_p = sub.add_parser("flip", help="point a route (or --all routes) at a backend")
    flip_p.add_argument("route_id", metavar="ROUTE_ID", help="route id (with --all: the backend)")
    flip_p.add_argument("backend", metavar="BACKEND", nargs="?")
    flip_p.add_argument("--all", action="store_true", help="flip every route to BACKEND")
    flip_p.add_argument("--config", default=_default_config())
    flip_p.set_defaults(func=cmd_flip)

    from gateway.server import add_serve_arguments

    serve_p = sub.add_parser("serve", help="serve the gateway")
    add_serve_arguments(serve_p)
    serve_p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
