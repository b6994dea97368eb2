"""What `pip install .` brings: the gateway package alone, with what it imports and no
more (the user's apps bring their own Flask and FastAPI, at their own versions)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata

from tests.harness import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Imported only when present, to read what a user's app is: FastAPI's route contexts
# (a FastAPI app's routes), Flask (whether a shared-login backend is a Flask app).
OPTIONAL_IMPORTS = {"fastapi", "flask"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None
    return match.group(0).lower().replace("_", "-")


def _imported_distributions() -> set[str]:
    """The distributions whose modules gateway/ imports (the standard library aside)."""
    owners = metadata.packages_distributions()
    found: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top == "gateway" or top in sys.stdlib_module_names or top in OPTIONAL_IMPORTS:
                    continue
                found.update(_name(d) for d in owners[top])
    return found


def test_the_distribution_is_the_gateway_package_alone() -> None:
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["gateway*"]
    assert set(PYPROJECT["tool"]["setuptools"]["package-data"]) == {"gateway"}


def test_runtime_dependencies_are_what_the_gateway_imports() -> None:
    # The Redis store's client is an extra: only `serve --store` imports it.
    declared = {_name(r) for r in PYPROJECT["project"]["dependencies"]} | {"redis"}
    assert PYPROJECT["project"]["optional-dependencies"]["redis"] == ["redis>=5.0"]
    assert not declared & {"flask", "fastapi", "httpx"}
    imported = _imported_distributions()
    # Each declared dependency is imported; each import is declared or comes with one
    # (multidict and yarl are aiohttp's own types, part of its API).
    assert declared == imported - {"multidict", "yarl"}
    brought = {_name(r) for r in metadata.requires("aiohttp") or () if "extra ==" not in r}
    assert {"multidict", "yarl"} <= brought
