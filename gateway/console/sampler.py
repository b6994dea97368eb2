"""The console's traffic figures: rate, error ratio, p50 and p99 per route and backend
over the last few minutes, from the gateway's own counters of every worker.

One sampler per host, however many workers and viewers: the figures live in the
serve's state directory, which every worker shares. A viewer's request reads the
last figures there; only when they are older than `INTERVAL` does its worker try
to take the directory's sampler lock, and the one worker that gets it reads the
counters (all workers' at once, as a scrape does), adds the sample to the kept
ones and writes the new figures. The others serve what is there meanwhile. So the
counters are read at most once per interval per host, and not at all while nobody
watches.

A figure is the difference between the newest sample and the oldest one kept, at
most about `WINDOW` seconds older: samples closer than `SPACING` to the one before
replace the newest instead of adding one, so a few dozen are kept whatever the
interval. Percentiles are interpolated within the histogram's buckets, as
Prometheus' `histogram_quantile` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric

from gateway.metrics import BUCKETS, Metrics

INTERVAL = 2.0  # seconds between samples while someone watches
SPACING = 15.0  # kept samples are at least this far apart (the newest excepted)
WINDOW = 300.0  # figures cover about this much time, once it has passed
FIGURES = "console-figures.json"
SAMPLES = "console-samples.json"
LOCK = "console-sampler.lock"

# (route, backend) -> [requests, 5xx answers, cumulative count per bucket bound...]
Counts = dict[str, list[float]]


class Sampler:
    def __init__(self, metrics: Metrics | None, directory: str | Path) -> None:
        self.metrics = metrics
        self.directory = Path(directory)

    async def figures(self) -> bytes:
        """The last figures as JSON, sampled anew first when they are due."""
        path = self.directory / FIGURES
        try:
            fresh = time.time() - path.stat().st_mtime < INTERVAL
        except OSError:
            fresh = False
        if not fresh and self.metrics is not None:
            await asyncio.to_thread(self._sample_if_due)
        try:
            return path.read_bytes()
        except OSError:
            return json.dumps(_figures([], self.metrics is not None)).encode()

    def _sample_if_due(self) -> None:
        assert self.metrics is not None  # checked by figures()
        with open(self.directory / LOCK, "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another worker is sampling: its figures will serve
            with contextlib.suppress(OSError):
                if time.time() - (self.directory / FIGURES).stat().st_mtime < INTERVAL:
                    return  # sampled by another worker while this one waited
            samples = self._read_samples()
            samples = keep(samples, {"at": time.time(), "counts": counts(self.metrics.families())})
            self._write(SAMPLES, samples)
            self._write(FIGURES, _figures(samples, True))

    def _read_samples(self) -> list[dict[str, Any]]:
        try:
            found = json.loads((self.directory / SAMPLES).read_bytes())
        except (OSError, ValueError):
            return []
        return found if isinstance(found, list) else []

    def _write(self, name: str, data: object) -> None:
        # Replaced in one rename, so that a reader never sees half a file.
        temporary = self.directory / f".{name}.{os.getpid()}"
        temporary.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(temporary, self.directory / name)


def keep(samples: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """The samples to keep once `new` is taken (oldest first)."""
    if len(samples) >= 2 and samples[-1]["at"] - samples[-2]["at"] < SPACING:
        samples = samples[:-1]  # the newest was kept only as the newest
    samples = [*samples, new]
    # Drop the oldest while the next one still reaches back a whole window.
    while len(samples) > 2 and samples[1]["at"] <= new["at"] - WINDOW:
        samples = samples[1:]
    return samples


def counts(families: Iterable[Metric]) -> Counts:
    """Requests, 5xx answers and bucket counts per 'route backend', from a scrape."""
    found: Counts = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "gateway_requests_total":
                entry = found.setdefault(f"{labels['route']} {labels['backend']}", [0.0, 0.0])
                entry[0] += sample.value
                if labels["code"].startswith("5"):
                    entry[1] += sample.value
            elif sample.name == "gateway_request_duration_seconds_bucket":
                key = f"{labels['route']} {labels['backend']}"
                bounds = buckets.setdefault(key, {})
                bound = float(labels["le"])
                bounds[bound] = bounds.get(bound, 0.0) + sample.value
    for key, entry in found.items():
        entry += [count for _, count in sorted(buckets.get(key, {}).items())]
    return found


def _figures(samples: list[dict[str, Any]], counted: bool) -> dict[str, Any]:
    """The figures between the oldest and the newest sample, as `/-/console/figures` shows."""
    newest = samples[-1] if samples else None
    base = samples[0] if len(samples) >= 2 else None
    figures: dict[str, Any] = {
        "counted": counted,  # False: the gateway runs without metrics
        "at": newest["at"] if newest else None,
        "window_seconds": round(newest["at"] - base["at"], 1) if newest and base else None,
        "routes": {},
    }
    if newest is None or base is None:
        return figures
    seconds = newest["at"] - base["at"]
    bounds = [*BUCKETS, math.inf]
    for key, now in sorted(newest["counts"].items()):
        before = base["counts"].get(key)
        if before is None or len(before) != len(now) or before[0] > now[0]:
            before = [0.0] * len(now)  # new since the base sample (or counters restarted)
        delta = [a - b for a, b in zip(now, before, strict=True)]
        requests, errors, cumulative = delta[0], delta[1], delta[2:]
        route, _, backend = key.partition(" ")
        figures["routes"].setdefault(route, {})[backend] = {
            "requests": int(requests),
            "rate": round(requests / seconds, 3),
            "error_ratio": round(errors / requests, 4) if requests else None,
            "p50": quantile(0.5, bounds, cumulative),
            "p99": quantile(0.99, bounds, cumulative),
        }
    return figures


def quantile(q: float, bounds: list[float], cumulative: list[float]) -> float | None:
    """The q-quantile in seconds, interpolated in its bucket; None without requests.
    Past the last finite bound it is that bound (the histogram knows no more)."""
    if len(cumulative) != len(bounds) or not cumulative or cumulative[-1] <= 0:
        return None
    wanted = q * cumulative[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= wanted:
            if math.isinf(bound):
                return lower
            inside = count - below
            share = (wanted - below) / inside if inside else 1.0
            return round(lower + (bound - lower) * share, 6)
        lower, below = bound, count
    return lower
