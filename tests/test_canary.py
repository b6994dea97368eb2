"""Canary splits: sticky, monotonic, exact shares; and setting the percent."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.canary import CanarySplit
from gateway.cli import main
from gateway.routefile.loading import parse_config
from gateway.routefile.model import CanarySpec, Sticky
from tests.harness import TEST_BACKENDS, gateway_client, write_routes


def scope(headers: list[tuple[bytes, bytes]], client: str = "10.0.0.1") -> dict[str, object]:
    return {"type": "http", "headers": headers, "client": (client, 1234)}


BY_USER = Sticky("header", "x-user-id")


def split(percent: float, sticky: Sticky | None = BY_USER) -> CanarySplit:
    return CanarySplit("books.get", CanarySpec("new", percent, sticky))


def test_ten_percent_of_ten_thousand_keys_go_to_the_canary() -> None:
    canary = split(10)
    hits = sum(
        canary.to_canary(scope([(b"x-user-id", f"user-{i}".encode())])) for i in range(10_000)
    )
    assert 850 <= hits <= 1150  # 10% +- 1.5%


def test_a_key_never_moves_back_as_the_percent_rises() -> None:
    keys = [scope([(b"x-user-id", f"u{i}".encode())]) for i in range(2_000)]
    on_canary: set[int] = set()
    for percent in range(1, 101):
        canary = split(percent)
        now = {i for i, s in enumerate(keys) if canary.to_canary(s)}
        assert on_canary <= now  # nobody who was on the canary went back
        on_canary = now
    assert len(on_canary) == len(keys)


def test_same_key_same_side_every_time_and_routes_split_independently() -> None:
    s = scope([(b"x-user-id", b"alice")])
    assert len({split(50).to_canary(s) for _ in range(50)}) == 1
    other = CanarySplit("books.list", CanarySpec("new", 50, Sticky("header", "x-user-id")))
    keys = [scope([(b"x-user-id", f"k{i}".encode())]) for i in range(1_000)]
    same = sum(split(50).to_canary(k) == other.to_canary(k) for k in keys)
    assert 400 < same < 600  # independent halves, not the same half


def test_cookie_and_client_ip_keys() -> None:
    by_cookie = split(50, Sticky("cookie", "session"))
    with_cookie = scope([(b"cookie", b"theme=dark; session=abc123; x=1")])
    assert len({by_cookie.to_canary(with_cookie) for _ in range(30)}) == 1
    by_ip = split(50, Sticky("client_ip"))
    assert len({by_ip.to_canary(scope([], client="192.0.2.9")) for _ in range(30)}) == 1


def test_requests_without_the_key_are_split_at_random() -> None:
    canary = split(30)
    hits = sum(canary.to_canary(scope([])) for _ in range(10_000))
    assert 2_700 <= hits <= 3_300
    assert sum(split(0).to_canary(scope([])) for _ in range(1000)) == 0
    assert sum(split(100).to_canary(scope([])) for _ in range(1000)) == 1000


TABLE = (
    "version: 1\n"
    + TEST_BACKENDS
    + """\
default: legacy
routes:
  - id: book
    path: /book
    backend: legacy   # the old side
    canary: {backend: new, percent: 25, sticky: "header:X-User-Id"}
  - id: other
    path: /other
    backend: legacy
