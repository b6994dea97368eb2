"""The inventory's place in the CLI: `gateway inventory`, `gateway init`, the warnings of
`gateway check` and `gateway flip --all`, which leaves the routes its target cannot serve."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gateway import fetch
from gateway.inventory.joining import (
    Inventory,
    InventoryError,
    build_inventory,
    probe_path,
    read_backends,
    unserved_claims,
)
from gateway.inventory.live import attach_figures
from gateway.inventory.reading import WEBSOCKET
from gateway.inventory.render import to_json, to_text
from gateway.inventory.starter import starter_file
from gateway.routefile.editing import EditResult, flip
from gateway.routefile.loading import load_config, parse_config
from gateway.routefile.model import ConfigError, GatewayConfig
from gateway.settings import Settings


def add_commands(sub: Any, default_config: str) -> None:
    inventory = sub.add_parser(
        "inventory", help="what is left to migrate: every endpoint of every app, and its status"
    )
    inventory.add_argument("--config", default=default_config)
    inventory.add_argument("--json", action="store_true", help="print one JSON document")
    inventory.add_argument(
        "--url", help="a running gateway, for live traffic figures (e.g. http://127.0.0.1:8000)"
    )
    inventory.add_argument("--admin-prefix", default="/-/")
    inventory.add_argument(
        "--legacy-backend", metavar="NAME", help="the legacy side (default: the default backend)"
    )
    inventory.set_defaults(func=cmd_inventory)

    init = sub.add_parser("init", help="write a starter route file from the two apps")
    init.add_argument("--legacy", required=True, metavar="MODULE:APP", help="the legacy app")
    init.add_argument("--new", required=True, metavar="MODULE:APP", help="the new app")
    init.add_argument("-o", "--output", metavar="FILE", help="write here (never over a file)")
    init.set_defaults(func=cmd_init)


def _problems(exc: ConfigError, source: str) -> int:
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"{source}: {len(exc.problems)} problem(s); nothing was read", file=sys.stderr)
    return 1


def inventory_of(
    config: GatewayConfig, legacy: str | None = None, factories: bool = True
) -> Inventory:
    return build_inventory(config, read_backends(config, factories), legacy)


def cmd_inventory(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, resolve_imports=False)
    except ConfigError as exc:
        return _problems(exc, args.config)
    try:
        inventory = inventory_of(config, args.legacy_backend)
    except InventoryError as exc:
        print(f"gateway inventory: {exc}", file=sys.stderr)
        return 1
    if args.url:
        figures = _fetch_figures(
            args.url.rstrip("/") + args.admin_prefix.rstrip("/") + "/inventory"
        )
        if isinstance(figures, str):
            print(f"gateway inventory: {figures}", file=sys.stderr)
            return 1
        attach_figures(inventory, figures)
    print(json.dumps(to_json(inventory), indent=2) if args.json else to_text(inventory))
    return 0


def _fetch_figures(url: str) -> dict[str, Any] | str:
    """The running gateway's per-route figures, or why they could not be had."""
    try:
        figures = fetch.get_json(url, 30, "routes", fetch.admin_token())
    except fetch.FetchError as exc:
        return f"cannot read {url}: {exc}"
    return figures if isinstance(figures, dict) else {}


def cmd_init(args: argparse.Namespace) -> int:
    try:
        text = starter_file(args.legacy, args.new)
    except InventoryError as exc:
        print(f"gateway init: {exc}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "x", encoding="utf-8") as out:
            out.write(text)
    except FileExistsError:
        print(
            f"gateway init: {args.output} already exists; init never overwrites a file "
            "(remove it or choose another -o)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"gateway init: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    routes = text.count("\n  - id: ")
    print(f"{args.output}: written ({routes} routes); check it with: gateway check")
    return 0


def check_warnings(config: GatewayConfig) -> tuple[list[str], list[str]]:
    """(warnings, notes) of `gateway check`: misrouted endpoints and app routes the
    gateway's own paths hide; notes say which backends could not be inspected."""
    warnings: list[str] = []
    notes: list[str] = []
    try:
        inventory = inventory_of(config, factories=False)  # check calls no factory
    except InventoryError as exc:
        return [], [f"endpoints not checked: {exc}"]
    for name, read in inventory.backends.items():
        if read.endpoints is None:
            notes.append(f"backend {name!r} not inspected: {read.reason}")
    for e in inventory.endpoints:
        if e.status == "unreachable":
            warnings.append(
                f"unreachable: {e.method} {e.path} is sent by route {e.route!r} to "
                f"{e.backend!r}{_canary_text(e.canary)}, which does not implement it "
                f"(implemented by: {', '.join(e.implemented_by)}); it would answer 404 (or 405)"
            )
    try:
        settings = Settings.load()
    except ValueError:
        settings = Settings()
    prefix, metrics = settings.admin_prefix, settings.metrics_path
    for e in inventory.endpoints:
        probe = probe_path(e.path)
        owner = None
        if probe == metrics and e.method != WEBSOCKET:  # every HTTP method is answered
            owner = f"the metrics path ({metrics})"
        elif probe.startswith(prefix) or probe == prefix.rstrip("/"):
            owner = f"the admin API ({prefix})"
        if owner is not None:
            warnings.append(
                f"hidden: {e.method} {e.path} of {', '.join(e.implemented_by)} is answered "
                f"by the gateway itself, {owner}; move the endpoint or the gateway's path"
            )
    return warnings, notes


def _canary_text(canary: dict[str, Any] | None) -> str:
    return "" if canary is None else f" (or its canary {canary['backend']!r})"


class FlipAll:
    """`flip --all BACKEND` as one edit of the route file, leaving the routes that claim
    an endpoint BACKEND does not implement. They are judged on the very text the edit
    changes (the source holds its lock meanwhile), so a route added in between is judged
    too. After the edit: `left` (route id -> why) and `unknown` (why nothing could be
    judged: BACKEND's endpoints are unknown)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        self.left: dict[str, str] = {}
        self.unknown: str | None = None

    def __call__(self, data: bytes, source: str) -> EditResult:
        self.left, self.unknown = self._leaves(data, source)
        return flip(None, self.backend, keep=self.left)(data, source)

    def _leaves(self, data: bytes, source: str) -> tuple[dict[str, str], str | None]:
        backend = self.backend
        try:
            config = parse_config(data, source, resolve_imports=False)
            inventory = inventory_of(config, backend)
        except (ConfigError, InventoryError):
            return {}, None  # the flip itself reports an invalid file or unknown backend
        read = inventory.backends[backend]
        if read.endpoints is None:
            return {}, f"cannot tell which routes {backend!r} implements ({read.reason})"
        candidates = [r.id for r in config.routes if r.backend != backend]
        leaves = {}
        for route_id, gaps in unserved_claims(inventory, backend, candidates).items():
            shown = ", ".join(f"{e.method} {e.path}" for e in gaps)
            leaves[route_id] = f"{backend!r} does not implement {shown}"
        return leaves, None
