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
from pathlib import Path

from .cluster import Processes
from .network import Loopback
from .overhead import scheduler_overhead

HERE = Path(__file__).parent


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
    medians = out["median_cpu_per_task_us"]
    out["capability_cost_pct"] = 100 * (medians["on"] / medians["on-nocaps"] - 1)
    out["load_average"] = os.getloadavg()
    out["note"] = ("scheduler CPU (user+system) per task, loopback, 2 sites, median of the "
                   "alternating runs; 'on-nocaps' is the same hub without the capability "
                   "plugin (and sites that do not check)")
    date = datetime.date.today().isoformat()
    path = Path(a.out or HERE / "results" / f"capabilities-{date}.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"capabilities: {medians} µs/task -> {out['capability_cost_pct']:+.1f} %; {path}")


if __name__ == "__main__":
    main()
