"""The benchmark's machinery: options, tools, server processes, load runs, the table.

Servers run as subprocesses on free loopback ports, each in a session of its
own so that stopping one stops its whole process group (a uvicorn supervisor
and its workers, an nginx master and its worker). `Processes` stops every
server it started when its `with` block ends, however it ends; the children
also ask the kernel for SIGTERM should the harness itself die first.

Load comes from wrk. With two cores or more, servers run on the first allowed
core and wrk (and this process) on the second, so the load generator never
steals the server's core. Each comparison (`Group`) runs `rounds` rounds;
each round starts fresh server processes, warms them up and loads the
variants in a rotated order. Rows report medians over the rounds: a slow
moment of the machine, or an unlucky process, hits every variant alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.app import REFREEZE_DELAY

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
QUICK_ENV = "BENCH_QUICK"
QUIET = 0.10  # other processes' share of a core below which the machine counts as quiet
RERUN = 0.15  # ... above which a load run is measured again


# --- options ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    rounds: int = 5  # each with fresh server processes (see Group)
    duration: int = 3  # seconds per wrk round (wrk takes whole seconds)
    warmup: int = 1  # seconds of wrk per fresh process before its round
    connections: int = 32
    flips: int = 20
    streak: int = 20  # consecutive responses that prove a flip converged
    transports: bool = True  # also measure the alternative upstream clients (bench.variant)
    experiments: bool = False  # also measure what-if settings of the gateway
    sections: frozenset[str] = frozenset({"1", "2", "3", "4", "5", "6", "7"})
    quick: bool = False

    def command(self) -> str:
        """The command line that reproduces a run with these options."""
        parts = ["python -m bench"]
        if self.quick:
            parts.append("--quick")
        defaults = Options.quick_defaults() if self.quick else Options()
        for name, flag in (
            ("rounds", "--rounds"),
            ("duration", "--duration"),
            ("warmup", "--warmup"),
            ("connections", "--connections"),
            ("flips", "--flips"),
        ):
            value = getattr(self, name)
            if value != getattr(defaults, name):
                parts.append(f"{flag} {value:g}")
        if not self.transports:
            parts.append("--no-transports")
        if self.experiments:
            parts.append("--experiments")
        if self.sections != Options().sections:
            parts.append("--only " + ",".join(sorted(self.sections)))
        return " ".join(parts)

    @staticmethod
    def quick_defaults() -> Options:
        return Options(rounds=2, duration=1, warmup=1, flips=5, streak=10, quick=True)


# --- small helpers ------------------------------------------------------------


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the table."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Cores:
    """Where servers and load run: separate cores when the machine has two."""

    server: int | None
    load: int | None

    @classmethod
    def detect(cls) -> Cores:
        allowed = sorted(os.sched_getaffinity(0))
        if len(allowed) < 2 or shutil.which("taskset") is None:
            return cls(None, None)
        return cls(allowed[0], allowed[1])

    def pin(self, core: int | None, argv: Sequence[str]) -> list[str]:
        return ["taskset", "-c", str(core), *argv] if core is not None else list(argv)

    def describe(self) -> str:
        if self.server is None:
            return "no pinning (fewer than 2 cores, or no taskset)"
        return f"servers on core {self.server}, wrk on core {self.load}"


@contextlib.contextmanager
def workspace(prefix: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A temporary directory holding a seeded bookstore database, and the environment
    the servers run with; Ctrl-C and SIGTERM unwind it alike."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp, terminate_on_sigterm():
        workdir = Path(tmp)
        db = workdir / "bookstore.db"
        seed_database(db)
        yield workdir, server_env(db)


def server_env(db: Path) -> dict[str, str]:
    """This environment without the gateway's own settings, on database `db`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env["BOOKSTORE_DB"] = str(db)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def seed_database(path: Path) -> None:
    """A fresh bookstore with a few books, through the apps' own schema."""
    os.environ["BOOKSTORE_DB"] = str(path)
    from legacy_flask import db

    conn = db.connect()
    try:
        books = [
            ("Dune", "Frank Herbert", 1965),
            ("Neuromancer", "William Gibson", 1984),
            ("The Left Hand of Darkness", "Ursula K. Le Guin", 1969),
            ("Snow Crash", "Neal Stephenson", 1992),
            ("Kindred", "Octavia E. Butler", 1979),
        ]
        conn.executemany("INSERT INTO books (title, author, year) VALUES (?, ?, ?)", books)
    finally:
        conn.close()
    check = sqlite3.connect(path)
    try:
        (count,) = check.execute("SELECT count(*) FROM books").fetchone()
    finally:
        check.close()
    if count != len(books):
        raise RuntimeError(f"seeding the database failed: {count} books")


