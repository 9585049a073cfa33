"""Fair shares: one user's small job while another user's 200 000-task graph runs.

    python -m benchmarks.fairshare [--tasks 200000] [--repeats 5] [--logs DIR] [--fair-only]
                                   [--out benchmarks/results/fairshare-<date>.json]

A hub and one site (2 workers) run as real processes on loopback, twice: with
``federation.fair-share.enabled`` and without. Each time user B's small job (the mean of
one time step of a federated dataset: a few read and reduce tasks) is timed ``repeats``
times on the idle federation, then user A submits a graph of ``tasks`` tasks
(``da.ones(tasks, chunks=1).sum()``, each task about a millisecond) and, once the hub
holds it, B's job is timed again while A's graph runs. Reported: idle and loaded times,
the first loaded job over the idle median (goal with fair shares: at most 3×; later jobs
may find A's graph finished), and how much of A's graph was done.
"""

from __future__ import annotations

import argparse
import datetime
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da

from federation.demo import write_dataset
from federation.local import LocalFederation, write_site_config

from .soak import emit


def _small_job(fed) -> float:
    start = time.perf_counter()
    # B's own client: without scheduler=, dask computes with the newest client (A's),
    # and A and B would be one user
    fed.open_dataset("lab/sst").sst.isel(time=0).mean().compute(scheduler=fed.client)
    return time.perf_counter() - start


def _say(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def _hub_tasks(dask_scheduler) -> tuple[int, int]:
    done = sum(1 for ts in dask_scheduler.tasks.values() if ts.state == "memory")
    return len(dask_scheduler.tasks), done


def run(root: Path, logs: Path, fair: bool, tasks: int, repeats: int) -> dict:
    os.environ["DASK_FEDERATION__FAIR_SHARE__ENABLED"] = str(fair)
    try:
        with LocalFederation(logs / f"fair-{fair}", dashboard=False) as lf:
            lf.start_site(root / "lab.yaml")
            with lf.connect() as b, lf.connect() as a:
                for _ in range(3):  # warm-up
                    _small_job(b)
                idle = [_small_job(b) for _ in range(repeats)]
                _say(f"fair share {fair}: idle {idle}")
                start = time.perf_counter()
                big = a.client.compute(da.ones(tasks, chunks=1).sum())
                # the hub holds the graph when the client's update_graph has arrived
                while b.client.run_on_scheduler(_hub_tasks)[0] < tasks and not big.done():
                    time.sleep(0.5)
                submitted = time.perf_counter() - start
                # while the hub's event loop was busy taking the graph, the site's
                # heartbeats waited and the site may count as gone for a moment
                stale = time.perf_counter()
                while "lab/sst" not in set(b.catalog().get("dataset", [])):
                    time.sleep(0.5)
                stale = time.perf_counter() - stale
                _say(f"big graph held after {submitted:.1f} s, site live again {stale:.1f} s later")
                loaded = [_small_job(b) for _ in range(repeats)]
                _say(f"loaded {loaded}")
                held, done = b.client.run_on_scheduler(_hub_tasks)
                big_finished = big.done()
                big.cancel()
    finally:
        del os.environ["DASK_FEDERATION__FAIR_SHARE__ENABLED"]
    return {
        "fair_share": fair,
        "idle_s": [round(t, 3) for t in idle],
        # the first job meets the big graph in full; later ones may find it finished
        "loaded_s": [round(t, 3) for t in loaded],
        "first_loaded_over_idle_median": round(loaded[0] / statistics.median(idle), 2),
        "loaded_median_over_idle_median": round(
            statistics.median(loaded) / statistics.median(idle), 2),
        "big_graph_submit_s": round(submitted, 1),
        "site_stale_after_submit_s": round(stale, 1),
        "big_graph_tasks_done_after": f"{done} of {held}",
        "big_graph_finished_during_measurement": big_finished,
    }


def measure(tasks: int = 200_000, repeats: int = 5, logs: str | None = None,
            variants: tuple[bool, ...] = (True, False)) -> dict:
    with tempfile.TemporaryDirectory(prefix="federation-fairshare-") as tmp:
        root = Path(tmp)
        logs_dir = Path(logs) if logs else root
        write_dataset("sst", root / "sst.zarr", "50MB")
        write_site_config(root / "lab.yaml", site="lab", workers=2, nthreads=1,
                          memory_limit="2GiB", datasets={"sst": {"path": "sst.zarr"}})
        runs = [run(root, logs_dir, fair, tasks, repeats) for fair in variants]
    return {
        "date": datetime.date.today().isoformat(),
        "machine": f"{os.cpu_count()} cores, hub, site and clients on loopback",
        "big_graph_tasks": tasks,
        "repeats": repeats,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fairshare", description=__doc__)
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="write the report as JSON here")
    parser.add_argument("--logs", default=None, help="keep the hub's and site's logs here")
    parser.add_argument("--fair-only", action="store_true",
                        help="only the run with fair shares (without, B waits for A's graph)")
    args = parser.parse_args(argv)
    # stopped from outside (e.g. timeout): still stop the hub and site processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    variants = (True,) if args.fair_only else (True, False)
    emit(measure(args.tasks, args.repeats, args.logs, variants), args.out)


if __name__ == "__main__":
    main()
