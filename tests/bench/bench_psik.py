"""psik benchmark: local-backend submit -> `active` callback latency, jobs created per second,
and psik-api listing latency with 5000 jobs.

Run from the repository root:  .venv/bin/python tests/bench/bench_psik.py [--jobs N] [--runs N]

Prints, with their same-run baselines:
- job folders created per second (JobStore via Psik.create) vs. a bare mkdir + 3 small files;
- local jobs submitted per second (create + start the wrapper + record `queued`);
- latency from Psik.run() to the receiver getting the `queued` and `active` callbacks over
  mTLS, vs. the start-up time of `python -c "import psik.wrapper"` (the floor for `active`);
- psik-api `GET /jobs?limit=10` over mTLS, p50/p99, one client and 50 concurrent clients,
  with 5000 jobs stored vs. with 20 (the baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = str(REPO)  # job wrappers run with cwd = their job folder
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

from psik.jobs import Psik  # noqa: E402
from psik.models import CallbackPolicy, Config, JobSpec  # noqa: E402
from tests.support.pki import make_pki  # noqa: E402
from tests.support.procs import ProcessSupervisor  # noqa: E402
from tests.support.receiver import Receiver  # noqa: E402
from tests.support.servers import start_psik_api  # noqa: E402


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f}/s  ({count} in {seconds:.2f} s)"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"median {statistics.median(ms):7.1f} ms  p90 {pct(ms, 0.9):7.1f} ms  "
        f"min {min(ms):7.1f} ms  max {max(ms):7.1f} ms  (n={len(ms)})"
    )


def bench_create(root: Path, n: int, rounds: int = 5) -> None:
    """Alternate rounds of baseline and psik so both see the same machine load."""
    psik = Psik(Config(prefix=root / "create"))
    spec = JobSpec(script="true")
    per = max(1, n // rounds)
    bare_rates, psik_rates = [], []
    for r in range(rounds):
        base = root / "baseline" / str(r)
        base.mkdir(parents=True)
        t0 = time.perf_counter()
        for i in range(per):
            d = base / str(i)
            d.mkdir()
            for name in ("spec.json", "status.csv", "config.json"):
                (d / name).write_text("{}\n")
        bare_rates.append(per / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        for _ in range(per):
            psik.create(spec)
        psik_rates.append(per / (time.perf_counter() - t0))
    made, bare = statistics.median(psik_rates), statistics.median(bare_rates)
    print(f"create job folders       {made:8.1f}/s  median of {rounds} rounds of {per}")
    print(f"  baseline mkdir+3 files {bare:8.1f}/s  (psik takes {bare / made:.1f}x the time)")


def wait_for(rx: Receiver, jobid: str, state: str, timeout: float = 120) -> float:
    """When the receiver got `jobid`'s `state` callback (epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for req in rx.accepted():
            row = json.loads(req["body"])
            if row["jobid"] == jobid and row["state"] == state:
                return req["time"]
        time.sleep(0.005)
    raise TimeoutError(f"no {state} callback for {jobid}")