# --- external tools -------------------------------------------------------------


def ensure_tool(binary: str, package: str) -> str | None:
    """The tool's path, installing its Debian package first when it is missing.

    Installs non-interactively with apt-get, as root or through passwordless
    sudo; returns None (and says why) when that is not possible.
    """
    found = shutil.which(binary) or _sbin(binary)
    if found:
        return found
    if shutil.which("apt-get") is None:
        log(f"{binary} is missing and there is no apt-get; install {package} yourself")
        return None
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            log(f"{binary} is missing; install {package} (needs root)")
            return None
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    log(f"{binary} is missing: installing the Debian package {package}")
    for attempt in range(2):
        done = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
        if done.returncode == 0:
            break
        if attempt == 0:  # a stale package index is the usual reason
            subprocess.run(
                [*prefix, "apt-get", "update", "-qq"], env=env, capture_output=True, check=False
            )
    else:
        log(f"installing {package} failed: {done.stderr.strip()[-400:]}")
        return None
    return shutil.which(binary) or _sbin(binary)


def _sbin(binary: str) -> str | None:
    for directory in ("/usr/sbin", "/sbin"):
        candidate = Path(directory, binary)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def python_module_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# --- server processes -------------------------------------------------------------


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Linux only: the child gets SIGTERM if the harness dies without cleaning up.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(slots=True)
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """Every live process of this server (its process group)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == self.process.pid:
                    found.append(int(entry))
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server's processes."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / ticks

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ServerFailed(RuntimeError):
    pass


def applied_sha(server: Server) -> str | None:
    """The sha256 of the route file a gateway serves (its `GET /-/routes`)."""
    try:
        with urllib.request.urlopen(server.base + "/-/routes", timeout=10) as response:
            sha: str = json.load(response)["sha256"]
            return sha
    except OSError:
        return None


def reload_and_settle(
    server: Server, config: Path, text: str | None = None, timeout: float = 120.0
) -> float:
    """Give `config` new content (`text`, or else a comment appended: the same
    table), wait until the gateway has applied it, and until the heap refreeze
    that follows a reload is done. Returns the seconds from the edit until the
    gateway said it applied the file."""
    before = applied_sha(server)
    if text is None:
        with config.open("a") as f:
            f.write(f"# edited at {time.time()}\n")
    else:
        tmp = config.with_name(config.name + ".new")
        tmp.write_text(text)
        tmp.replace(config)
    edited = time.monotonic()
    while applied_sha(server) == before:
        if time.monotonic() - edited > timeout:
            raise ServerFailed(f"{server.name} did not apply the edited {config}")
        time.sleep(0.05)
    took = time.monotonic() - edited
    time.sleep(REFREEZE_DELAY + 1)
    return took


class Processes:
    """Starts servers and guarantees they are stopped when the block ends."""

    def __init__(self, workdir: Path, cores: Cores, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.cores = cores
        self.env = env
        self._servers: list[Server] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        port: int,
        ready_path: str | None = "/",
        env: dict[str, str] | None = None,
        timeout: float = 90.0,
        pin: bool = True,
    ) -> Server:
        log_path = self.workdir / f"{name.replace(' ', '_').replace('/', '_')}.log"
        command = self.cores.pin(self.cores.server, argv) if pin else list(argv)
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**self.env, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, out of reach of Ctrl-C
                preexec_fn=_die_with_parent,
            )
        server = Server(name, port, process, log_path)
        self._servers.append(server)
        if ready_path is not None:
            self.wait_ready(server, ready_path, timeout)
        return server

    def wait_ready(self, server: Server, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        answering_since: float | None = None
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise ServerFailed(
                    f"{server.name} exited with code {server.process.returncode}:\n"
                    + server.log_tail()
                )
            status = http_status(server.port, path)
            if status == 200:
                return
            if status is not None:
                # Up, but answering something else: give it a moment, not the whole timeout.
                answering_since = answering_since or time.monotonic()
                if time.monotonic() - answering_since > 10:
                    raise ServerFailed(
                        f"{server.name} answers {path} with {status}:\n{server.log_tail()}"
                    )
            time.sleep(0.05)
        raise ServerFailed(f"{server.name} was not ready within {timeout:g}s:\n{server.log_tail()}")

    @property
    def servers(self) -> list[Server]:
        return list(self._servers)

    def stop(self, server: Server) -> None:
        if server in self._servers:
            self._servers.remove(server)
        _stop_group(server.process)

    def stop_all(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(server.process.pid, signal.SIGTERM)
        for server in servers:
            _stop_group(server.process)


def _stop_group(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    # The leader may be gone while workers linger; the group id still names them.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)


def http_status(port: int, path: str, method: str = "GET") -> int | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=2)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


# --- load with wrk -----------------------------------------------------------------


_WRK_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


@dataclass(frozen=True, slots=True)
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: int  # socket errors and non-2xx/3xx answers
    cpu: tuple[float, ...]  # share of one core used by each watched server
    foreign: float = 0.0  # share of a core used meanwhile by processes not ours


@dataclass(slots=True)
class Summary:
    runs: list[Load] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.runs)

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.runs)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.runs)

    def cpu(self, index: int = 0) -> float:
        return statistics.median(r.cpu[index] for r in self.runs if len(r.cpu) > index)

    def cost(self, index: int = 0) -> float:
        """CPU seconds per request of a watched server."""
        return statistics.median(r.cpu[index] / r.rps for r in self.runs if r.rps)


def _busy_seconds() -> float:
    """CPU time the whole machine has spent busy (user, nice, system), all cores."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return sum(int(x) for x in fields[1:4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """This process and its reaped children (wrk): CPU time so far."""
    me, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


class Wrk:
    def __init__(
        self,
        binary: str,
        workdir: Path,
        cores: Cores,
        connections: int,
        servers: Callable[[], Sequence[Server]] = list,
    ) -> None:
        self.binary = binary
        self.cores = cores
        self.connections = connections
        self.script = workdir / "report.lua"
        self.script.write_text(_WRK_REPORT)
        self.servers = servers
        self.foreign: list[float] = []  # share of a core used by others, per kept run
        self.reruns = 0
        self.waiting_budget = 90.0  # seconds

    def _ours(self) -> float:
        return sum(s.cpu_seconds() for s in self.servers()) + _own_seconds()

    def wait_quiet(self, limit: float = QUIET, patience: float = 20.0) -> None:
        """Wait until other processes leave the cores alone: up to `patience` s each
        time, and `waiting_budget` s over the whole run, so a busy machine slows a run
        down only so much (its table then says the machine was busy)."""
        deadline = time.monotonic() + min(patience, self.waiting_budget)
        started_waiting = time.monotonic()
        try:
            while True:
                busy, ours, started = _busy_seconds(), self._ours(), time.monotonic()
                time.sleep(0.25)
                elapsed = time.monotonic() - started
                foreign = (_busy_seconds() - busy - (self._ours() - ours)) / elapsed
                if foreign < limit or time.monotonic() > deadline:
                    return
        finally:
            self.waiting_budget -= time.monotonic() - started_waiting

    def run(self, url: str, seconds: int, watch: Sequence[Server] = ()) -> Load:
        argv = self.cores.pin(
            self.cores.load,
            [
                self.binary,
                "-t1",
                f"-c{self.connections}",
                f"-d{max(seconds, 1)}s",
                "--timeout",
                "5s",
                "-s",
                str(self.script),
                url,
            ],
        )
        before = [s.cpu_seconds() for s in watch]
        ours_before = self._ours()
        busy_before = _busy_seconds()
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        busy = _busy_seconds() - busy_before
        foreign = max(0.0, busy - (self._ours() - ours_before)) / elapsed
        after = [s.cpu_seconds() for s in watch]
        line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH ")), None)
        if done.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed on {url}: {done.stderr.strip() or done.stdout}")
        requests, duration_us, p50, p99, slowest, *errors = (float(x) for x in line.split()[1:])
        return Load(
            rps=requests / (duration_us / 1e6),
            p50_ms=p50 / 1000,
            p99_ms=p99 / 1000,
            max_ms=slowest / 1000,
            errors=int(sum(errors)),
            cpu=tuple((a - b) / elapsed for a, b in zip(after, before, strict=True)),
            foreign=foreign,
        )

    def measure(self, url: str, seconds: int, watch: Sequence[Server]) -> Load:
        """A run that counts: redone once if other processes took a core's share meanwhile."""
        load = self.run(url, seconds, watch)
        if load.foreign > RERUN:
            self.reruns += 1
            self.wait_quiet()
            load = self.run(url, seconds, watch)
        self.foreign.append(load.foreign)
        return load


