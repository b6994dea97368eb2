"""Where in-process apps are imported from, for every command but `serve` (which
does the same for itself and its workers, `gateway.server.app_dir`): `--app-dir`,
else the route file's directory, first on `sys.path`.

So a team runs `gateway check` (or `flip`, any command) next to its own code
without setting `PYTHONPATH`, and imports the same modules `serve` will.
"""

from __future__ import annotations

import sys
from pathlib import Path


def use_app_dirs(config: str | None, app_dir: str | None = None) -> None:
    """Put `app_dir`, else the directory of the route file `config`, first on sys.path."""
    chosen = app_dir or (config and Path(config).parent)
    if not chosen:
        return
    entry = str(Path(chosen).resolve())
    if entry in sys.path:
        sys.path.remove(entry)
    sys.path.insert(0, entry)
