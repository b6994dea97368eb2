"""Loading a route file: bytes in, a validated `GatewayConfig` out, or every problem.

`parse_config` decodes, composes the YAML node tree, runs the checker
(`gateway.routefile.checking`) and, unless told not to, checks that every
in-process backend imports and that every https backend's TLS files are
usable. Nothing here touches the running gateway: the control plane, the CLI
and the admin API only act on a config that came back whole.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path
from typing import Any

import yaml

from gateway import tls
from gateway.paths import ReservedPaths
from gateway.routefile.checking import Checker
from gateway.routefile.model import ConfigError, GatewayConfig, Position, Problem

_TOO_DEEP = "the file is nested too deeply to be a route table"


def load_config(
    path: str | Path, *, resolve_imports: bool = True, reserved: ReservedPaths | None = None
) -> GatewayConfig:
    """Read, parse and validate a config file; raise `ConfigError` listing every problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError.unreadable(str(path), exc) from None
    return parse_config(data, str(path), resolve_imports=resolve_imports, reserved=reserved)


def parse_config(
    data: bytes | str,
    source: str = "<string>",
    *,
    resolve_imports: bool = True,
    reserved: ReservedPaths | None = None,
) -> GatewayConfig:
    """Validate config text. `source` names the file in problem reports; `reserved`
    are the paths the gateway keeps (by default those of the default settings)."""
    raw = data.encode() if isinstance(data, str) else data
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [Problem(Position(source, 1, 1), f"the file is not UTF-8 text ({exc.reason})")]
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            [Problem(Position(source, line, col), f"invalid YAML: {what}; fix the syntax")]
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(Position(source, 1, 1), f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ConfigError([Problem(Position(source, 1, 1), _TOO_DEEP)]) from None
    checker = Checker(source, reserved)
    try:
        config = checker.config(root)
    except RecursionError:
        raise ConfigError([Problem(Position(source, 1, 1), _TOO_DEEP)]) from None
    if resolve_imports and config is not None:
        for spec in config.backends:
            if spec.kind != "url":
                error = check_import(spec.target, spec.kind)
            elif spec.target.startswith("https://"):
                error = tls.check(spec.tls)
                error = error and f"backend {spec.name!r}: {error}"
            else:
                error = None
            if error:
                checker.problem(spec.where, error)
    if checker.problems or config is None:
        raise ConfigError(checker.problems)
    return GatewayConfig(
        version=config.version,
        backends=config.backends,
        default=config.default,
        routes=config.routes,
        source=source,
        sha256=digest,
    )


# What each factory made, by target: an app factory is called once per process (a
# `serve` worker), and whatever reads the app later (the live inventory) gets the app
# the backend serves, not a second one.
_made: dict[str, Any] = {}


def import_target(target: str) -> Any:
    """Import "module:attr.attr" and return the object, or for "module:factory()" what
    calling the factory returns (raises on failure)."""
    if not target.endswith("()"):
        return _imported(target)
    if target not in _made:
        _made[target] = _imported(target.removesuffix("()"))()
    return _made[target]


def is_factory(target: str) -> bool:
    return target.endswith("()")


def _imported(target: str) -> Any:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def check_import(target: str, kind: str) -> str | None:
    """Say in plain words why `target` (a `kind` app: wsgi or asgi) cannot be imported,
    or None if it can. A factory is imported and must be callable, but is not called:
    that is for each worker."""
    factory = is_factory(target)
    module_name, _, attr_path = target.removesuffix("()").partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        return (
            f"cannot import {target!r}: module {exc.name!r} not found; "
            "check the module path, the directory it is imported from (the route file's, "
            "or --app-dir) and that the package is installed"
        )
    except (SystemExit, KeyboardInterrupt) as exc:
        # A module that exits (sys.exit, argparse reading the gateway's own command
        # line) or raises KeyboardInterrupt at import must not stop the gateway.
        return (
            f"cannot import {target!r}: importing {module_name!r} raised "
            f"{type(exc).__name__}({exc}); a backend module must not exit or parse the "
            "command line when imported"
        )
    except BaseException as exc:  # whatever else a user's module raises: never stops us
        return f"cannot import {target!r}: importing {module_name!r} raised {exc!r}"
    obj: Any = module
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            return f"cannot import {target!r}: {module_name!r} has no attribute {attr_path!r}"
        obj = getattr(obj, attr)
    if not callable(obj):
        if factory:
            return f"{target!r}: {attr_path!r} is not a factory (it is not callable)"
        return f"{target!r} is not an application (it is not callable)"
    if not factory and _takes_no_call(obj, len(_APP_ARGUMENTS[kind])):
        # A factory named without its "()" would otherwise pass and fail every request.
        return (
            f"{target!r} is a function that does not take an app's arguments "
            f"({', '.join(_APP_ARGUMENTS[kind])}); if it makes the app, write {target + '()'!r}"
        )
    return None


_APP_ARGUMENTS = {"wsgi": ("environ", "start_response"), "asgi": ("scope", "receive", "send")}


def _takes_no_call(obj: Any, arguments: int) -> bool:
    """True for a plain function that cannot take an app's positional arguments. Other
    callables (a Flask app, a class instance, a partial) are not judged."""
    if not inspect.isfunction(obj):
        return False
    try:
        inspect.signature(obj).bind(*range(arguments))
    except TypeError:
        return True
    except ValueError:  # no signature to read
        return False
    return False
