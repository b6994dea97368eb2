"""Strangler migration gateway: route each endpoint of a Flask app to its FastAPI
replacement (or a remote upstream), one route at a time, and flip back instantly."""

from gateway.app import Gateway, create_app
from gateway.control import ControlPlane
from gateway.routefile.loading import load_config, parse_config
from gateway.routefile.model import ConfigError, GatewayConfig, Problem
from gateway.settings import Settings
from gateway.sources import FileSource, Source

__all__ = [
    "ConfigError",
    "ControlPlane",
    "FileSource",
    "Gateway",
    "GatewayConfig",
    "Problem",
    "Settings",
    "Source",
    "create_app",
    "load_config",
    "parse_config",
]
