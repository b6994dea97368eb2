"""Boot-time settings: how the gateway process serves, as opposed to what it routes.

The route table (`routes.yaml`) is dynamic and reloads while serving. These
settings are static: read once when a process starts. Each field below is the
one declaration of a setting: `gateway serve` derives its command-line flag
(`wsgi_threads` -> `--wsgi-threads`; a boolean `--x`/`--no-x`) and its
environment variable (`GATEWAY_WSGI_THREADS`) from the field's name, type,
default and help. A value comes from the default, then the environment, then
the command line. `gateway serve` hands the result to its worker processes
through the same variables (the one channel that reaches every worker).
"""

from __future__ import annotations

import argparse
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal

from gateway.paths import ReservedPaths
from gateway.proxies import TrustedProxies

ENV_PREFIX = "GATEWAY_"
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
LogFormat = Literal["text", "json"]


def _doc(help: str, *, flag: bool = True) -> dict[str, Any]:
    """A field's `--help` line, and whether it has a flag (a secret or an internal
    setting is an environment variable only)."""
    return {"help": help, "flag": flag}


@dataclass(frozen=True, slots=True)
class Settings:
    config: str = field(default="routes.yaml", metadata=_doc("route file"))
    host: str = field(default="127.0.0.1", metadata=_doc("address to bind"))
    port: int = field(default=8000, metadata=_doc("port to bind"))
    workers: int = field(default=1, metadata=_doc("worker processes"))
    wsgi_threads: int = field(
        default=32,  # measured best for the demo (docs/benchmarks.md, row 2)
        metadata=_doc("threads of each in-process WSGI backend without threads:, per worker"),
    )
    wsgi_buffer: int = field(
        default=1024 * 1024,
        metadata=_doc(
            "bytes of request body read before a WSGI thread is taken (a larger body "
            "streams to the thread)"
        ),
    )
    wsgi_wait: float = field(
        default=5.0,
        metadata=_doc("seconds a request waits for a free WSGI thread before a 503"),
    )
    # Loopback in both families, as gunicorn's default: a proxy on the same host may
    # connect from either (uvicorn's default names 127.0.0.1 alone).
    forwarded_allow_ips: str = field(
        default="127.0.0.1,::1",
        metadata=_doc(
            "peers trusted to say who the client is: from them X-Forwarded-For/-Proto "
            "(else Forwarded) set the client address and scheme; from others those headers "
            "are removed. '*' (all), or IP addresses and networks, comma-separated"
        ),
    )
    admin_prefix: str = field(default="/-/", metadata=_doc("reserved path prefix of the admin API"))
    admin_listen: str | None = field(
        default=None,
        metadata=_doc(
            "HOST:PORT of a listener of its own for the admin API and metrics; "
            "then none of it is served on the traffic port"
        ),
    )
    # Under the reserved prefix: many apps serve /metrics themselves (prometheus_flask_exporter).
    metrics_path: str = field(default="/-/metrics", metadata=_doc("path of the Prometheus metrics"))
    metrics: bool = field(default=True, metadata=_doc("serve Prometheus metrics"))
    route_headers: bool = field(
        default=True, metadata=_doc("add X-Gateway-Route / X-Gateway-Backend to responses")
    )
    watch_interval: float = field(
        default=0.25, metadata=_doc("seconds between checks of the route file")
    )
    timeout_keep_alive: int = field(
        default=75,
        metadata=_doc(
            "seconds an idle client connection stays open. Keep it above the idle timeout of "
            "any load balancer in front, or a request sent as the gateway closes an idle "
            "connection fails (uvicorn's own default is 5)"
        ),
    )
    max_head: int = field(
        default=64 * 1024,
        metadata=_doc("bytes of request line and headers; past it the client gets 431"),
    )
    head_timeout: float = field(
        default=10.0,
        metadata=_doc("seconds a connection may take to send a request's head, then 408"),
    )
    limit_concurrency: int = field(
        default=1000,
        metadata=_doc(
            "requests in flight per worker; past it a JSON 503 (never for /-/healthz and "
            "/-/readyz). 0: no limit"
        ),
    )
    max_body: int = field(
        default=100 * 1024 * 1024,
        metadata=_doc(
            "bytes of request body a route takes unless it or its backend says (max_body:); "
            "past it the client gets 413. 0: no limit"
        ),
    )
    body_timeout: float = field(
        default=30.0,
        metadata=_doc("seconds a request body may stop coming before a 408. 0: no limit"),
    )
    log_level: LogLevel = field(default="info", metadata=_doc("log level"))
    log_format: LogFormat = field(
        default="text", metadata=_doc("json: one JSON object per line, for log shippers")
    )
    access_log: bool = field(default=True, metadata=_doc("log every request"))
    # Stopping (gateway/drain.py): on SIGTERM keep serving, not ready, for
    # shutdown_delay seconds so that load balancers stop sending first; then let
    # in-flight requests finish for up to graceful_timeout.
    shutdown_delay: float = field(
        default=0.0,
        metadata=_doc(
            "on SIGTERM, seconds to go on serving while /-/readyz answers 503, so that load "
            "balancers stop sending first"
        ),
    )
    graceful_timeout: float = field(
        default=30.0,
        metadata=_doc("then, seconds in-flight requests have to finish before open streams close"),
    )
    admin_token: str | None = field(
        default=None,
        metadata=_doc("bearer token that admin changes need (else loopback only)", flag=False),
    )
    store: str | None = field(
        default=None,
        metadata=_doc(
            "keep the route table in Redis, shared by every instance: "
            "redis://[:password@]host:6379/0 (rediss:// for TLS); --config then only seeds "
            "an empty store, or serves while Redis does not answer at start"
        ),
    )
    store_key: str = field(default="gateway", metadata=_doc("prefix of the store's keys"))
    app_dir: str | None = field(
        default=None,
        metadata=_doc(
            "directory the apps of the table are imported from (default: the directory of "
            "--config, else the working directory)"
        ),
    )
    state_dir: str | None = field(
        default=None,
        # Private: `gateway serve` sets it for its workers.
        metadata=_doc("the directory the workers of one serve share", flag=False),
    )

    def __post_init__(self) -> None:
        if self.admin_token is not None:
            # A token read from a file (a Kubernetes Secret) often ends in a newline that no
            # client sends; an all-blank one is no token (loopback only), as an empty one.
            object.__setattr__(self, "admin_token", self.admin_token.strip() or None)
        prefix = self.admin_prefix
        if not prefix.startswith("/") or not prefix.endswith("/") or len(prefix) < 3:
            raise ValueError(f"admin prefix must look like '/-/' (got {prefix!r})")
        if not self.metrics_path.startswith("/"):
            raise ValueError(f"metrics path must start with '/' (got {self.metrics_path!r})")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be from 0 to 65535 (got {self.port})")
        if self.workers < 1:
            raise ValueError("workers must be at least 1")
        if self.wsgi_threads < 1:
            raise ValueError("wsgi threads must be at least 1")
        if self.wsgi_buffer < 0:
            raise ValueError("wsgi buffer must be a number of bytes")
        if not 0 < self.wsgi_wait <= 3600:
            raise ValueError("wsgi wait must be above 0 and at most 3600 seconds")
        if not 0.01 <= self.watch_interval <= 5:
            raise ValueError("watch interval must be between 0.01 and 5 seconds")
        if self.max_head < 1024:
            raise ValueError("max head must be at least 1024 bytes")
        if not 0 < self.head_timeout <= 3600:
            raise ValueError("head timeout must be above 0 and at most 3600 seconds")
        if self.limit_concurrency < 0:
            raise ValueError("limit concurrency must be 0 (no limit) or a number of requests")
        if self.max_body < 0:
            raise ValueError("max body must be 0 (no limit) or a number of bytes")
        if self.body_timeout < 0:
            raise ValueError("body timeout must be 0 (no limit) or a number of seconds")
        if self.timeout_keep_alive < 1:
            raise ValueError("timeout keep-alive must be at least 1 second")
        for name in ("shutdown_delay", "graceful_timeout"):
            if not 0 <= getattr(self, name) <= 3600:  # also refuses nan and inf
                raise ValueError(f"{name.replace('_', ' ')} must be between 0 and 3600 seconds")
        TrustedProxies(self.forwarded_allow_ips)  # raises ValueError naming the entry
        if self.store is not None:
            from gateway.fleet.store import StoreAddress

            StoreAddress(self.store, self.store_key)  # raises ValueError, password hidden
        if self.admin_listen is not None:
            port = _address(self.admin_listen)[1]
            if port == self.port:
                raise ValueError(f"admin listen port {port} is the traffic port")

    @property
    def admin_address(self) -> tuple[str, int] | None:
        """(host, port) of the admin listener, when it has one of its own."""
        return _address(self.admin_listen) if self.admin_listen is not None else None

    @property
    def reserved(self) -> ReservedPaths:
        """The paths the gateway answers itself, which no route may claim."""
        return ReservedPaths(self.admin_prefix, self.metrics_path if self.metrics else None)

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **given: Any) -> Settings:
        """Defaults, then `GATEWAY_*` variables, then `given` (the command line).

        Raises `ValueError` with one line naming the variable or flag of a value it
        cannot read or that is out of range."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        origin: dict[str, str] = {}  # field name -> where its value came from
        for f in fields(cls):
            raw = env.get(env_name(f))
            if raw is not None:
                values[f.name] = _reader(f)(raw, env_name(f))
                # A secret's value never goes into a message (the store URL's password).
                origin[f.name] = env_name(f) if f.name in _SECRET else f"{env_name(f)}={raw!r}"
        values.update(given)
        for name, value in given.items():
            flag = "--" + name.replace("_", "-")
            shown = f"{value:g}" if isinstance(value, float) else repr(value)
            origin[name] = flag if name in _SECRET else f"{flag} {shown}"
        try:
            return cls(**values)
        except ValueError as exc:
            source = origin.get(_subject(str(exc)) or "")
            if source is None:
                raise
            raise ValueError(f"{source}: {exc}") from None

    def to_env(self) -> dict[str, str]:
        """The variables that give a worker process these settings."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "admin_token":
                continue  # the token travels as GATEWAY_ADMIN_TOKEN, which the operator set
            env[env_name(f)] = str(int(value)) if isinstance(value, bool) else str(value)
        return env


