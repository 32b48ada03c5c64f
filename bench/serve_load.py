"""Load test of `biasjudge serve` on loopback (issue 12), in ONE run, bounded in count and time:

    .venv/bin/python bench/serve_load.py [--max-minutes 25] [--soak-requests 5000]

The servers are real `biasjudge serve` subprocesses (the shipped judge `llamacpp:embedded`,
order-debiased, score mode: `create_app(ServeSettings())` with only the port and the batching
flags changed), so their resident memory is honest (/proc/PID/status VmRSS). The load comes from
httpx (asyncio; N clients = N concurrent connections, each sending its next request when its last
was answered) with real holdout pairs (eval_set_unlabeled.jsonl via biasjudge.io.read_records),
every request with a unique id that must come back as the judgment's pair_id.

1. load: 1, 4 and 16 concurrent clients against two servers started side by side, micro-batching
   on (default --max-batch 16) and one at a time (--max-batch 1). At each level each mode gets
   `--requests` requests in `--rounds` chunks, the modes alternating ABBA on the same pairs, so a
   change in the machine's load falls on both alike: throughput (requests/s), p50/p99 latency, the
   batch sizes the server made; the micro-batching gain = batched / one-at-a-time throughput.
2. overload: a third server with --max-queue 4 and 16 clients: the deliberate 503s (queue_full,
   Retry-After), each retried as biasjudge.Client does; every request still answered exactly once,
   and the server judged exactly as many pairs as it answered (its verdict counters).
3. soak, stand-in judge: --soak-requests (5,000) with 16 clients against `--judge random:1` (the
   whole HTTP path, batcher and metrics, no model): 0 lost, 0 answered twice, 0 503s, RSS flat.
4. soak, real model: the batched server of (1), 16 clients, up to --soak-requests, stopped by the
   time cap (--max-minutes for the whole bench) if it comes first: the same checks, RSS sampled
   every 5 s; the time 5,000 requests would take at the measured rate is reported.
   `--soak-only` runs this phase alone (into serve_soak.json); `--no-soak-debias` sends its
   requests with `debias: false` (one order, one forward pass each: 5,000 real-model requests in
   about 40 minutes here instead of 77).

The CPUs may be shared. Before each phase the bench waits while another `python bench/...` runs,
and while other processes keep more than --quiet-cores busy (at most --quiet-budget-minutes in
all; waits do not count against the time cap), and every phase records how many cores other
processes used while it ran (/proc/stat minus this bench's and its servers' CPU time).
Writes bench/results/serve_load.json (every number, the command) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from biasjudge.config import resolve_data_dir
from biasjudge.io import read_records
from biasjudge.records import Pair

RESULTS = Path(__file__).resolve().parent / "results" / "serve_load.json"
REPO = Path(__file__).resolve().parent.parent
LEVELS = (1, 4, 16)
RSS_FLAT_SHARE = 0.05
"""RSS is called flat when it grew by at most this share of its start over the soak."""


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    started_s: float
    ready_rss_mib: float


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    """Resident memory of a process in MiB, from /proc/PID/status (VmRSS, or VmHWM: the peak)."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else math.nan


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(judge: str, log_dir: Path, name: str, *flags: str) -> Iterator[Server]:
    """`biasjudge serve` as a subprocess on a free loopback port, until /readyz says 200."""
    port = _free_port()
    command = [sys.executable, "-c", "from biasjudge.cli.main import main; main()", "serve", "--judge", judge]
    command += ["--port", str(port), *flags]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    log = (log_dir / f"{name}.log").open("wb")  # one JSON line per request: a file, never a full pipe
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 600
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.time() > deadline:
                log.flush()
                tail = (log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"server {name} did not get ready:\n{tail}")
            time.sleep(0.2)
        yield Server(url, process, time.perf_counter() - started, rss_mib(process.pid))
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def server_counters(url: str) -> dict[str, float]:
    """Judged pairs (verdict counters), requests by status, batch-size sum/count, from /metrics."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    out: dict[str, float] = {"verdicts": 0.0}
    for line in text.splitlines():
        if line.startswith("biasjudge_verdicts_total{"):
            out["verdicts"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("biasjudge_batch_size_sum "):
            out["batch_sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("biasjudge_batch_size_count "):
            out["batch_count"] = float(line.rsplit(" ", 1)[1])
        elif m := re.match(r'biasjudge_requests_total\{route="/v1/judge",status="(\d+)"\} (\S+)', line):
            out[f"status_{m.group(1)}"] = float(m.group(2))
    return out


# --------------------------------------------------------------------------- the clients


@dataclass
class Outcome:
    rid: str
    status: int | None  # the final answer's status; None: a transport error
    seconds: float  # the final attempt's latency
    total_seconds: float  # from the first attempt to the final answer (retries included)
    returned_id: str | None = None
    batch_size: int | None = None
    retries_503: int = 0
    error: str | None = None
    finished: float = field(default_factory=time.perf_counter)  # when the final answer came


@dataclass
class Phase:
    name: str
    outcomes: list[Outcome] = field(default_factory=list)
    dispatched: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    deliberate_503s: int = 0
    bad_503s: list[str] = field(default_factory=list)


def body_of(pair: Pair, rid: str, debias: bool = True) -> dict[str, Any]:
    return {
        "id": rid,
        "question": pair.question_text,
        "choices": [c.text for c in pair.answer_choices],
        "response_a": pair.response_a.text,
        "response_b": pair.response_b.text,
        "mode": "score",
        "debias": debias,
    }


async def _drive(
    url: str, jobs: list[tuple[str, dict[str, Any]]], clients: int, deadline: float | None, retry_503: bool
) -> Phase:
    phase = Phase("")
    queue = iter(jobs)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300.0, limits=limits) as client:

        async def worker() -> None:
            for rid, body in queue:  # one shared iterator: each job goes to exactly one client
                if deadline is not None and time.perf_counter() > deadline:
                    return
                phase.dispatched.append(rid)
                first = time.perf_counter()
                retries = 0
                while True:
                    start = time.perf_counter()
                    try:
                        reply = await client.post("/v1/judge", json=body)
                    except httpx.TransportError as exc:
                        now = time.perf_counter()
                        phase.outcomes.append(Outcome(rid, None, now - start, now - first, error=repr(exc)))
                        break
                    now = time.perf_counter()
                    if reply.status_code == 503:
                        error = reply.json().get("error", {})
                        deliberate = error.get("type") == "queue_full" and reply.headers.get("retry-after")
                        if deliberate:
                            phase.deliberate_503s += 1
                        else:
                            phase.bad_503s.append(reply.text[:200])
                        if retry_503 and deliberate and retries < 100:
                            retries += 1
                            await asyncio.sleep(float(reply.headers["retry-after"]))
                            continue
                    outcome = Outcome(rid, reply.status_code, now - start, now - first, retries_503=retries)
                    if reply.status_code == 200:
                        answer = reply.json()
                        outcome.returned_id = answer["judgment"]["pair_id"]
                        outcome.batch_size = answer["batch_size"]
                    else:
                        outcome.error = reply.text[:200]
                    phase.outcomes.append(outcome)
                    break

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        phase.wall_s = time.perf_counter() - started
    return phase


def drive(
    url: str,
    jobs: list[tuple[str, dict[str, Any]]],
    clients: int,
    *,
    deadline: float | None = None,
    retry_503: bool = False,
) -> Phase:
    return asyncio.run(_drive(url, jobs, clients, deadline, retry_503))


def jobs_for(
    pairs: list[Pair], prefix: str, n: int, offset: int = 0, debias: bool = True
) -> list[tuple[str, dict[str, Any]]]:
    """`n` requests over the holdout pairs from `offset` (cycling), ids `prefix-0`, `prefix-1`, ..."""
    out = []
    for i in range(n):
        rid = f"{prefix}-{i}"
        out.append((rid, body_of(pairs[(offset + i) % len(pairs)], rid, debias)))
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def exactly_once(phase: Phase, judged_by_server: float) -> dict[str, Any]:
    """Every dispatched id answered once, with its own id; none lost, none twice, no transport
    error; and the server judged exactly as many pairs as it answered (its verdict counters)."""
    answered = Counter(o.rid for o in phase.outcomes)
    ok = [o for o in phase.outcomes if o.status == 200]
    returned = Counter(o.returned_id for o in ok)
    return {
        "requests_sent": len(phase.dispatched),
        "distinct_ids_sent": len(set(phase.dispatched)),
        "answered_200": len(ok),
        # lost: sent and never answered by the server (no HTTP status: a transport error, or no outcome)
        "lost": len(set(phase.dispatched) - {o.rid for o in phase.outcomes if o.status is not None}),
        "answered_twice": sum(c - 1 for c in answered.values() if c > 1)
        + sum(c - 1 for c in returned.values() if c > 1),
        "wrong_id_returned": sum(1 for o in ok if o.returned_id != o.rid),
        "transport_errors": sum(1 for o in phase.outcomes if o.status is None),
        "other_errors": sum(1 for o in phase.outcomes if o.status not in (200, None)),
        "server_judged_pairs": judged_by_server,
        "server_judged_equals_answered": judged_by_server == len(ok),
        "first_errors": [o.error for o in phase.outcomes if o.status != 200][:3],
    }


def summary(phase: Phase) -> dict[str, Any]:
    ok = [o for o in phase.outcomes if o.status == 200]
    latencies = [o.seconds * 1000 for o in ok]
    sizes = [o.batch_size for o in ok if o.batch_size is not None]
    return {
        "requests": len(phase.outcomes),
        "ok": len(ok),
        "wall_s": round(phase.wall_s, 2),
        "throughput_rps": round(len(ok) / phase.wall_s, 3) if phase.wall_s else None,
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1) if latencies else None,
        "mean_batch_size": round(sum(sizes) / len(sizes), 2) if sizes else None,
        "max_batch_size": max(sizes) if sizes else None,
    }


# --------------------------------------------------------------------------- a shared machine


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds spent busy by all cores since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def _process_cpu_s(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(stat[11]) + int(stat[12])) / CLOCK_TICKS  # utime + stime, all threads


class CpuMeter:
    """CPU cores used by OTHER processes (not this bench, not its servers) over an interval."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = [os.getpid(), *pids]
        self.start = (time.perf_counter(), _machine_busy_s(), sum(_process_cpu_s(p) for p in self.pids))

    def others_cores(self) -> float:
        wall, busy, mine = time.perf_counter(), _machine_busy_s(), sum(_process_cpu_s(p) for p in self.pids)
        return round(max(0.0, (busy - self.start[1]) - (mine - self.start[2])) / max(wall - self.start[0], 1e-9), 2)


