"""Settings: one declaration gives `gateway serve` its flags and GATEWAY_* variables."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from gateway.cli import build_parser
from gateway.settings import Settings, given
from tests.harness import ROOT

NON_DEFAULT = Settings(
    config="/etc/gateway/routes.yaml",
    host="0.0.0.0",
    port=9000,
    workers=3,
    wsgi_threads=8,
    wsgi_buffer=4096,
    wsgi_wait=2.5,
    max_head=2048,
    head_timeout=3.5,
    limit_concurrency=10,
    max_body=1000,
    body_timeout=7.5,
    admin_prefix="/_admin/",
    admin_listen="127.0.0.1:9001",
    forwarded_allow_ips="10.0.0.0/8,192.0.2.1",
    metrics_path="/prom",
    metrics=False,
    route_headers=False,
    watch_interval=1.5,
    timeout_keep_alive=30,
    log_level="warning",
    log_format="json",
    access_log=False,
    shutdown_delay=5.0,
    graceful_timeout=12.5,
    store="redis://:pw@redis.internal:6379/2",
    store_key="gw-prod",
    app_dir="/srv/apps",
    state_dir="/run/gateway",
)


def test_every_setting_differs_from_its_default_in_the_round_trip_sample() -> None:
    defaults = Settings()
    same = [
        f.name
        for f in fields(Settings)
        if getattr(NON_DEFAULT, f.name) == getattr(defaults, f.name)
    ]
    assert same == ["admin_token"]  # the token is never written to the environment


def test_environment_round_trip() -> None:
    env = NON_DEFAULT.to_env()
    assert env["GATEWAY_PORT"] == "9000"
    assert env["GATEWAY_METRICS"] == "0"
    assert "GATEWAY_ADMIN_TOKEN" not in env
    assert Settings.load(env) == NON_DEFAULT


def test_command_line_wins_over_the_environment() -> None:
    args = build_parser().parse_args(
        ["serve", "--port", "9001", "--no-access-log", "--log-level", "debug"]
    )
    env = {"GATEWAY_PORT": "9000", "GATEWAY_HOST": "0.0.0.0", "GATEWAY_ACCESS_LOG": "1"}
    settings = Settings.load(env, **given(args))
    assert (settings.port, settings.host, settings.access_log) == (9001, "0.0.0.0", False)
    assert settings.log_level == "debug"
    assert Settings.load({}, **given(build_parser().parse_args(["serve"]))) == Settings()


def test_variables_of_no_setting_are_left_alone() -> None:
    # Kubernetes adds GATEWAY_SERVICE_HOST and the like for a Service named `gateway`;
    # a deployment may set a variable that only a newer gateway reads.
    env = {
        "GATEWAY_SERVICE_HOST": "10.0.0.1",
        "GATEWAY_PORT_8000_TCP": "tcp://10.0.0.1:8000",
        "GATEWAY_TRUSTED_HOSTS": "*",
    }
    assert Settings.load(env) == Settings()


def test_admin_token_comes_from_the_environment_only() -> None:
    assert Settings.load({"GATEWAY_ADMIN_TOKEN": "s3cret"}).admin_token == "s3cret"
    assert Settings.load({"GATEWAY_ADMIN_TOKEN": ""}).admin_token is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--admin-token", "s3cret"])


@pytest.mark.parametrize(
    ("variable", "value", "error"),
    [
        (
            "GATEWAY_PORT",
            "tcp://10.0.0.1:8000",
            "gateway serve: GATEWAY_PORT='tcp://10.0.0.1:8000': expected an integer; "
            "Kubernetes sets this for a Service named 'gateway': "
            "set enableServiceLinks: false in the pod spec",
        ),
        ("GATEWAY_WORKERS", "two", "gateway serve: GATEWAY_WORKERS='two': expected an integer"),
        (
            "GATEWAY_METRICS",
            "maybe",
            "gateway serve: GATEWAY_METRICS='maybe': expected a boolean (1/0, true/false)",
        ),
        (
            "GATEWAY_LOG_LEVEL",
            "loud",
            "gateway serve: GATEWAY_LOG_LEVEL='loud': expected one of critical, error, "
            "warning, info, debug",
        ),
        ("GATEWAY_WORKERS", "0", "gateway serve: GATEWAY_WORKERS='0': workers must be at least 1"),
        (
            "GATEWAY_FORWARDED_ALLOW_IPS",
            "10.0.0.0/8, ingress",
            "gateway serve: GATEWAY_FORWARDED_ALLOW_IPS='10.0.0.0/8, ingress': "
            "forwarded allow ips: 'ingress' is not an IP address or network; "
            "expected '*', or IP addresses and networks (10.0.0.0/8) separated by commas",
        ),
        (
            "GATEWAY_STORE",
            "http://:hunter2@redis.internal:6379",
            "gateway serve: GATEWAY_STORE: the store URL must start with redis://, "
            "rediss:// or unix:// (got 'http://:***@redis.internal:6379')",
        ),
        (
            "GATEWAY_STORE",
            "redis://:hunter2@redis.internal:6379x",
            "gateway serve: GATEWAY_STORE: the store URL is invalid: Port could not be cast "
            "to integer value as '6379x' (got 'redis://:***@redis.internal:6379x')",
        ),
        (
            "GATEWAY_SHUTDOWN_DELAY",
            "soon",
            "gateway serve: GATEWAY_SHUTDOWN_DELAY='soon': expected a number",
        ),
    ],
)
def test_a_bad_environment_value_is_one_line_naming_it(
    variable: str, value: str, error: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [error]
    assert result.stdout == ""


def test_a_flag_out_of_range_is_one_line_naming_the_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--workers", "0"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["gateway serve: --workers 0: workers must be at least 1"]
