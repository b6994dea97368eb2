"""The `gateway` command: a thin layer over the library.

    gateway check  [FILE]                       validate, list every problem, exit 1 if any
    gateway routes [FILE] [--json]              print the route table
    gateway serve  [--config FILE] [--host] [--port] [--workers N] ...
    gateway flip   ROUTE_ID BACKEND [--config]  point one route at a backend
    gateway flip   --all BACKEND [--config]     the emergency switch: every route
    gateway canary ROUTE_ID PERCENT [--backend B] set (or add) a route's canary share
    gateway diff   ROUTE_ID [--url]             the last shadow mismatches of a route
    gateway inventory [--config] [--json] [--url] [--legacy-backend NAME]
                                                what is left to migrate, per endpoint
    gateway init   --legacy MOD:APP --new MOD:APP [-o FILE]   a starter route file
    gateway push | pull | history | revert | fleet --store URL
                                                the Redis store (gateway.fleet.commands)

Exit codes: 0 success, 1 invalid config or refused change, 2 usage error.
Expected failures print one plain line each, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

from gateway import fetch, tls
from gateway.apppath import use_app_dirs
from gateway.fleet.commands import add_commands, add_store_arguments, store_edit
from gateway.fleet.store import StoreAddress, StoreError
from gateway.inventory.commands import FlipAll, check_warnings
from gateway.inventory.commands import add_commands as add_inventory_commands
from gateway.paths import ReservedPaths
from gateway.routefile.editing import Edit, EditError, EditResult, flip, set_canary
from gateway.routefile.loading import load_config
from gateway.routefile.model import ConfigError, GatewayConfig
from gateway.settings import Settings, add_arguments, given
from gateway.sources import FileSource


def _default_config() -> str:
    return os.environ.get("GATEWAY_CONFIG", "routes.yaml")


def _report(exc: ConfigError, source: str) -> int:
    print(exc.report(source, "applied"), file=sys.stderr)
    return 1


def _reserved() -> ReservedPaths | None:
    """The paths `gateway serve` would keep with this environment's settings."""
    try:
        return Settings.load().reserved
    except ValueError:
        return None  # reported by `serve`; check against the defaults


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, reserved=_reserved())
    except ConfigError as exc:
        return _report(exc, args.file)
    # Unverified upstreams, and the inventory's warnings: endpoints a route misroutes,
    # app routes the gateway hides.
    warnings, notes = check_warnings(config)
    warnings = [*tls.warnings(config), *warnings]
    for warning in warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    for note in notes:
        print(f"{args.file}: note: {note}", file=sys.stderr)
    if warnings and args.strict:
        print(f"{args.file}: {len(warnings)} warning(s), failing (--strict)", file=sys.stderr)
        return 1
    print(
        f"{args.file}: OK ({len(config.routes)} routes, {len(config.backends)} backends, "
        f"default: {config.default or 'none'}"
        + (f", {len(warnings)} warning(s)" if warnings else "")
        + ")"
    )
    return 0