def _self_and_ancestors() -> set[int]:
    """This process and those above it (a `timeout` or shell running this bench matches pgrep too)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


class Gate:
    """Before each phase: wait while another `python bench/...` runs (always), and while other
    processes keep more than `quiet_cores` busy (at most `quiet_budget_s` over the whole run, then
    measure anyway: every phase records the other processes' CPU use it ran beside)."""

    def __init__(self, quiet_cores: float, quiet_budget_s: float) -> None:
        self.quiet_cores, self.quiet_budget_s = quiet_cores, quiet_budget_s
        self.log: list[dict[str, Any]] = []
        self.waited_s = 0.0
        self.quiet_waited_s = 0.0

    def __call__(self, phase: str, pids: list[int]) -> None:
        bench_wait = quiet_wait = 0.0
        while True:
            found = subprocess.run(["pgrep", "-f", "python bench/"], capture_output=True, text=True, check=False)
            if [p for p in found.stdout.split() if int(p) not in _self_and_ancestors()]:
                time.sleep(10)
                bench_wait += 10
                continue
            if self.quiet_waited_s + quiet_wait >= self.quiet_budget_s:
                break
            meter = CpuMeter(pids)
            time.sleep(3)
            if meter.others_cores() <= self.quiet_cores:
                break
            time.sleep(7)
            quiet_wait += 10
        self.quiet_waited_s += quiet_wait
        self.waited_s += bench_wait + quiet_wait
        if bench_wait or quiet_wait:
            self.log.append({"phase": phase, "waited_for_other_bench_s": bench_wait, "waited_for_quiet_s": quiet_wait})
            print(
                f"  waited {bench_wait:.0f} s (other bench) + {quiet_wait:.0f} s (busy CPUs) before {phase}", flush=True
            )


# --------------------------------------------------------------------------- the phases


def measured(server: Server, pids: list[int], jobs: list[tuple[str, dict[str, Any]]], clients: int,
             **kwargs: Any) -> tuple[Phase, dict[str, float], dict[str, float], float]:  # fmt: skip
    """Drive `jobs`; the server's counters before and after; the other processes' CPU cores."""
    before = server_counters(server.url)
    meter = CpuMeter(pids)
    phase = drive(server.url, jobs, clients, **kwargs)
    others = meter.others_cores()
    return phase, before, server_counters(server.url), others


def load_level(
    servers: dict[str, Server], pairs: list[Pair], clients: int, n: int, offset: int, rounds: int, gate: Gate
) -> list[dict[str, Any]]:
    """`n` requests per mode at `clients` clients, in `rounds` chunks, the modes alternating ABBA
    on the same pairs (drift in the machine's load falls on both modes alike)."""
    pids = [s.process.pid for s in servers.values()]
    chunks: dict[str, list[tuple[Phase, dict[str, float], dict[str, float], float]]] = {m: [] for m in servers}
    size = n // rounds
    for r in range(rounds):
        order = list(servers) if r % 2 == 0 else list(reversed(servers))
        for mode in order:
            gate(f"load c={clients} {mode} round {r}", pids)
            jobs = jobs_for(pairs, f"load-c{clients}-{mode}-r{r}", size, offset + r * size)
            chunks[mode].append(measured(servers[mode], pids, jobs, clients))
    rows = []
    for mode, parts in chunks.items():
        phase = Phase(f"c{clients}-{mode}")
        for part, _, _, _ in parts:
            phase.outcomes += part.outcomes
            phase.dispatched += part.dispatched
            phase.wall_s += part.wall_s
        batches = sum(a.get("batch_count", 0) - b.get("batch_count", 0) for _, b, a, _ in parts)
        batched_pairs = sum(a.get("batch_sum", 0) - b.get("batch_sum", 0) for _, b, a, _ in parts)
        judged = sum(a["verdicts"] - b["verdicts"] for _, b, a, _ in parts)
        row = {"clients": clients, "mode": mode, **summary(phase)}
        row["server_mean_batch"] = round(batched_pairs / max(batches, 1), 2)
        row["chunks"] = [
            {"requests": len(p.outcomes), "wall_s": round(p.wall_s, 1),
             "throughput_rps": round(sum(o.status == 200 for o in p.outcomes) / p.wall_s, 3),
             "other_processes_cpu_cores": others}
            for p, _, _, others in parts
        ]  # fmt: skip
        row["other_processes_cpu_cores_max"] = max(c["other_processes_cpu_cores"] for c in row["chunks"])
        row["checks"] = exactly_once(phase, judged)
        rows.append(row)
        print(f"load c={clients:<2} {mode:<13} {row['throughput_rps']:.3f} req/s  p50 {row['p50_ms']:.0f} ms  "
              f"p99 {row['p99_ms']:.0f} ms  batch {row['server_mean_batch']}  others' CPU "
              f"{[c['other_processes_cpu_cores'] for c in row['chunks']]}", flush=True)  # fmt: skip
    return rows


def timeline(phase: Phase, samples: list[tuple[float, float, float]], started: float) -> list[dict[str, Any]]:
    """Per minute of a soak: answers, errors, latency, RSS and the other processes' CPU use."""
    out = []
    end = max((o.finished - started for o in phase.outcomes), default=0.0)
    for minute in range(int(end // 60) + 1):
        lo, hi = minute * 60, (minute + 1) * 60
        done = [o for o in phase.outcomes if lo <= o.finished - started < hi]
        ok = [o.seconds * 1000 for o in done if o.status == 200]
        near = [s for s in samples if lo < s[0] <= hi + 5]
        out.append({
            "minute": minute, "answers": len(done), "ok": len(ok), "errors": len(done) - len(ok),
            "p50_ms": round(percentile(ok, 50), 0) if ok else None, "max_ms": round(max(ok), 0) if ok else None,
            "rss_mib": near[-1][1] if near else None,
            "others_cpu_cores": round(sum(s[2] for s in near) / len(near), 2) if near else None,
        })  # fmt: skip
    return out


def soak(
    server: Server,
    pairs: list[Pair],
    prefix: str,
    n: int,
    clients: int,
    deadline: float | None,
    debias: bool = True,
) -> dict[str, Any]:
    """`n` requests from `clients` clients (stopping at `deadline`), RSS sampled every 5 s."""
    pid = server.process.pid
    samples: list[tuple[float, float, float]] = []  # (s since the start, RSS MiB, others' CPU cores since the last)
    stop = asyncio.Event()
    started = time.perf_counter()

    async def sampler() -> None:
        meter = CpuMeter([pid])
        while True:
            samples.append((round(time.perf_counter() - started, 1), round(rss_mib(pid), 1), meter.others_cores()))
            if stop.is_set():
                return
            meter = CpuMeter([pid])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)

    async def run() -> Phase:
        task = asyncio.create_task(sampler())
        phase = await _drive(server.url, jobs, clients, deadline, retry_503=False)
        stop.set()
        await task
        return phase

    # Warm up with requests of the soak's own kind (not counted), so that the judge it needs is loaded
    # before RSS is read: a server loads a judge per kind of request on first use.
    warm = drive(server.url, jobs_for(pairs, f"warm-{prefix}", 2, offset=len(pairs) - 2, debias=debias), 1)
    assert all(o.status == 200 for o in warm.outcomes), warm.outcomes
    jobs = jobs_for(pairs, prefix, n, debias=debias)
    before = server_counters(server.url)
    meter = CpuMeter([pid])
    rss_start = rss_mib(pid)
    started = time.perf_counter()
    phase = asyncio.run(run())
    rss_end = rss_mib(pid)
    others = meter.others_cores()
    after = server_counters(server.url)
    checks = exactly_once(phase, after["verdicts"] - before["verdicts"])
    checks["503s"] = phase.deliberate_503s + len(phase.bad_503s)
    checks["504s"] = sum(1 for o in phase.outcomes if o.status == 504)
    out: dict[str, Any] = {
        "clients": clients,
        "debias": debias,
        "requests_planned": n,
        "requests_done": len(phase.outcomes),
        "stopped_by_time_cap": len(phase.outcomes) < n,
        **summary(phase),
        "checks": checks,
        "rss_start_mib": round(rss_start, 1),
        "rss_end_mib": round(rss_end, 1),
        "rss_growth_mib": round(rss_end - rss_start, 1),
        "rss_peak_mib": round(rss_mib(pid, "VmHWM"), 1),
        "rss_flat": rss_end - rss_start <= RSS_FLAT_SHARE * rss_start,
        "other_processes_cpu_cores": others,
        "timeline_per_minute": timeline(phase, samples, started),
        "not_200": [
            {"at_s": round(o.finished - started, 1), "status": o.status, "after_s": round(o.seconds, 1),
             "error": (o.error or "")[:120]}
            for o in phase.outcomes if o.status != 200
        ][:30],
        "samples_s_rss_mib_others_cores": samples,
    }  # fmt: skip
    if out["throughput_rps"]:
        out["projected_s_for_5000"] = round(5000 / out["throughput_rps"], 0)
    return out


# --------------------------------------------------------------------------- the run


def phases_1_to_3(
    args: argparse.Namespace, pairs: list[Pair], logs: Path, batched: Server, gate: Gate, result: dict[str, Any]
) -> None:
    """Load (1), overload (2) and the stand-in soak (3), into `result`."""
    with serve(args.judge, logs, "one_at_a_time", "--max-batch", "1") as single:
        servers = {"batched": batched, "one_at_a_time": single}
        result["servers"] = {
            name: {"flags": "--max-batch 16 (default), --batch-wait-ms 5" if name == "batched" else "--max-batch 1",
                   "start_to_ready_s": round(s.started_s, 1), "rss_ready_mib": round(s.ready_rss_mib, 1)}
            for name, s in servers.items()
        }  # fmt: skip
        for name, s in servers.items():  # warm-up (not measured): the first calls pay one-off costs
            warm = drive(s.url, jobs_for(pairs, f"warm-{name}", 2, offset=len(pairs) - 2), 1)
            assert all(o.status == 200 for o in warm.outcomes), warm.outcomes
        # 1. load
        load: list[dict[str, Any]] = []
        offset = 0
        for clients, n in zip(LEVELS, args.requests, strict=True):
            load += load_level(servers, pairs, clients, n, offset, args.rounds, gate)
            offset += n
        result["load"] = load
        result["micro_batching_gain"] = {
            f"c{c}": round(
                next(r["throughput_rps"] for r in load if r["clients"] == c and r["mode"] == "batched")
                / next(r["throughput_rps"] for r in load if r["clients"] == c and r["mode"] == "one_at_a_time"),
                3,
            )
            for c in LEVELS
        }
        result["servers"]["one_at_a_time"]["rss_after_load_mib"] = round(rss_mib(single.process.pid), 1)

    # 2. overload: a small queue, deliberate 503s, each retried after Retry-After
    with serve(args.judge, logs, "overload", "--max-queue", "4") as small:
        pids = [batched.process.pid, small.process.pid]
        gate("overload", pids)
        jobs = jobs_for(pairs, "overload", args.overload_requests, offset=100)
        phase, before, after, others = measured(small, pids, jobs, 16, retry_503=True)
        checks = exactly_once(phase, after["verdicts"] - before["verdicts"])
        result["overload"] = {
            "server_flags": "--max-queue 4 (16 clients)",
            "clients": 16,
            **summary(phase),
            "deliberate_503s": phase.deliberate_503s,
            "other_503s": len(phase.bad_503s),
            "server_503s_counted": after.get("status_503", 0) - before.get("status_503", 0),
            "requests_that_were_retried": sum(1 for o in phase.outcomes if o.retries_503),
            "p99_ms_including_retries": round(
                percentile([o.total_seconds * 1000 for o in phase.outcomes if o.status == 200], 99), 1
            ),
            "checks": checks,
            "other_processes_cpu_cores": others,
        }
        print(f"overload: {phase.deliberate_503s} deliberate 503s, {checks}", flush=True)

    # 3. soak with the stand-in judge: the HTTP path alone, at the full count
    with serve("random:1", logs, "standin") as standin:
        gate("soak stand-in", [batched.process.pid, standin.process.pid])
        result["soak_standin"] = soak(standin, pairs, "soak-standin", args.soak_requests, args.soak_clients, None)
        print(f"soak (stand-in): {result['soak_standin']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--judge", default="llamacpp:embedded", help="the served judge (default: the shipped one)")
    parser.add_argument("--requests", type=int, nargs=3, default=[24, 48, 96], metavar=("C1", "C4", "C16"),
                        help="requests per mode at 1, 4 and 16 clients")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=2, help="chunks per mode and level (ABBA order)")
    parser.add_argument("--overload-requests", type=int, default=64)
    parser.add_argument("--soak-requests", type=int, default=5000)
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--max-minutes", type=float, default=25.0,
                        help="time cap of the whole bench, waits for a busy machine not counted")  # fmt: skip
    parser.add_argument("--quiet-cores", type=float, default=0.3,
                        help="before a phase, wait while other processes use more CPU cores than this")  # fmt: skip
    parser.add_argument("--quiet-budget-minutes", type=float, default=10.0,
                        help="at most this long in all waiting for a quiet machine; then measure anyway")  # fmt: skip
    parser.add_argument("--soak-debias", action=argparse.BooleanOptionalAction, default=True,
                        help="the real-model soak's requests judge both orders (--no-soak-debias: one order, "
                        "one forward pass per request, twice the requests in the same time)")  # fmt: skip
    parser.add_argument("--soak-only", action="store_true",
                        help="only the real-model soak (4), written to bench/results/serve_soak.json")  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None, help=f"default: {RESULTS.name}, serve_soak.json (--soak-only)"
    )
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="keep the servers' logs (a JSON line per request) here (default: a temp dir)")  # fmt: skip
    args = parser.parse_args()
    args.out = args.out or (RESULTS.with_name("serve_soak.json") if args.soak_only else RESULTS)
    bench_start = time.perf_counter()
    holdout = read_records(resolve_data_dir(args.data_dir) / "judge-from-scratch" / "eval_set_unlabeled.jsonl", Pair)
    pairs = holdout.records
    gate = Gate(args.quiet_cores, args.quiet_budget_minutes * 60)
    result: dict[str, Any] = {
        "command": shlex.join([sys.executable.replace(str(REPO) + "/", ""), *sys.argv]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_start": os.getloadavg()},
        "git": subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "judge": args.judge,
        "holdout_pairs": len(pairs),
        "request": "POST /v1/judge, one holdout pair per request, mode score, debias true (both orders combined)",
        "latency": "per request, client side (httpx, loopback), from sending to the whole answer",
        "throughput": "200 answers / wall time of the phase (all clients, first send to last answer)",
    }
    gate("start", [])
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        logs = args.log_dir or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        result["server_logs"] = str(args.log_dir) if args.log_dir else None
        batched = stack.enter_context(serve(args.judge, logs, "batched"))  # kept for the soak (4)
        if args.soak_only:
            warm = drive(batched.url, jobs_for(pairs, "warm-batched", 2, offset=len(pairs) - 2), 1)
            assert all(o.status == 200 for o in warm.outcomes), warm.outcomes
            result["servers"] = {"batched": {"flags": "--max-batch 16 (default), --batch-wait-ms 5",
                                             "start_to_ready_s": round(batched.started_s, 1),
                                             "rss_ready_mib": round(batched.ready_rss_mib, 1)}}  # fmt: skip
        else:
            phases_1_to_3(args, pairs, logs, batched, gate, result)

        # 4. soak with the real model: the batched server of (1) again, until the count or the time cap
        gate("soak real model", [batched.process.pid])
        deadline = bench_start + gate.waited_s + args.max_minutes * 60 - 30  # 30 s to stop servers, write the file
        result["soak_real_model"] = soak(
            batched, pairs, "soak", args.soak_requests, args.soak_clients, deadline, args.soak_debias
        )
        result["servers"]["batched"]["rss_after_soak_mib"] = result["soak_real_model"]["rss_end_mib"]
        print(f"soak (real model): {result['soak_real_model']}", flush=True)

    result["waits"] = gate.log
    result["machine"]["load_end"] = os.getloadavg()
    result["bench_wall_s"] = round(time.perf_counter() - bench_start, 1)
    result["bench_wall_s_without_waits"] = round(result["bench_wall_s"] - gate.waited_s, 1)
    result["table_markdown"] = table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["table_markdown"])