def _address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as (host, port)."""
    host, colon, port = text.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"admin listen must be HOST:PORT with a port from 1 to 65535 (got {text!r})"
        )
    return host, int(port)


_SECRET = frozenset({"admin_token", "store"})  # settings whose values are never shown


def _subject(message: str) -> str | None:
    """The setting a check's message is about: each message starts with the setting's
    name in words ("workers must be...", "the store URL must..."); the longest wins."""
    text = message.lower().replace("-", " ").removeprefix("the ")
    named = [
        f.name
        for f in fields(Settings)
        if re.match(re.escape(f.name.replace("_", " ")) + r"[ :]", text)
    ]
    return max(named, key=len, default=None)


def env_name(f: Field[Any]) -> str:
    return ENV_PREFIX + f.name.upper()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting that has one; unset flags leave the environment's value."""
    for f in fields(Settings):
        if not f.metadata["flag"]:
            continue
        tp = _type(f)
        default = f.default if f.default is not MISSING else None
        shown = _show(default)
        help = f"{f.metadata['help']} (default: {shown}; ${env_name(f)})"
        flag = "--" + f.name.replace("_", "-")
        if tp is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help
            )
        elif typing.get_origin(tp) is Literal:
            parser.add_argument(
                flag, choices=typing.get_args(tp), default=argparse.SUPPRESS, help=help
            )
        else:
            if typing.get_origin(tp) is types.UnionType:  # `str | None`: the value is a str
                tp = next(a for a in typing.get_args(tp) if a is not type(None))
            parser.add_argument(flag, type=tp, default=argparse.SUPPRESS, help=help)


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line set (the flags `add_arguments` made)."""
    names = {f.name for f in fields(Settings)}
    return {k: v for k, v in vars(args).items() if k in names}


# --- reading a variable's text by the field's type ------------------------------

_TYPES = typing.get_type_hints(Settings)  # the annotations, as types (not strings)

_EXPECTED = {bool: "a boolean (1/0, true/false)", int: "an integer", float: "a number"}


def _optional(f: Field[Any]) -> bool:
    tp = _TYPES[f.name]
    return typing.get_origin(tp) is types.UnionType and type(None) in typing.get_args(tp)


def _type(f: Field[Any]) -> Any:
    """The field's type, without the `| None` of an optional one."""
    tp = _TYPES[f.name]
    if _optional(f):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    return tp


def _reader(f: Field[Any]) -> Callable[[str, str], Any]:
    tp = _type(f)
    optional = _optional(f)

    def read(raw: str, name: str) -> Any:
        if optional and not raw:
            return None
        try:
            if tp is bool:
                return _flag(raw)
            if typing.get_origin(tp) is Literal:
                if raw.strip().lower() not in typing.get_args(tp):
                    raise ValueError
                return raw.strip().lower()
            return tp(raw)
        except ValueError:
            raise ValueError(_bad_value(name, raw, tp)) from None

    return read


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


def _bad_value(name: str, raw: str, tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        expected = "one of " + ", ".join(typing.get_args(tp))
    else:
        expected = _EXPECTED.get(tp, "a value")
    message = f"{name}={raw!r}: expected {expected}"
    if raw.startswith("tcp://"):
        # Kubernetes gives every pod GATEWAY_PORT=tcp://IP:PORT (and more) for a
        # Service named `gateway`, in the very names these settings use.
        message += (
            "; Kubernetes sets this for a Service named 'gateway': "
            "set enableServiceLinks: false in the pod spec"
        )
    return message


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)