@dataclass(frozen=True, slots=True)
class Variant:
    """One side of a comparison: a URL to load and the servers whose CPU to watch."""

    name: str
    url: str
    watch: tuple[Server, ...]


# --- the table ------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    section: str
    case: str
    result: str = ""
    p50: str = ""
    p99: str = ""
    cpu: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""


def throughput_row(
    section: str,
    case: str,
    summary: Summary,
    cpu_labels: Sequence[str] = (),
    cost: bool = False,
) -> Row:
    """A row of throughput and latency; `cost` adds the first server's CPU per request."""
    cpu = ""
    if summary.runs and summary.runs[0].cpu:
        labels = cpu_labels or [""] * len(summary.runs[0].cpu)
        shares = [f"{label}{summary.cpu(i) * 100:.0f}%" for i, label in enumerate(labels)]
        if cost and summary.rps:
            shares[0] += f" ({summary.cost(0) * 1e6:,.0f} us/req)"
        cpu = " ".join(shares).strip()
    result = f"{summary.rps:,.0f} req/s"
    if summary.errors:
        result += f" ({summary.errors} errors)"
    return Row(section, case, result, f"{summary.p50_ms:.2f} ms", f"{summary.p99_ms:.2f} ms", cpu)


def judge(
    row: Row, ratio: float, target: float, *, higher_is_better: bool = True, what_if: bool = False
) -> Row:
    """Fill in the ratio and whether it meets the target; a what-if row only says if it would."""
    row.ratio = f"{ratio:.3f}x"
    row.target = f"{'>=' if higher_is_better else '<='} {target:g}x"
    met = ratio >= target if higher_is_better else ratio <= target
    if what_if:
        row.verdict = "(would meet)" if met else "(would miss)"
    else:
        row.verdict = "met" if met else "MISSED"
    return row


