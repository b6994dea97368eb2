"""`routes.yaml` validation: every problem reported at once, with file:line:column."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.routefile.loading import load_config, parse_config
from gateway.routefile.model import ConfigError

GOOD = """\
version: 1
backends:
  legacy: {wsgi: "tests.apps:wsgi"}
  new: {asgi: "tests.apps:asgi"}
  remote: {url: "http://127.0.0.1:5000/", timeout: 10}
default: legacy
routes:
  - id: books.list
    path: /books
    methods: [get]
    backend: new
  - id: books.get
    path: /books/{book_id}
    backend: remote
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "routes.yaml")
    return [str(p) for p in info.value.problems]


def test_valid_file_parses_into_frozen_config() -> None:
    config = parse_config(GOOD, "routes.yaml")
    assert [b.name for b in config.backends] == ["legacy", "new", "remote"]
    assert config.backend("remote").target == "http://127.0.0.1:5000"
    assert config.backend("remote").timeout == 10.0
    assert config.route("books.list").methods == ("GET",)
    assert config.route("books.get").methods is None
    assert config.default == "legacy"
    assert len(config.sha256) == 64
    with pytest.raises(AttributeError):
        config.default = "new"  # type: ignore[misc]


def test_unknown_and_misspelled_keys_point_at_the_key() -> None:
    text = GOOD.replace("    methods: [get]", "    methds: [get]").replace(
        "default: legacy", "defualt: legacy"
    )
    assert problems(text) == [
        "routes.yaml:6:1: unknown key 'defualt' in the file; did you mean 'default'?",
        "routes.yaml:10:5: unknown key 'methds' in route 'books.list'; did you mean 'methods'?",
    ]


def test_backend_with_zero_or_two_kinds() -> None:
    text = GOOD.replace(
        '  new: {asgi: "tests.apps:asgi"}', '  new: {asgi: "tests.apps:asgi", url: "http://x"}'
    ).replace('  legacy: {wsgi: "tests.apps:wsgi"}', "  legacy: {timeout: 3}")
    found = problems(text)
    assert found[0] == (
        "routes.yaml:3:11: backend 'legacy' must have exactly one of 'wsgi', 'asgi' or 'url' "
        "(found none)"
    )
    assert found[1] == (
        "routes.yaml:4:8: backend 'new' must have exactly one of 'wsgi', 'asgi' or 'url' "
        "(found 'asgi' and 'url')"
    )


def test_unknown_backend_name_suggests_the_close_one() -> None:
    found = problems(GOOD.replace("    backend: new", "    backend: nwe"))
    assert found == [
        "routes.yaml:11:14: route 'books.list': unknown backend 'nwe'; did you mean 'new'?"
    ]


def test_unknown_default() -> None:
    found = problems(GOOD.replace("default: legacy", "default: legasy"))
    assert found == ["routes.yaml:6:10: unknown default backend 'legasy'; did you mean 'legacy'?"]


def test_duplicate_ids_and_conflicting_claims() -> None:
    text = (
        GOOD
        + """\
  - id: books.get
    path: /books/{id}
    methods: [GET]
    backend: new
  - id: books.other
    path: /books
    methods: [POST, GET]
    backend: legacy
"""
    )
    assert problems(text) == [
        "routes.yaml:15:9: route id 'books.get' is already used at line 12; "
        "give each route its own id",
        "routes.yaml:19:9: route 'books.other' claims GET /books, already claimed by route "
        "'books.list' (line 8); remove one or give them different methods",
    ]


def test_same_path_without_methods_twice_conflicts() -> None:
    text = (
        GOOD
        + """\
  - id: books.get2
    path: /books/{other}
    backend: new
"""
    )
    assert problems(text) == [
        "routes.yaml:15:9: route 'books.get2' claims every method on /books/{other}, already "
        "claimed by route 'books.get' (line 12); remove one or give them different methods",
    ]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("books", "path 'books' must start with '/'"),
        ("/books/{id", "segment '{id' is malformed"),
        ("/books/x{id}", "segment 'x{id}' is malformed"),
        ("/a/{rest:path}/b", "must be the last segment"),
        ("/a/{x:int}", "unknown converter 'int'"),
        ("/a/{x}/{x}", "parameter {x} appears twice"),
    ],
)
def test_malformed_templates(path: str, message: str) -> None:
    found = problems(GOOD.replace("path: /books/{book_id}", f"path: {path}"))
    assert len(found) == 1
    assert found[0].startswith("routes.yaml:13:11: route 'books.get': ")
    assert message in found[0]