"""
)


def test_gateway_sends_the_share_and_reports_weights(tmp_path: Path) -> None:
    path = write_routes(tmp_path, TABLE)
    with gateway_client(path) as client:
        sides = [
            client.get("/book", headers={"X-User-Id": f"u{i}"}).headers["x-gateway-backend"]
            for i in range(400)
        ]
        again = [
            client.get("/book", headers={"X-User-Id": f"u{i}"}).headers["x-gateway-backend"]
            for i in range(400)
        ]
        metrics = client.get("/-/metrics").text
    assert sides == again  # sticky
    assert 60 <= sides.count("new") <= 140
    assert 'gateway_route_weight{backend="legacy",route="book"} 0.75' in metrics
    assert 'gateway_route_weight{backend="new",route="book"} 0.25' in metrics
    assert 'gateway_route_weight{backend="legacy",route="other"} 1.0' in metrics


def test_canary_command_changes_only_the_percent(tmp_path: Path) -> None:
    path = write_routes(tmp_path, TABLE)
    assert main(["canary", "book", "12.5", "--config", str(path)]) == 0
    assert path.read_text() == TABLE.replace("percent: 25,", "percent: 12.5,")
    assert parse_config(path.read_bytes()).route("book").canary == CanarySpec(
        "new", 12.5, Sticky("header", "x-user-id")
    )


def test_canary_command_adds_a_canary_to_a_block_route(tmp_path: Path) -> None:
    path = write_routes(tmp_path, TABLE)
    assert main(["canary", "other", "5", "--backend", "new", "--config", str(path)]) == 0
    assert path.read_text() == TABLE.replace(
        "    path: /other\n    backend: legacy\n",
        "    path: /other\n    backend: legacy\n    canary: {backend: new, percent: 5}\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["canary", "other", "5"], "route 'other' has no canary yet; name its backend"),
        (["canary", "book", "101"], "percent must be from 0 to 100"),
        (["canary", "nope", "5"], "unknown route 'nope'"),
        (["canary", "other", "5", "--backend", "gone"], "unknown backend 'gone'"),
        (["canary", "book", "5", "--backend", "legacy"], "already has canary backend 'new'"),
    ],
)
def test_canary_command_refusals_change_nothing(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_routes(tmp_path, TABLE)
    assert main([*args, "--config", str(path)]) == 1
    assert message in capsys.readouterr().err
    assert path.read_text() == TABLE


def test_admin_api_sets_the_percent(tmp_path: Path) -> None:
    path = write_routes(tmp_path, TABLE)
    with gateway_client(path, watch_interval=5) as client:
        r = client.put("/-/routes/book", json={"canary": {"percent": 100}})
        assert r.status_code == 200
        assert r.json()["route"]["canary"] == {
            "backend": "new",
            "percent": 100.0,
            "sticky": "header:x-user-id",
        }
        # Applied at once: every request now goes to the canary.
        assert {client.get("/book").headers["x-gateway-backend"] for _ in range(20)} == {"new"}
        r = client.put("/-/routes/book", json={"canary": {"percent": "ten"}})
        assert r.status_code == 400
    assert "percent: 100," in path.read_text()


def test_canary_goes_under_its_route_when_the_route_ends_in_a_block_list(tmp_path: Path) -> None:
    """The last key's value is a block list: its end is the next route's start."""
    text = (
        "version: 1\n"
        + TEST_BACKENDS
        + "routes:\n"
        + "  - id: listed\n    path: /listed\n    backend: legacy\n    methods:\n"
        + "      - GET\n      - HEAD   # reads only\n"
        + "  # the next one\n"
        + "  - id: next\n    path: /next\n    backend: legacy\n"
    )
    path = write_routes(tmp_path, text)
    assert main(["canary", "listed", "5", "--backend", "new", "--config", str(path)]) == 0
    assert path.read_text() == text.replace(
        "      - HEAD   # reads only\n",
        "      - HEAD   # reads only\n    canary: {backend: new, percent: 5}\n",
    )
    config = parse_config(path.read_bytes(), str(path))
    assert config.route("listed").canary is not None
    assert config.route("next").canary is None


@pytest.mark.parametrize(("percent", "written"), [(0.00001, "0.00001"), (33.3333333, "33.3333333")])
def test_canary_percent_is_written_as_a_number_yaml_reads_back_exactly(
    tmp_path: Path, percent: float, written: str
) -> None:
    path = write_routes(tmp_path, TABLE)
    assert main(["canary", "book", str(percent), "--config", str(path)]) == 0
    assert f"percent: {written}, sticky" in path.read_text()
    canary = parse_config(path.read_bytes(), str(path)).route("book").canary
    assert canary is not None and canary.percent == percent