_HEADERS = ("#", "case", "result", "p50", "p99", "server cpu", "ratio", "target", "")


def render(rows: Sequence[Row]) -> str:
    cells = [
        [r.section, r.case, r.result, r.p50, r.p99, r.cpu, r.ratio, r.target, r.verdict]
        for r in rows
    ]
    widths = [max([len(h), *(len(c[i]) for c in cells)]) for i, h in enumerate(_HEADERS)]
    right = {2, 3, 4, 6}

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)
        ]
        return "  ".join(out).rstrip()

    lines = [line(_HEADERS), "  ".join("-" * w for w in widths)]
    previous = None
    for row, values in zip(rows, cells, strict=True):
        if previous is not None and row.section != previous:
            lines.append("")
        lines.append(line(values))
        previous = row.section
    return "\n".join(lines)


# --- the shared run context ---------------------------------------------------------------


@dataclass(slots=True)
class Context:
    opts: Options
    workdir: Path
    cores: Cores
    procs: Processes
    wrk: Wrk | None
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    def gateway(self, config: Path, port: int, *extra: str) -> list[str]:
        """`gateway serve` with the options every gateway of the benchmark shares."""
        return self.python(
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(config),
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            *extra,
        )

    def gateway_variant(
        self, variant: Sequence[str], config: Path, port: int, *extra: str
    ) -> list[str]:
        """The same `gateway serve` command, run by `bench.variant` with `variant` options."""
        serve = self.gateway(config, port, *extra)[3:]  # from "serve" on
        return self.python("-m", "bench.variant", *variant, "--", *serve)

    def uvicorn(self, target: str, port: int, *extra: str) -> list[str]:
        """uvicorn with the options `gateway serve` gives it (auto loop and HTTP parser)."""
        return self.python(
            "-m",
            "uvicorn",
            target,
            "--host",
            HOST,
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--lifespan",
            "on",
            "--no-proxy-headers",
            "--no-server-header",
            *extra,
        )


