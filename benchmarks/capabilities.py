"""What capabilities cost the hub: scheduler CPU per task, with and without signing.

``python -m benchmarks.capabilities [--tasks 20000] [--repeats 3]`` runs the overhead
graph of :mod:`benchmarks.overhead` (two sites, ``x.mean() + y.mean()``) on loopback
against a hub with all plugins (``on``) and against the same hub without the
capability plugin, whose sites do not check (``on-nocaps``, :mod:`.unchecked_site`),
alternating; writes ``benchmarks/results/capabilities-<date>.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import dask

from federation.capability import sign
from federation.catalog import describe_dataset
from federation.graph import bindings
from federation.sources import ZarrSource

from .cluster import Processes
from .data import write_tiny
from .network import Loopback
from .overhead import SITES, _graph, scheduler_overhead

HERE = Path(__file__).parent


def signing_cost(data_dir: Path, steps: int = 4000, repeats: int = 5) -> dict:
    """CPU per task of what the capability plugin does for each task of the overhead
    graph (find its site-bound calls, sign each), in this process: independent of the
    machine's load, which makes the end-to-end runs noisy on a shared machine."""
    infos = {}
    for site in SITES:
        source = ZarrSource(str(write_tiny(data_dir / f"caps-{steps}" / site / "x.zarr", steps)))
        with source.open() as ds:
            info = describe_dataset(site, "x", ds, "", source.stamp())
        infos[info.ref] = info
    (obj,) = dask.optimize(_graph(infos).data)
    tasks = list(dict(obj.__dask_graph__()).items())
    secret, best = b"s" * 32, float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for key, spec in tasks:
            for kind, ref in set(bindings(spec)):
                sign(secret, kind, ref, key, "alice", "any", 1e9).to_wire()
        best = min(best, time.process_time() - t0)
    return {"tasks": len(tasks), "cpu_per_task_us": best / len(tasks) * 1e6,
            "note": f"best of {repeats} passes over every task of the overhead graph"}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-dir", default=str(HERE / ".data"))
    p.add_argument("--out", default=None)
    a = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fedbench-caps-"))
    procs = Processes(workdir / "logs")
    spec = {"overhead_tasks": a.tasks, "overhead_repeats": a.repeats, "data_dir": a.data_dir,
            "variants": ("on-nocaps", "on"), "diagnose": False}
    try:
        out = scheduler_overhead(Loopback(), procs, workdir, spec)
    finally:
        procs.stop_all()
    out["signing_in_process"] = signing_cost(Path(a.data_dir))
    medians = out["median_cpu_per_task_us"]
    out["capability_cost_pct"] = 100 * (medians["on"] / medians["on-nocaps"] - 1)
    out["load_average"] = os.getloadavg()
    out["note"] = ("scheduler CPU (user+system) per task, loopback, 2 sites, median of the "
                   "alternating runs; 'on-nocaps' is the same hub without the capability "
                   "plugin (and sites that do not check)")
    date = datetime.date.today().isoformat()
    path = Path(a.out or HERE / "results" / f"capabilities-{date}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"capabilities: {medians} µs/task -> {out['capability_cost_pct']:+.1f} %; signing "
          f"{out['signing_in_process']['cpu_per_task_us']:.1f} µs/task in-process; {path}")


if __name__ == "__main__":
    main()
