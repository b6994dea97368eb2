"""The benchmark still runs: `python -m bench --quick` on one row, and its options."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import QUICK, command, parse
from bench.rows import SECTIONS

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_of_the_metrics_row_prints_its_ratio() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "metrics"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    measured = next(line for line in done.stdout.splitlines() if "metrics on" in line)
    # CPU per request, throughput, and the cost ratio with its spread over the 2 rounds
    assert re.search(r"[\d,]+ us .* [\d,]+ req/s .* \d\.\d{3}x \[\d\.\d\d-\d\.\d\d\]", measured)
    assert "<= 1.02x" in measured
    assert "Reproduce with: python -m bench --quick --only metrics" in done.stdout


def test_options_round_trip_to_the_command_that_reproduces_them() -> None:
    opts = parse(["--quick", "--rounds", "3", "--only", "routes,instr"])
    assert opts.rounds == 3 and opts.duration == QUICK.duration
    assert opts.sections == ("instr", "routes")  # in the table's order
    assert command(opts) == "python -m bench --quick --rounds 3 --only instr,routes"
    assert parse([]).sections == SECTIONS


def test_unknown_section_is_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--only", "1,3"])
    assert "unknown sections ['1', '3']" in capsys.readouterr().err