def table(result: dict[str, Any]) -> str:
    lines: list[str] = []
    if "load" in result:
        lines += [
            "| clients | mode | requests | throughput (req/s) | p50 (ms) | p99 (ms) | mean batch | "
            "others' CPU (cores) |",
            "|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in result["load"]:
            lines.append(
                f"| {row['clients']} | {row['mode'].replace('_', '-')} | {row['ok']} | {row['throughput_rps']:.2f} | "
                f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['server_mean_batch']} | "
                f"≤ {row['other_processes_cpu_cores_max']:.2f} |"
            )
        gain = ", ".join(f"{k[1:]} clients {v:.2f}x" for k, v in result["micro_batching_gain"].items())
        lines += ["", f"Micro-batching gain (batched / one-at-a-time throughput, same run): {gain}.", ""]
    lines += [
        "| soak | requests | clients | lost | answered twice | 503s | 504s | transport errors | "
        "RSS start → end (MiB) | duration (s) | req/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for key, label in (("soak_real_model", result["judge"]), ("soak_standin", "stand-in random:1")):
        if key not in result:
            continue
        s = result[key]
        if key == "soak_real_model" and not s.get("debias", True):
            label += " (one order per request)"
        c = s["checks"]
        lines.append(
            f"| {label} | {s['requests_done']} | {s['clients']} | {c['lost']} | {c['answered_twice']} | {c['503s']} | "
            f"{c['504s']} | {c['transport_errors']} | {s['rss_start_mib']:.0f} → {s['rss_end_mib']:.0f} | "
            f"{s['wall_s']:.0f} | {s['throughput_rps']:.2f} |"
        )
    if "overload" not in result:
        return "\n".join(lines)
    o = result["overload"]
    lines += [
        "",
        f"Overload (--max-queue 4, 16 clients, {o['requests']} requests): {o['deliberate_503s']} deliberate 503s "
        f"(queue_full + Retry-After, all retried), {o['other_503s']} other; lost {o['checks']['lost']}, answered "
        f"twice {o['checks']['answered_twice']}, server judged {o['checks']['server_judged_pairs']:.0f} pairs for "
        f"{o['checks']['answered_200']} answers.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