Section = Callable[[Context], None]


@dataclass(frozen=True, slots=True)
class _Member:
    name: str
    argv: list[str]
    port: int
    also_watch: tuple[Server, ...]
    pin: bool
    timeout: float
    fresh: bool
    prepare: Callable[[], None] | None
    settle: Callable[[Server], None] | None


class Group:
    """The servers of one comparison, loaded in turns, stopped together.

    Two processes of the very same server differ by up to 10-15% in
    throughput on a small virtual machine (memory placement, hash seeds), as
    much as the time of day does. So every round starts a fresh process of
    each variant (on the same port), warms it up, and loads the variants in a
    rotated order: a median over rounds is then a median over processes and
    moments alike. A member started with `fresh=False` (row 5's upstream,
    which every variant shares) keeps its process for the whole comparison.
    """

    def __init__(self, ctx: Context, path: str) -> None:
        self.ctx = ctx
        self.path = path
        self.members: list[_Member] = []
        self.servers: dict[str, Server] = {}  # the current process of each member

    def start(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        also_watch: Sequence[Server] = (),
        pin: bool = True,
        timeout: float = 90.0,
        fresh: bool = True,
        prepare: Callable[[], None] | None = None,
        settle: Callable[[Server], None] | None = None,
    ) -> Server:
        """Start a server, wait until it answers, and make it a variant of the comparison.

        `prepare`, if given, runs before each of its processes starts, and
        `settle` on each once it answers, before any load: to bring it into the
        state to measure (row 4's gateway whose table came by a reload).
        """
        if prepare is not None:
            prepare()
        server = self.ctx.procs.start(
            name, argv, port=port, ready_path=self.path, pin=pin, timeout=timeout
        )
        if settle is not None:
            settle(server)
        self.servers[name] = server
        member = _Member(name, argv, port, tuple(also_watch), pin, timeout, fresh, prepare, settle)
        self.members.append(member)
        return server

    def _restart(self) -> None:
        """New processes for the fresh members: all launched, then each awaited."""
        procs = self.ctx.procs
        fresh = [m for m in self.members if m.fresh]
        for member in fresh:
            procs.stop(self.servers[member.name])
        for member in fresh:
            if member.prepare is not None:
                member.prepare()
            self.servers[member.name] = procs.start(
                member.name, member.argv, port=member.port, ready_path=None, pin=member.pin
            )
        for member in fresh:
            procs.wait_ready(self.servers[member.name], self.path, member.timeout)
            if member.settle is not None:
                member.settle(self.servers[member.name])

    def _variants(self) -> list[Variant]:
        return [
            Variant(
                m.name,
                self.servers[m.name].base + self.path,
                (self.servers[m.name], *m.also_watch),
            )
            for m in self.members
        ]

    def run(self) -> dict[str, Summary]:
        """Rounds of: fresh processes, a warm-up each, then each variant loaded in turn."""
        wrk, opts = self.ctx.wrk, self.ctx.opts
        assert wrk is not None
        results = {m.name: Summary() for m in self.members}
        for round_index in range(opts.rounds):
            if round_index:
                self._restart()
            variants = self._variants()
            wrk.wait_quiet()
            for variant in variants if opts.warmup else ():
                wrk.run(variant.url, opts.warmup)
            shift = round_index % len(variants)
            for variant in [*variants[shift:], *variants[:shift]]:
                load = wrk.measure(variant.url, opts.duration, variant.watch)
                results[variant.name].runs.append(load)
                log(
                    f"  round {round_index + 1}/{opts.rounds} {variant.name}: "
                    f"{load.rps:,.0f} req/s p50 {load.p50_ms:.2f} ms "
                    f"p99 {load.p99_ms:.2f} ms" + (f" errors {load.errors}" if load.errors else "")
                )
        return results

    def stop(self) -> None:
        for server in self.servers.values():
            self.ctx.procs.stop(server)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into the same unwinding as Ctrl-C, so cleanup always runs."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