def wait_final(psik: Psik, jobids: list[str], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = set(jobids)
    while pending and time.monotonic() < deadline:
        pending = {j for j in pending if not psik.store.get(j).current().state.final}
        time.sleep(0.05)
    if pending:
        raise TimeoutError(f"{len(pending)} jobs did not finish")


def bench_submit(root: Path, n: int) -> None:
    psik = Psik(Config(prefix=root / "submit"))
    spec = JobSpec(script="true")
    t0 = time.perf_counter()
    ids = [psik.run(spec).jobid for _ in range(n)]
    took = time.perf_counter() - t0
    wait_final(psik, ids)
    print(f"submit local jobs        {rate(n, took)}   (no callback; to `queued`)")


def bench_latency(root: Path, runs: int) -> None:
    from certified import Certified

    pki = make_pki(root / "pki")
    rx = Receiver(Certified(pki.server), secret="bench")
    try:
        pki.add_service(pki.client, "receiver", rx.base)
        config = Config(
            prefix=root / "latency",
            certified=pki.client,
            callback=CallbackPolicy(first_delay=0.05, max_delay=0.5, give_up_after=5),
        )
        psik = Psik(config)
        spec = JobSpec(script="true", callback="https://receiver/callback", cb_secret="bench")
        queued, active, ids = [], [], []
        for _ in range(runs):
            t0 = time.time()
            job = psik.run(spec)
            ids.append(job.jobid)
            queued.append(wait_for(rx, job.jobid, "queued") - t0)
            active.append(wait_for(rx, job.jobid, "active") - t0)
            wait_for(rx, job.jobid, "completed")
        wait_final(psik, ids)
    finally:
        rx.close()
    startup = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import psik.wrapper"], check=True, cwd=REPO)
        startup.append(time.perf_counter() - t0)
    print(f"submit -> queued callback  {summary(queued)}")
    print(f"submit -> active callback  {summary(active)}")
    print(f"  baseline python -c 'import psik.wrapper'  {summary(startup)}")


def _timed_get(client, params: dict) -> float:
    t0 = time.perf_counter()
    resp = client.get("/jobs", params=params)
    took = time.perf_counter() - t0
    if resp.status_code != 200:
        raise RuntimeError(f"GET /jobs answered {resp.status_code}: {resp.text[:200]}")
    return took


def _listing_figures(clients: list, requests: int) -> tuple[list[float], list[float]]:
    """(one client, sequential) and (all clients at once) latencies of GET /jobs?limit=10."""
    params = {"limit": 10}
    one = [_timed_get(clients[0], params) for _ in range(requests)]
    with ThreadPoolExecutor(len(clients)) as pool:
        many = list(pool.map(lambda c: _timed_get(c, params), clients * 4))
    return one, many


def p50_p99(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"p50 {pct(ms, 0.5):7.1f} ms  p99 {pct(ms, 0.99):7.1f} ms  (n={len(ms)})"


def bench_listing(root: Path, jobs: int, concurrency: int = 50) -> None:
    from certified import Certified

    pki = make_pki(root / "pki-list")
    (root / "logs-list").mkdir()
    sup = ProcessSupervisor(root / "logs-list")
    api_root = root / "list"
    api_root.mkdir()
    cfg = Config(prefix=api_root / "jobs")
    store = Psik(cfg).store
    for _ in range(20):
        store.create(JobSpec(script="true"), cfg, owner="cn:client")
    try:
        _proc, url = start_psik_api(sup, pki.server, api_root)
        pki.add_service(pki.client, "psik", url)
        ident = Certified(pki.client)
        clients = [ident.client("https://psik", timeout=120) for _ in range(concurrency)]
        small = _listing_figures(clients, 100)
        for _ in range(jobs - 20):
            store.create(JobSpec(script="true"), cfg, owner="cn:client")
        _timed_get(clients[0], {"limit": 10})  # the index catches up with the journal
        large = _listing_figures(clients, 100)
        for c in clients:
            c.close()
    finally:
        sup.stop_all()
    print(f"GET /jobs?limit=10, 1 client,   {jobs} jobs  {p50_p99(large[0])}")
    print(f"  baseline                      20 jobs  {p50_p99(small[0])}")
    print(f"GET /jobs?limit=10, {concurrency} clients, {jobs} jobs  {p50_p99(large[1])}")
    print(f"  baseline                      20 jobs  {p50_p99(small[1])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="folders to create")
    parser.add_argument("--submits", type=int, default=30, help="local jobs to submit")
    parser.add_argument("--runs", type=int, default=20, help="latency samples")
    parser.add_argument("--listed", type=int, default=5000, help="jobs stored for listing")
    args = parser.parse_args()
    print(f"psik bench: python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="psik-bench-") as tmp:
        root = Path(tmp)
        bench_create(root, args.jobs)
        bench_submit(root, args.submits)
        bench_latency(root, args.runs)
        bench_listing(root, args.listed)


if __name__ == "__main__":
    main()
