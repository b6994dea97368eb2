"""Everything bench/ takes from the gateway's own code, in one place.

The benchmark measures the gateway from outside (`gateway serve` processes);
these few names are the exceptions. When a refactor moves one, this is the
only file to update.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from gateway.app import create_app
from gateway.heap import REFREEZE_DELAY
from gateway.matching import Router, parse_template
from gateway.settings import Settings


def serve_command() -> list[str]:
    """`gateway serve`, from the console script installed next to this Python."""
    script = Path(sys.executable).with_name("gateway")
    found = str(script) if script.exists() else shutil.which("gateway")
    return [found, "serve"] if found else [sys.executable, "-m", "gateway.cli", "serve"]


__all__ = ["REFREEZE_DELAY", "Router", "Settings", "create_app", "parse_template", "serve_command"]
