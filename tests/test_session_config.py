"""`session_from` and `session_header` in `routes.yaml`: checked with positions, and a
source that is no Flask app stops the gateway at startup with a plain reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.routefile.loading import parse_config
from gateway.routefile.model import ConfigError
from tests.harness import gateway_client, write_routes

HEAD = """\
version: 1
backends:
  legacy: {wsgi: "legacy_flask.app:app"}
  plain: {wsgi: "tests.apps:wsgi"}
"""


def problems(backends: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + backends + "default: legacy\n", "routes.yaml")
    return [str(p) for p in info.value.problems]


def test_session_keys_parse() -> None:
    config = parse_config(
        HEAD
        + """\
  new: {asgi: "new_fastapi.app:app", session_from: legacy}
  remote: {url: "http://127.0.0.1:5000", session_from: legacy, session_header: X-Shop-Login}
""",
        "routes.yaml",
    )
    assert config.backend("new").session_from == "legacy"
    assert config.backend("new").session_header is None
    assert config.backend("remote").session_header == "X-Shop-Login"
    assert config.backend("legacy").session_from is None


def test_session_from_must_name_a_declared_wsgi_backend() -> None:
    assert problems(
        """\
  new: {asgi: "new_fastapi.app:app", session_from: legcy}
  other: {asgi: "tests.apps:asgi", session_from: new}
"""
    ) == [
        "routes.yaml:5:52: backend 'new': 'session_from': no backend is named 'legcy'; "
        "did you mean 'legacy'?",
        "routes.yaml:6:50: backend 'other': 'session_from': 'new' is asgi, not a wsgi "
        "(Flask) backend",
    ]


def test_session_keys_only_where_they_mean_something() -> None:
    assert problems(
        """\
  own: {wsgi: "tests.apps:wsgi", session_from: legacy}
  new: {asgi: "new_fastapi.app:app", session_from: legacy, session_header: X-S}
  remote: {url: "http://127.0.0.1:5000", session_header: X-S}
  cookie: {url: "http://127.0.0.1:5000", session_from: legacy, session_header: Cookie}
  spaced: {url: "http://127.0.0.1:5000", session_from: legacy, session_header: "X S"}
"""
    ) == [
        "routes.yaml:5:34: backend 'own': 'session_from' is for asgi and url backends; "
        "a wsgi app has its own session",
        "routes.yaml:6:60: backend 'new': 'session_header' needs a url backend with 'session_from'",
        "routes.yaml:7:42: backend 'remote': 'session_header' needs a url backend with "
        "'session_from'",
        "routes.yaml:8:80: backend 'cookie': 'session_header' 'Cookie' is not a header name "
        "of its own; use one such as X-Legacy-Session",
        "routes.yaml:9:80: backend 'spaced': 'session_header' 'X S' is not a header name "
        "of its own; use one such as X-Legacy-Session",
    ]


def test_a_session_source_that_is_no_flask_app_stops_the_startup(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_routes(
        tmp_path,
        HEAD + '  new: {asgi: "new_fastapi.app:app", session_from: plain}\ndefault: legacy\n',
    )
    with pytest.raises(RuntimeError, match="is not a Flask app"), gateway_client(path):
        pass
    assert (
        "gateway failed to start: backend 'plain' (tests.apps:wsgi) is not a Flask app "
        "(it is function); session_from needs a Flask app to share" in caplog.text
    )


def test_a_session_source_without_a_secret_key_stops_the_startup(tmp_path: Path) -> None:
    path = write_routes(
        tmp_path,
        """\
version: 1
backends:
  keyless: {wsgi: "tests.login_apps:keyless"}
  new: {asgi: "new_fastapi.app:app", session_from: keyless}
default: keyless
""",
    )
    with pytest.raises(RuntimeError, match="the Flask app has no SECRET_KEY"), gateway_client(path):
        pass


def test_a_reload_to_a_source_that_is_no_flask_app_keeps_the_table(tmp_path: Path) -> None:
    good = HEAD + '  new: {asgi: "new_fastapi.app:app", session_from: legacy}\ndefault: legacy\n'
    path = write_routes(tmp_path, good)
    with gateway_client(path) as client:
        before = client.get("/-/routes").json()["sha256"]
        path.write_text(good.replace("session_from: legacy", "session_from: plain"))
        result = client.post("/-/reload")
        assert result.status_code == 422
        assert "cannot apply: backend 'plain' (tests.apps:wsgi) is not a Flask app" in result.text
        assert client.get("/-/routes").json()["sha256"] == before
