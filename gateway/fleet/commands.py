"""The store's commands: `gateway push | pull | history | revert | fleet`.

    gateway push FILE --store URL [--if-revision N] [--no-import-check]
    gateway pull --store URL
    gateway history --store URL
    gateway revert REV --store URL
    gateway fleet --store URL [--wait S] [--json]

Every write is a compare-and-set on the store's revision: `push --if-revision N`
refuses when someone else wrote first; without it, a push is made on whatever
revision is current. Exit codes as for the other commands: 0 done, 1 refused,
invalid or unreachable, 2 usage; one plain line per failure, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.fleet.events import StoreEvents
from gateway.fleet.instances import behind, fleet_view, iso
from gateway.fleet.source import RedisSource
from gateway.fleet.store import Store, StoreAddress, StoreError
from gateway.routefile.changes import changed_routes
from gateway.routefile.editing import Edit, EditResult
from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError, GatewayConfig

Command = Callable[[argparse.Namespace, Store], Awaitable[int]]


def who() -> str:
    """Who a CLI edit is recorded as: `cli user@host`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"cli {user}@{socket.gethostname()}"


def _changed(old: bytes, new: GatewayConfig) -> list[str]:
    """The routes `new` changes from the text `old` (all of them when `old` is invalid)."""
    try:
        return changed_routes(parse_config(old, "old", resolve_imports=False), new)
    except ConfigError:
        return changed_routes(None, new)


def _problems(exc: ConfigError, source: str) -> int:
    print(exc.report(source, "pushed"), file=sys.stderr)
    return 1


async def _write(
    store: Store,
    text: bytes,
    config: GatewayConfig,
    kind: str,
    expected: int | None,
    facts: dict[str, Any],
) -> tuple[int, int] | None:
    """Compare-and-set `text`; (previous, new) revision, or None when `expected` was stale."""
    while True:
        current = await store.read()
        if expected is not None and current.revision != expected:
            return None
        changed = _changed(current.text, config)
        written = await store.write(current.revision, text, who(), kind, changed)
        if written.ok:
            await StoreEvents(store).append(
                kind, who(), revision=written.revision, changed=changed, **facts
            )
            return current.revision, written.revision
        if expected is not None:
            return None