def test_import_paths_that_do_not_resolve() -> None:
    text = GOOD.replace("tests.apps:wsgi", "tests.nowhere:wsgi").replace(
        "tests.apps:asgi", "tests.apps:missing"
    )
    assert problems(text) == [
        "routes.yaml:3:18: cannot import 'tests.nowhere:wsgi': module 'tests.nowhere' not found; "
        "check the module path, the directory it is imported from (the route file's, or "
        "--app-dir) and that the package is installed",
        "routes.yaml:4:15: cannot import 'tests.apps:missing': 'tests.apps' has no attribute "
        "'missing'",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = """\
version: 2
backends:
  legacy: {wsgi: "not an import path"}
  new: {asgi: "tests.apps:asgi", timeout: -1}
  web: {url: "ftp://example"}
routes:
  - id: a
    path: nope
    backend: new
    methods: [FETCH]
  - path: /x
    backend: new
  - id: a
    path: /y
    backend: gone
"""
    found = problems(text)
    assert [f.split(": ", 1)[0] for f in found] == [
        "routes.yaml:1:10",
        "routes.yaml:3:18",
        "routes.yaml:4:43",
        "routes.yaml:5:14",
        "routes.yaml:8:11",
        "routes.yaml:10:15",
        "routes.yaml:11:5",
        "routes.yaml:13:9",
        "routes.yaml:15:14",
    ]
    assert "unsupported version 2" in found[0]
    assert found[5].endswith("route 'a': unknown HTTP method 'FETCH'; did you mean 'PATCH'?")
    assert "has no 'id'" in found[6]
    # The first 'a' is invalid, and its id is taken all the same.
    assert "route id 'a' is already used at line 7" in found[7]
    # Backends declared with a broken spec still count as names: no cascade of errors.
    assert found[8].endswith("route 'a': unknown backend 'gone'; use one of: legacy, new, web")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "routes.yaml:1:1: the file is empty"),
        ("version: 1\nbackends: [\n", "routes.yaml:3:1: invalid YAML"),
        ("- a\n- b\n", "routes.yaml:1:1: the file must be a mapping"),
        (
            "version: 1\nversion: 1\nbackends: {a: {asgi: 'tests.apps:asgi'}}\n",
            "routes.yaml:2:1: 'version' is repeated in the file",
        ),
        ("version: 1\n", "routes.yaml:1:1: missing 'backends'"),
    ],
)
def test_broken_files(text: str, expected: str) -> None:
    assert problems(text)[0].startswith(expected)


BASE = "version: 1\nbackends:\n  new: {asgi: 'tests.apps:asgi'}\nroutes:\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            BASE + "  - {id: !mytag x, path: /x, backend: new}\n",
            [
                "routes.yaml:5:10: cannot read this value: could not determine a constructor "
                "for the tag '!mytag'",
                "routes.yaml:5:10: route #1: 'id' must be a non-empty string",
            ],
        ),
        (
            BASE + "  - {id: x, path: /x, backend: new, methods: [2024-02-30]}\n",
            [
                "routes.yaml:5:47: cannot read this value: day is out of range for month",
                "routes.yaml:5:47: route 'x': 'methods' lists names such as GET "
                "(got an unreadable value)",
            ],
        ),
        (
            BASE + "  - {id: x, path: /x, backend: new, methods: [[GET]]}\n",
            [
                "routes.yaml:5:47: route 'x': 'methods' lists names such as GET "
                "(got a list or mapping)"
            ],
        ),
        (
            "version: 1\nbackends: " + "[" * 5000 + "\n",
            ["routes.yaml:1:1: the file is nested too deeply to be a route table"],
        ),
    ],
)
def test_values_yaml_cannot_construct_are_problems_not_crashes(
    text: str, expected: list[str]
) -> None:
    assert problems(text) == expected


@pytest.mark.parametrize("timeout", [".inf", ".nan", "1" + "0" * 400, "-0.5", "-1", "3601", "[1]"])
def test_backend_timeout_must_be_a_finite_number_of_seconds(timeout: str) -> None:
    found = problems(
        f"version: 1\nbackends:\n  remote: {{url: 'http://127.0.0.1:5000', timeout: {timeout}}}\n"
    )
    assert len(found) == 1
    assert found[0].startswith(
        "routes.yaml:3:51: backend 'remote': 'timeout' (seconds, 0 for none) must be a number "
        "from 0 to "
        "3600 (got "
    )
    assert "<object" not in found[0]


@pytest.mark.parametrize(
    "url", ["http://ops:s3cret@127.0.0.1:5000", "https://ops@up.internal", "http://:s3cret@up"]
)
def test_a_url_backend_with_credentials_is_refused_without_repeating_them(url: str) -> None:
    """aiohttp would send them as Basic credentials, and refuse (a 500 per request) every
    client request that carries its own Authorization header."""
    found = problems(f"version: 1\nbackends:\n  remote: {{url: '{url}'}}\ndefault: remote\n")
    assert len(found) == 1
    assert found[0].startswith("routes.yaml:3:17: backend 'remote': '")
    assert "with a user or password" in found[0] and "remove the 'user:password@' part" in found[0]
    assert "s3cret" not in found[0] and "ops" not in found[0]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(info.value)


def test_check_command_lists_every_problem_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD.replace("backend: new", "backend: nope").replace("[get]", "[got]"))
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}:10:15: route 'books.list': unknown HTTP method 'got'")
    assert err[1].startswith(f"{path}:11:14: route 'books.list': unknown backend 'nope'")
    assert err[-1] == f"{path}: 2 problems; nothing was applied"
    assert "Traceback" not in "\n".join(err)


def test_check_command_accepts_the_repo_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "routes.yaml"]) == 0
    assert capsys.readouterr().out.startswith("routes.yaml: OK (")


