"""The benchmark's one table: rows, ratios with their spread over rounds, verdicts."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.harness import Rounds


@dataclass(slots=True)
class Row:
    section: str
    case: str
    cost: str = ""  # CPU (or instructions) per request
    rate: str = ""  # throughput, or another result
    p99: str = ""
    ratio: str = ""  # cost ratio to the reference: median [lowest-highest round]
    rate_ratio: str = ""  # throughput ratio to the reference, median
    target: str = ""
    verdict: str = ""


def spread(values: Sequence[float]) -> str:
    """`median [lowest-highest]`, or just the value when there is one."""
    if len(values) == 1:
        return f"{values[0]:.3f}x"
    return f"{statistics.median(values):.3f}x [{min(values):.2f}-{max(values):.2f}]"


def load_row(section: str, case: str, rounds: Rounds, reference: Rounds | None = None) -> Row:
    """A measured variant: median CPU per request, throughput and p99 over its rounds;
    with a reference, the ratios of the two taken round by round."""
    runs = rounds.runs
    errors = sum(run.errors for run in runs)
    row = Row(
        section,
        case,
        cost=f"{statistics.median(run.cost for run in runs) * 1e6:,.0f} us",
        rate=f"{statistics.median(run.rps for run in runs):,.0f} req/s"
        + (f" ({errors} errors)" if errors else ""),
        p99=f"{statistics.median(run.p99_ms for run in runs):,.1f} ms",
    )
    if reference is not None:
        pairs = list(zip(runs, reference.runs, strict=True))
        row.ratio = spread([run.cost / ref.cost for run, ref in pairs])
        row.rate_ratio = f"{statistics.median(run.rps / ref.rps for run, ref in pairs):.3f}x"
    return row


def judge(row: Row, ratio: float, target: float) -> Row:
    """Lower is better: a cost ratio at or under its target is met."""
    row.target = f"<= {target:g}x"
    row.verdict = "met" if ratio <= target else "MISSED"
    return row


def median_ratio(rounds: Rounds, reference: Rounds) -> float:
    return statistics.median(
        run.cost / ref.cost for run, ref in zip(rounds.runs, reference.runs, strict=True)
    )


_HEADERS = ("#", "case", "per request", "throughput", "p99", "ratio", "rps ratio", "target", "")
_RIGHT = {2, 3, 4, 6}


def render(rows: Sequence[Row]) -> str:
    cells = [
        [r.section, r.case, r.cost, r.rate, r.p99, r.ratio, r.rate_ratio, r.target, r.verdict]
        for r in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(_HEADERS)]

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(widths[i]) if i in _RIGHT else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(out).rstrip()

    lines = [line(_HEADERS), "  ".join("-" * w for w in widths)]
    for index, (row, values) in enumerate(zip(rows, cells, strict=True)):
        if index and row.section != rows[index - 1].section:
            lines.append("")
        lines.append(line(values))
    return "\n".join(lines)
