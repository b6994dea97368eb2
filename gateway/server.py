"""`gateway serve`: run the gateway under uvicorn, with one or several workers.

The route file is validated before anything binds a port, so an invalid file
fails fast with the same report as `gateway check` and exit code 1; so does a
gateway whose backends fail to start (with any number of workers). Settings
(`gateway.settings`) reach every worker through `GATEWAY_*` environment
variables, and each worker builds its own `Gateway` from them (uvicorn's
factory mode).

Every serve has a private state directory its workers share (shadow results,
the event log when there is no store, rollbacks the source could not take, who
this instance is), removed when it stops. With several workers, the supervisor
forwards SIGHUP to each worker (which reloads its table in place) instead of
restarting them, and prometheus-client multiprocess mode is pointed at the
state directory.

With `--store`, the table lives in Redis: `--config` is checked only when the
file exists (it seeds an empty store, or serves while Redis does not answer).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from gateway.routefile.loading import load_config
from gateway.routefile.model import ConfigError
from gateway.settings import LogFormat, Settings


class QueryRedacted(logging.Filter):
    """Drops the query string from uvicorn's access lines: a query carries secrets
    (tokens, signed URLs, e-mail addresses), and no log line may hold a request's.

    uvicorn's access record has the arguments (client, method, path?query, version,
    status); the path stays, the query becomes `?...`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path, mark, _ = args[2].partition("?")
            if mark:
                record.args = (args[0], args[1], path + "?...", *args[3:])
        return True


def log_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["query_redacted"] = {"()": QueryRedacted}
    config["handlers"]["access"]["filters"] = ["query_redacted"]
    # The gateway's own events carry a timestamp: operators correlate them with
    # flips, deploys and dashboard annotations.
    config["formatters"]["gateway"] = {
        "()": "uvicorn.logging.DefaultFormatter",
        "fmt": "%(asctime)s.%(msecs)03d %(levelprefix)s %(message)s",
        "datefmt": "%Y-%m-%dT%H:%M:%S",
    }
    config["handlers"]["gateway"] = {
        "formatter": "gateway",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["gateway"] = {
        "handlers": ["gateway"],
        "level": level.upper(),
        "propagate": False,
    }
    if log_format == "json":
        for name in config["formatters"]:
            config["formatters"][name] = {"()": "gateway.jsonlog.JsonFormatter"}
    return config


def app_dir(settings: Settings) -> str:
    """Where the table's apps are imported from: --app-dir, else the directory of
    --config (when it exists), else the working directory."""
    if settings.app_dir:
        return str(Path(settings.app_dir).absolute())
    config = Path(settings.config)
    return str(config.absolute().parent if config.is_file() else Path.cwd())


def serve(settings: Settings) -> int:
    settings = dataclasses.replace(
        settings, config=str(Path(settings.config).absolute()), app_dir=app_dir(settings)
    )
    sys.path.insert(0, settings.app_dir or "")
    if settings.store is not None and importlib.util.find_spec("redis") is None:
        print(
            "gateway serve: --store needs redis-py: pip install 'strangler-gateway[redis]'",
            file=sys.stderr,
        )
        return 1
    if settings.store is None or Path(settings.config).exists():
        try:
            load_config(settings.config, reserved=settings.reserved)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            print(f"{settings.config}: invalid; the gateway did not start", file=sys.stderr)
            return 1

    import uvicorn

    state_dir = Path(tempfile.mkdtemp(prefix="gateway-state-"))
    settings = dataclasses.replace(settings, state_dir=str(state_dir))
    instance = {
        "id": uuid.uuid4().hex[:12],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "since": round(time.time(), 3),
    }
    (state_dir / "instance.json").write_text(json.dumps(instance))
    if settings.workers > 1 and settings.metrics:
        from gateway.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir(state_dir)
    os.environ.update(settings.to_env())
    config = uvicorn.Config(
        "gateway.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings.log_level, settings.log_format),
        log_level=settings.log_level,
        access_log=settings.access_log,
        lifespan="on",
        timeout_keep_alive=settings.timeout_keep_alive,
        # The drain's last step (gateway/drain.py): what is still open then is cancelled.
        # Typed int, used as asyncio.wait_for's timeout: a fraction of a second works.
        timeout_graceful_shutdown=settings.graceful_timeout,  # type: ignore[arg-type]
        # uvicorn's protocol with the head limits it lacks (gateway.protocol); the
        # concurrency limit is the app's own (gateway.concurrency).
        http="gateway.protocol:GatewayProtocol",
        interface="asgi3",  # said, not guessed: Gateway.__call__ returns its coroutine
        proxy_headers=False,
        server_header=False,
    )
    try:
        try:
            sockets = _bind(config, settings)
        except SystemExit:  # uvicorn exits with STARTUP_FAILURE when it cannot bind
            return 1
        if settings.workers == 1:
            server = uvicorn.Server(config)
            # Once stopped, uvicorn raises the stopping signal again for the handler it
            # found: make that a no-op, so that a drained gateway exits 0 rather than
            # being killed by its own SIGTERM (143, a failure to a service manager).
            stopped = signal.signal(signal.SIGTERM, lambda sig, frame: None)
            try:
                server.run(sockets)
            except SystemExit as exc:  # uvicorn exits with STARTUP_FAILURE (3)
                return 0 if exc.code in (0, None) else 1
            finally:
                signal.signal(signal.SIGTERM, stopped)
            return 0 if server.started else 1
        return _supervise(config, sockets)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def _bind(config: Any, settings: Settings) -> list[socket.socket]:
    """The listening sockets: traffic, and the admin listener when it has its own.

    One app serves both; each request's `scope["server"]` says which socket it came in
    on, and the gateway serves only the admin API and metrics on the admin one."""
    sockets = [_bound(config, "traffic")]
    if settings.admin_address is not None:
        host, port = settings.admin_address
        admin = copy.copy(config)
        admin.host, admin.port = host, port
        sockets.append(_bound(admin, "admin"))
    return sockets


def _bound(config: Any, role: str) -> socket.socket:
    """uvicorn logs the OS's reason ("Address already in use") and exits; say which
    address, which with --admin-listen may be either of two."""
    try:
        sock: socket.socket = config.bind_socket()
    except SystemExit:
        print(
            f"gateway serve: cannot listen on {config.host}:{config.port} ({role} port); "
            "is another server running there?",
            file=sys.stderr,
        )
        raise
    return sock


def _supervise(config: Any, sockets: list[socket.socket]) -> int:
    """Run several workers under uvicorn's supervisor, made to reload them on SIGHUP.

    Uses uvicorn internals: `uvicorn.supervisors.Multiprocess` (its `processes`
    and the `handle_hup` hook it calls on SIGHUP, which restarts every worker)
    and `STARTUP_FAILURE`, the exit code of a worker that could not start. No
    public API offers either; pyproject.toml bounds uvicorn's version so that
    a release that moves them fails the install, not production.
    """
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            # Reload the table in every worker, in place, instead of restarting them.
            for process in self.processes:
                if process.pid is not None:
                    os.kill(process.pid, signal.SIGHUP)

    supervisor = Supervisor(config, sockets=sockets)
    supervisor.run()
    # A worker that could not start stops the supervisor (uvicorn's rule): that
    # is a failure to report, or a service manager would take it for a clean exit.
    failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
    return 1 if failed else 0