def test_routes_command_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(GOOD)
    assert main(["routes", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "ID          METHODS  PATH              BACKEND",
        "books.list  GET      /books            new",
        "books.get   *        /books/{book_id}  remote",
        "_default    *        (anything else)   legacy",
    ]


POLICIES = """\
version: 1
backends:
  legacy: {wsgi: "tests.apps:wsgi"}
  new: {asgi: "tests.apps:asgi"}
routes:
  - id: books.get
    path: /books/{book_id}
    backend: legacy
    canary: {backend: new, percent: 10, sticky: "header:X-User-Id"}
    shadow: {backend: new, percent: 50, ignore: ["$.updated_at", "$.items[*].at"], calibrate: true}
    unsafe: false
    fallback: new
    rollback: {error_ratio: 0.05, window: 60, min_requests: 20}
"""


def test_migration_policies_parse() -> None:
    route = parse_config(POLICIES).route("books.get")
    assert route.canary is not None and route.canary.percent == 10
    assert str(route.canary.sticky) == "header:x-user-id"
    assert route.shadow is not None
    assert route.shadow.ignore == (("updated_at",), ("items", "*", "at"))
    assert route.shadow.calibrate is True and route.shadow.percent == 50
    assert route.fallback == "new"
    assert route.rollback is not None and route.rollback.min_requests == 20


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "percent: 10,",
            "percent: 101,",
            "routes.yaml:9:37: route 'books.get': canary percent must be a number from 0 to 100 "
            "(got 101)",
        ),
        (
            "percent: 10,",
            "percent: true,",
            "routes.yaml:9:37: route 'books.get': canary percent must be a number from 0 to 100 "
            "(got True)",
        ),
        (
            'sticky: "header:X-User-Id"',
            'sticky: "ip"',
            "routes.yaml:9:49: route 'books.get': canary sticky must be 'header:NAME', "
            "'cookie:NAME' or 'client_ip' (got 'ip')",
        ),
        (
            "canary: {backend: new,",
            "canary: {backend: neww,",
            "routes.yaml:9:23: route 'books.get': canary: unknown backend 'neww'; "
            "did you mean 'new'?",
        ),
        (
            "canary: {backend: new, percent: 10,",
            "canary: {backend: new,",
            "routes.yaml:9:13: route 'books.get': 'canary' needs 'percent', e.g. "
            "{backend: new, percent: 10}",
        ),
        (
            '"$.updated_at"',
            '"updated_at"',
            "routes.yaml:10:50: route 'books.get': shadow ignore path 'updated_at': a JSON path "
            "starts with '$', as in '$.updated_at'",
        ),
        (
            "calibrate: true",
            "calibrate: yes please",
            "routes.yaml:10:95: route 'books.get': 'shadow': 'calibrate' must be true or false",
        ),
        (
            "percent: 50,",
            "percnt: 50,",
            "routes.yaml:10:28: unknown key 'percnt' in route 'books.get': 'shadow'; "
            "did you mean 'percent'?",
        ),
        (
            "unsafe: false",
            "unsafe: 1",
            "routes.yaml:11:13: route 'books.get': 'unsafe' must be true or false",
        ),
        (
            "fallback: new",
            "fallback: old",
            "routes.yaml:12:15: route 'books.get': fallback: unknown backend 'old'; "
            "use one of: legacy, new",
        ),
        (
            "error_ratio: 0.05",
            "error_ratio: 0",
            "routes.yaml:13:29: route 'books.get': rollback error_ratio must be a number above 0 "
            "to 1 (got 0)",
        ),
        (
            "min_requests: 20",
            "min_requests: 2.5",
            "routes.yaml:13:61: route 'books.get': rollback min_requests must be a whole number "
            "of at least 1 (got 2.5)",
        ),
        (
            "window: 60, ",
            "",
            "routes.yaml:13:15: route 'books.get': 'rollback' needs 'window', e.g. "
            "{error_ratio: 0.05, window: 60, min_requests: 20}",
        ),
        (
            "    fallback: new\n",
            "",
            "routes.yaml:12:5: route 'books.get': 'rollback' flips the route to its fallback, "
            "so it needs 'fallback'",
        ),
    ],
)
def test_bad_policy_values_are_reported_with_positions(old: str, new: str, expected: str) -> None:
    assert old in POLICIES
    assert problems(POLICIES.replace(old, new, 1)) == [expected]


def test_parsing_keeps_nothing_alive() -> None:
    # Every reload parses the file: a parse must leave no node behind (a shared YAML
    # constructor once cached them all, growing each worker by MBs per reload).
    import gc

    text = "version: 1\nbackends:\n  a: {url: 'http://127.0.0.1:1'}\nroutes:\n" + "".join(
        f"  - id: r{i}\n    path: /r{i}/{{x}}\n    backend: a\n" for i in range(500)
    )
    parse_config(text, resolve_imports=False)
    gc.collect()
    before = len(gc.get_objects())
    for _ in range(3):
        parse_config(text, resolve_imports=False)
    gc.collect()
    assert len(gc.get_objects()) - before < 1000
