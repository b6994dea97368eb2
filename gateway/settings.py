"""Boot-time settings: how the gateway process serves, as opposed to what it routes.

The route table (`routes.yaml`) is dynamic and reloads while serving. These
settings are static: they are read once when a worker starts, from `gateway
serve` flags, which pass them to worker processes through `GATEWAY_*`
environment variables (the one channel that reaches every worker).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {value!r}")


@dataclass(frozen=True, slots=True)
class Settings:
    config: str = "routes.yaml"
    admin_prefix: str = "/-/"
    metrics_path: str = "/metrics"
    metrics: bool = True
    route_headers: bool = True  # X-Gateway-Route / X-Gateway-Backend on every response
    wsgi_threads: int = 32  # measured best for the demo (docs/benchmarks.md, row 2)
    watch_interval: float = 0.25
    admin_token: str | None = None
    state_dir: str | None = None  # shared by the workers of one `gateway serve` (private)

    def __post_init__(self) -> None:
        prefix = self.admin_prefix
        if not prefix.startswith("/") or not prefix.endswith("/") or len(prefix) < 3:
            raise ValueError(f"admin prefix must look like '/-/' (got {prefix!r})")
        if not self.metrics_path.startswith("/"):
            raise ValueError(f"metrics path must start with '/' (got {self.metrics_path!r})")
        if self.wsgi_threads < 1:
            raise ValueError("wsgi threads must be at least 1")
        if not 0.01 <= self.watch_interval <= 5:
            raise ValueError("watch interval must be between 0.01 and 5 seconds")

    def to_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or f.name == "admin_token":
                continue  # the token travels as GATEWAY_ADMIN_TOKEN, which the operator set
            text = str(int(value)) if isinstance(value, bool) else str(value)
            env["GATEWAY_" + f.name.upper()] = text
        return env

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get("GATEWAY_" + f.name.upper())
            if raw is None:
                continue
            if f.type == "bool":
                values[f.name] = _flag(raw)
            elif f.type == "int":
                values[f.name] = int(raw)
            elif f.type == "float":
                values[f.name] = float(raw)
            else:
                values[f.name] = raw or None if f.type == "str | None" else raw
        return cls(**values)  # type: ignore[arg-type]