def routes_table(config: GatewayConfig) -> str:
    rows = [("ID", "METHODS", "PATH", "BACKEND")]
    for route in config.routes:
        path = route.path
        if route.strip_prefix is not None:
            path += f" (strips {route.strip_prefix})"
        rows.append((route.id, ",".join(route.methods or ("*",)), path, route.backend))
    rows.append(("_default", "*", "(anything else)", config.default or "(404)"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    )


def cmd_routes(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file, resolve_imports=False, reserved=_reserved())
    except ConfigError as exc:
        return _report(exc, args.file)
    if args.json:
        print(json.dumps(config.view(), indent=2))
    else:
        print(routes_table(config))
    return 0


def _target(args: argparse.Namespace) -> StoreAddress | str | int:
    """What an edit changes: the --store address or the route file; or exit code 2,
    said why, when --store is not a store URL."""
    if not args.store:
        return str(args.config)
    try:
        return StoreAddress(args.store, args.store_key)
    except ValueError as exc:
        print(f"gateway {args.command}: {exc}", file=sys.stderr)
        return 2


def _shown(target: StoreAddress | str) -> str:
    """The target in messages: a store without its password."""
    return target.shown if isinstance(target, StoreAddress) else target


def _edit(target: StoreAddress | str, edit: Edit, kind: str) -> EditResult | int:
    """Store an edit in the route file or in the store (a running gateway follows
    either); on a refusal print why and return the exit code."""
    where = _shown(target)
    try:
        if isinstance(target, StoreAddress):
            return store_edit(target, edit, kind)
        return FileSource(target).edit_now(edit)
    except ConfigError as exc:
        return _report(exc, where)
    except (EditError, StoreError) as exc:
        print(f"{where}: {exc}; nothing was changed", file=sys.stderr)
    except OSError as exc:
        print(f"{where}: cannot write: {exc.strerror or exc}", file=sys.stderr)
    return 1


def cmd_flip(args: argparse.Namespace) -> int:
    target = _target(args)
    if isinstance(target, int):
        return target
    where = _shown(target)
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
    edit: Edit = flip(route_id, backend)
    flip_all = None
    if route_id is None and not args.force:  # the emergency switch leaves what it cannot serve
        edit = flip_all = FlipAll(backend)
    result = _edit(target, edit, "flip")
    if isinstance(result, int):
        return result
    left = flip_all.left if flip_all else {}
    if result.changed:
        print(f"{where}: {', '.join(result.changed)} -> {backend}")
    else:
        target = route_id or ("every other route" if left else "every route")
        print(f"{where}: {target} already on {backend}; nothing to change")
    for route, why in left.items():
        print(f"{where}: left {route} as it was: {why} (--force flips it anyway)")
    if flip_all and flip_all.unknown:
        print(f"{where}: note: {flip_all.unknown}; flipped every route", file=sys.stderr)
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    target = _target(args)
    if isinstance(target, int):
        return target
    where = _shown(target)
    try:
        percent = float(args.percent)
    except ValueError:
        print(f"gateway canary: percent must be a number, got {args.percent!r}", file=sys.stderr)
        return 2
    try:
        edit = set_canary(args.route_id, percent, args.backend)
    except EditError as exc:
        print(f"{where}: {exc}; nothing was changed", file=sys.stderr)
        return 1
    result = _edit(target, edit, "canary")
    if isinstance(result, int):
        return result
    canary = result.config.route(args.route_id).canary
    if canary is None:  # unreachable: set_canary leaves a canary in place
        return 1
    state = "set" if result.changed else "already"
    print(f"{where}: {args.route_id} canary {state} at {canary.percent:g}% to {canary.backend}")
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/") + args.admin_prefix.rstrip("/") + "/shadow"
    try:
        query = urlencode({"route": args.route_id})
        report = fetch.get_json(f"{url}?{query}", 10, "routes", fetch.admin_token())
    except fetch.FetchError as exc:
        print(f"gateway diff: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    if args.route_id not in report:
        print(
            f"{args.route_id}: no shadow traffic seen by this gateway worker (is 'shadow:' set "
            "on the route, and has it had GET traffic?)",
            file=sys.stderr,
        )
        return 1
    route = report[args.route_id]
    counts = ", ".join(f"{k} {v}" for k, v in route["counts"].items())
    print(f"{args.route_id}: {counts}")
    for m in route["mismatches"]:
        print(f"\n{m['at']}  {m['request']}  request_id={m['request_id']}")
        print(
            f"  {m['primary']['backend']} {m['primary']['status']}  vs  "
            f"{m['shadow']['backend']} {m['shadow']['status']}"
        )
        for line in m["differences"]:
            print("  " + line.replace("\n", "\n    "))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway.server import serve

    try:
        settings = Settings.load(**given(args))
    except ValueError as exc:
        print(f"gateway serve: {exc}", file=sys.stderr)
        return 2
    return serve(settings)


def _file_arguments(command: argparse.ArgumentParser) -> None:
    """The route file, as a word or as `--config` (the spelling of serve, flip and the rest)."""
    command.add_argument("file", nargs="?", help="the route file (default: routes.yaml)")
    command.add_argument("--config", help="the same, as the other commands spell it")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway",
        description="Strangler migration gateway: route each endpoint to the legacy or new app.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="validate a route file and list every problem")
    _file_arguments(check)
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(func=cmd_check)

    routes = sub.add_parser("routes", help="print the route table")
    _file_arguments(routes)
    routes.add_argument("--json", action="store_true", help="print JSON instead of a table")
    routes.set_defaults(func=cmd_routes)

    flip_p = sub.add_parser("flip", help="point a route (or --all routes) at a backend")
    flip_p.add_argument("route_id", metavar="ROUTE_ID", help="route id (with --all: the backend)")
    flip_p.add_argument("backend", metavar="BACKEND", nargs="?")
    flip_p.add_argument("--all", action="store_true", help="flip every route to BACKEND")
    flip_p.add_argument(
        "--force", action="store_true", help="with --all: also routes BACKEND does not implement"
    )
    flip_p.add_argument("--config", default=_default_config())
    add_store_arguments(flip_p, required=False)
    flip_p.set_defaults(func=cmd_flip)

    canary = sub.add_parser("canary", help="set the share of a route's traffic on its canary")
    canary.add_argument("route_id", metavar="ROUTE_ID")
    canary.add_argument("percent", metavar="PERCENT", help="0 to 100 (decimals allowed)")
    canary.add_argument("--backend", help="the canary backend, to add a canary to a route")
    canary.add_argument("--config", default=_default_config())
    add_store_arguments(canary, required=False)
    canary.set_defaults(func=cmd_canary)

    diff = sub.add_parser("diff", help="show the last shadow mismatches of a route")
    diff.add_argument("route_id", metavar="ROUTE_ID")
    diff.add_argument(
        "--url",
        default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000"),
        help="the running gateway (default: http://127.0.0.1:8000)",
    )
    diff.add_argument("--admin-prefix", default="/-/")
    diff.set_defaults(func=cmd_diff)

    add_inventory_commands(sub, _default_config())
    add_commands(sub)

    for name, command in sub.choices.items():
        if name != "diff":  # every command that may import the apps (serve: its setting)
            written = "the file it writes" if name == "init" else "the route file"
            command.add_argument(
                "--app-dir",
                metavar="DIR",
                help=f"import the apps from DIR (default: the directory of {written})",
            )

    serve_p = sub.add_parser("serve", help="serve the gateway")
    add_arguments(serve_p)
    serve_p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if "file" in args and "config" in args:  # check, routes: the route file, either way
        if args.file and args.config and args.file != args.config:
            parser.error(f"{args.command}: two route files given ({args.file}, {args.config})")
        args.file = args.file or args.config or _default_config()
    if args.command != "serve":  # serve does it for itself and its workers (server.serve)
        config = getattr(args, "file", None) or getattr(args, "config", None)
        if args.command == "init":  # the file it writes: -o, else one saved right here
            config = args.output or str(Path.cwd() / "routes.yaml")
        use_app_dirs(config, getattr(args, "app_dir", None))
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader left early (`gateway inventory | head`): no traceback, and nothing
        # more written to the closed pipe when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
