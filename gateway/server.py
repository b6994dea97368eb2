"""`gateway serve`: run the gateway under uvicorn, with one or several workers.

The route file is validated before anything binds a port, so an invalid file
fails fast with the same report as `gateway check` and exit code 1; so does a
gateway whose backends fail to start (with any number of workers). Settings
reach every worker through `GATEWAY_*` environment variables, and each worker
builds its own `Gateway` from them (uvicorn's factory mode).

With several workers, the supervisor forwards SIGHUP to each worker (which
reloads its table in place) instead of restarting them, and prometheus-client
multiprocess mode is pointed at a private, freshly emptied directory.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from gateway.routefile.loading import load_config
from gateway.routefile.model import ConfigError
from gateway.settings import Settings

_DEFAULTS = Settings()


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--config",
        default=env("GATEWAY_CONFIG", "routes.yaml"),
        help="route file (default: routes.yaml, or $GATEWAY_CONFIG)",
    )
    parser.add_argument(
        "--host",
        default=env("HOST", "127.0.0.1"),
        help="address to bind (default: 127.0.0.1, or $HOST)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("PORT", "8000")),
        help="port to bind (default: 8000, or $PORT)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument(
        "--wsgi-threads",
        type=int,
        default=_DEFAULTS.wsgi_threads,
        help="threads shared by in-process WSGI backends, per worker",
    )
    parser.add_argument(
        "--admin-prefix",
        default=_DEFAULTS.admin_prefix,
        help="reserved path prefix of the admin API (default: /-/)",
    )
    parser.add_argument("--metrics-path", default=_DEFAULTS.metrics_path)
    parser.add_argument("--no-metrics", action="store_true", help="serve no metrics at all")
    parser.add_argument(
        "--no-route-headers",
        action="store_true",
        help="do not add X-Gateway-Route / X-Gateway-Backend to responses",
    )
    parser.add_argument(
        "--watch-interval",
        type=float,
        default=_DEFAULTS.watch_interval,
        help="seconds between checks of the route file (default: 0.25)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument(
        "--timeout-keep-alive",
        type=float,
        default=75.0,
        help="seconds an idle client connection stays open (default: 75). Keep it above the "
        "idle timeout of any load balancer in front, or a request sent as the gateway closes "
        "an idle connection fails (uvicorn's own default is 5)",
    )


def log_config(level: str) -> dict[str, Any]:
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
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
    return config


def serve(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{args.config}: invalid; the gateway did not start", file=sys.stderr)
        return 1
    if args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = Settings(
            config=str(Path(args.config).absolute()),
            admin_prefix=args.admin_prefix,
            metrics_path=args.metrics_path,
            metrics=not args.no_metrics,
            route_headers=not args.no_route_headers,
            wsgi_threads=args.wsgi_threads,
            watch_interval=args.watch_interval,
        )
    except ValueError as exc:
        print(f"gateway serve: {exc}", file=sys.stderr)
        return 2
    os.environ.update(settings.to_env())

    import uvicorn

    state_dir: Path | None = None
    if args.workers > 1:
        # One private directory the workers share: metric files, shadow results.
        state_dir = Path(tempfile.mkdtemp(prefix="gateway-state-"))
        os.environ["GATEWAY_STATE_DIR"] = str(state_dir)
        if settings.metrics:
            from gateway.metrics import prepare_multiprocess_dir

            prepare_multiprocess_dir(state_dir)
    config = uvicorn.Config(
        "gateway.app:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config(args.log_level),
        log_level=args.log_level,
        access_log=not args.no_access_log,
        lifespan="on",
        timeout_keep_alive=args.timeout_keep_alive,
        proxy_headers=False,
        server_header=False,
    )
    try:
        if args.workers == 1:
            server = uvicorn.Server(config)
            try:
                server.run()
            except SystemExit as exc:  # uvicorn exits with STARTUP_FAILURE (3)
                return 0 if exc.code in (0, None) else 1
            return 0 if server.started else 1
        from uvicorn.config import STARTUP_FAILURE
        from uvicorn.supervisors import Multiprocess

        class Supervisor(Multiprocess):
            def handle_hup(self) -> None:
                # Reload the table in every worker, in place, instead of restarting them.
                for process in self.processes:
                    if process.pid is not None:
                        os.kill(process.pid, signal.SIGHUP)

        sock = config.bind_socket()
        supervisor = Supervisor(config, sockets=[sock])
        supervisor.run()
        # A worker that could not start stops the supervisor (uvicorn's rule): that
        # is a failure to report, or a service manager would take it for a clean exit.
        failed = any(p.exitcode == STARTUP_FAILURE for p in supervisor.processes)
        return 1 if failed else 0
    finally:
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