async def cmd_push(args: argparse.Namespace, store: Store) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        print(f"{path}: cannot read the file: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        config = parse_config(data, str(path), resolve_imports=not args.no_import_check)
    except ConfigError as exc:
        return _problems(exc, str(path))
    done = await _write(store, data, config, "push", args.if_revision, {"file": path.name})
    if done is None:
        now = await store.revision()
        print(
            f"{store.address.shown}: the store is at revision {now}, not {args.if_revision}; "
            "nothing was pushed (pull, merge, and push again)",
            file=sys.stderr,
        )
        return 1
    print(f"{path}: pushed, revision {done[0]} -> {done[1]}")
    return 0


async def cmd_pull(args: argparse.Namespace, store: Store) -> int:
    current = await store.read()
    if current.revision == 0:
        print(f"{store.address.shown}: the store holds no route table yet", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(current.text)
    sys.stdout.flush()
    print(f"# revision {current.revision}", file=sys.stderr)
    return 0


async def cmd_history(args: argparse.Namespace, store: Store) -> int:
    entries = await store.history()
    if not entries:
        print(f"{store.address.shown}: no revisions yet", file=sys.stderr)
        return 1
    for e in entries:
        changed = ",".join(e["changed"]) or "-"
        print(f"{e['revision']:>6}  {iso(e['at'])}  {e['kind']:<8} {e['by']}  routes: {changed}")
    return 0


async def cmd_revert(args: argparse.Namespace, store: Store) -> int:
    entry = next((e for e in await store.history() if e["revision"] == args.revision), None)
    if entry is None:
        print(
            f"{store.address.shown}: revision {args.revision} is not among the kept ones "
            "(gateway history lists them)",
            file=sys.stderr,
        )
        return 1
    text = entry["text"].encode()
    try:
        config = parse_config(
            text, f"revision {args.revision}", resolve_imports=not args.no_import_check
        )
    except ConfigError as exc:
        return _problems(exc, f"revision {args.revision}")
    done = await _write(store, text, config, "revert", None, {"to_text_of": args.revision})
    if done is None:  # unreachable: with no expected revision the write retries until it lands
        return 1
    print(f"reverted to the text of revision {args.revision}: revision {done[0]} -> {done[1]}")
    return 0


async def cmd_fleet(args: argparse.Namespace, store: Store) -> int:
    deadline = time.monotonic() + max(0.0, args.wait or 0.0)
    while True:
        view = fleet_view(await store.revision(), await store.heartbeats())
        late = behind(view)
        if (view["instances"] and not late) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print(f"store revision {view['revision']}, {len(view['instances'])} instance(s)")
        for i in view["instances"]:
            mark = "ok" if i["revision"] == view["revision"] else "BEHIND"
            workers = " ".join(f"{w['pid']}@{w['revision']}" for w in i["workers"])
            error = f"  last error: {i['last_error']}" if i["last_error"] else ""
            print(
                f"{mark:<6} {i['id']}  {i['host']} pid {i['pid']}  r{i['revision']}  "
                f"workers {workers}{error}"
            )
    if not view["instances"]:
        print(
            f"{store.address.shown}: no instance serves from this store "
            f"(key prefix {store.address.key!r}; is --store-key right?)",
            file=sys.stderr,
        )
        return 1
    if late:
        print(f"{len(late)} instance(s) not on revision {view['revision']}", file=sys.stderr)
        return 1
    return 0


def store_edit(address: StoreAddress, edit: Edit, kind: str) -> EditResult:
    """`gateway flip | canary --store`: the edit by compare-and-set, recorded as an event.
    Raises what the edit raises, or `StoreError`."""

    async def main() -> EditResult:
        source = RedisSource(address)
        try:
            result = await source.edit(edit, who(), kind)
            if result.changed:
                await StoreEvents(source.store).append(
                    kind, who(), revision=source.seen, routes=result.changed
                )
            return result
        finally:
            await source.close()

    return asyncio.run(main())


def run(command: Command) -> Callable[[argparse.Namespace], int]:
    """An argparse handler: open the store, run `command`, report a failure in one line."""

    def handler(args: argparse.Namespace) -> int:
        try:
            address = StoreAddress(args.store, args.store_key)
        except ValueError as exc:
            print(f"gateway {args.command}: {exc}", file=sys.stderr)
            return 2

        async def main() -> int:
            store = Store(address)
            try:
                return await command(args, store)
            finally:
                await store.close()

        try:
            return asyncio.run(main())
        except StoreError as exc:
            print(f"gateway {args.command}: {exc}", file=sys.stderr)
            return 1

    return handler


def add_store_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    env = os.environ.get
    parser.add_argument(
        "--store",
        default=env("GATEWAY_STORE"),
        required=required and not env("GATEWAY_STORE"),
        help="redis://[:password@]host:6379/0 (rediss:// for TLS), or $GATEWAY_STORE",
    )
    parser.add_argument(
        "--store-key",
        default=env("GATEWAY_STORE_KEY", "gateway"),
        help="prefix of the store's keys (default: gateway, or $GATEWAY_STORE_KEY)",
    )


def add_commands(sub: Any) -> None:
    """Add the store's subcommands to the `gateway` parser's subparsers."""
    push = sub.add_parser("push", help="validate a route file and make it the store's table")
    push.add_argument("file", metavar="FILE")
    push.add_argument("--if-revision", type=int, metavar="N", help="only if the store is at N")
    push.add_argument("--no-import-check", action="store_true", help="do not import the apps")
    add_store_arguments(push)
    push.set_defaults(func=run(cmd_push))

    pull = sub.add_parser("pull", help="print the store's live route table")
    add_store_arguments(pull)
    pull.set_defaults(func=run(cmd_pull))

    history = sub.add_parser("history", help="list the store's last 50 revisions")
    add_store_arguments(history)
    history.set_defaults(func=run(cmd_history))

    revert = sub.add_parser("revert", help="make the text of an older revision current again")
    revert.add_argument("revision", type=int, metavar="REV")
    revert.add_argument("--no-import-check", action="store_true", help="do not import the apps")
    add_store_arguments(revert)
    revert.set_defaults(func=run(cmd_revert))

    fleet = sub.add_parser("fleet", help="which revision every instance serves")
    fleet.add_argument("--wait", type=float, metavar="S", help="wait up to S seconds for all")
    fleet.add_argument("--json", action="store_true", help="print JSON (as GET /-/fleet)")
    add_store_arguments(fleet)
    fleet.set_defaults(func=run(cmd_fleet))
