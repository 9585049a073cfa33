"""Scheduler CPU and memory per task, plugins off vs on, as the graph grows.

    python -m benchmarks.schedscale [--tasks 10000 100000 1000000] [--repeats 1]
        [--profile-tasks 20000] [--quick] [--out FILE]

For each graph size, the scheduler-overhead case of :mod:`benchmarks.overhead` (two sites
on loopback, ``x.mean() + y.mean()`` over one tiny chunk per time step) with the
scheduler in its own process, once plain (``off``) and once with the federation plugins
(``on``), alternating: the scheduler's process CPU time (user + system) per task — CPU
time, not wall time, so the shared machine's other load matters less — and its peak RSS
above the idle one per task. With ``--profile-tasks`` one more ``on`` run of that size
under cProfile says where the plugins' share goes.

Writes JSON (``--out``, default ``benchmarks/results/scale-<date>.json``) and a markdown
table next to it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .cluster import Processes
from .network import Loopback
from .overhead import scheduler_overhead

RESULTS = Path(__file__).resolve().parent / "results"


def measure(sizes: list[int], repeats: int, profile_tasks: int, data_dir: Path,
            workdir: Path, out: dict, save=lambda: None, log=print) -> dict:
    """Off/on runs at every size in ``sizes`` (tasks) into ``out``; see the module
    docstring. ``save()`` is called after each size (a long run keeps what it measured)."""
    procs = Processes(workdir / "logs")
    out["sizes"] = []
    try:
        for n in sizes:
            load = os.getloadavg()[0]
            started = time.perf_counter()
            log(f"== {n:,} tasks ==")
            spec = {"overhead_tasks": n, "overhead_repeats": repeats,
                    "data_dir": str(data_dir), "diagnose": False}
            result = scheduler_overhead(Loopback(), procs, workdir, spec, log=log)
            result["load_1min_before"] = load
            result["seconds"] = time.perf_counter() - started
            out["sizes"].append(summarise(result))
            save()
        if profile_tasks:
            spec = {"overhead_tasks": profile_tasks, "overhead_repeats": 0,
                    "data_dir": str(data_dir), "diagnose": True,
                    "diagnose_variants": ("on-profile",), "profile_tasks": profile_tasks}
            out["profile"] = scheduler_overhead(
                Loopback(), procs, workdir, spec, log=log).get("profile")
    finally:
        procs.stop_all()
    return out


def summarise(result: dict) -> dict:
    """One size's runs -> medians per variant and the on/off ratios."""
    row: dict = {"tasks": result["tasks"], "runs": result["runs"],
                 "load_1min_before": result["load_1min_before"], "seconds": result["seconds"]}
    for variant in ("off", "on"):
        runs = [r for r in result["runs"] if r["variant"] == variant]
        if runs:
            row[variant] = {
                "cpu_per_task_us": statistics.median(r["cpu_per_task_us"] for r in runs),
                "rss_per_task_bytes": statistics.median(r["rss_per_task_bytes"] for r in runs),
                "wall_s": statistics.median(r["wall_s"] for r in runs),
            }
    if "off" in row and "on" in row:
        row["cpu_ratio"] = row["on"]["cpu_per_task_us"] / row["off"]["cpu_per_task_us"]
        off_rss = row["off"]["rss_per_task_bytes"]
        row["rss_ratio"] = row["on"]["rss_per_task_bytes"] / off_rss if off_rss else None
    return row


def markdown(report: dict) -> str:
    """The results as a markdown table."""
    lines = [
        f"# Scheduler CPU and memory per task, plugins off vs on ({report['date']})", "",
        f"{report['cpus']} CPUs; scheduler process CPU time (user+system) during the "
        "computation / tasks; memory: peak RSS above idle / tasks (sampled every 0.5 s). "
        "Goal: on <= off x 1.05 at every size, flat per task.", "",
        "| tasks | off µs/task | on µs/task | on/off | off B/task | on B/task | "
        "off wall s | on wall s | load before |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["sizes"]:
        off, on = row.get("off", {}), row.get("on", {})

        def f(d: dict, k: str, fmt: str) -> str:
            return format(d[k], fmt) if k in d else "–"

        ratio = format(row["cpu_ratio"], ".3f") if "cpu_ratio" in row else "–"
        lines.append(
            f"| {row['tasks']:,} | {f(off, 'cpu_per_task_us', '.0f')} | "
            f"{f(on, 'cpu_per_task_us', '.0f')} | {ratio} | "
            f"{f(off, 'rss_per_task_bytes', ',.0f')} | {f(on, 'rss_per_task_bytes', ',.0f')} | "
            f"{f(off, 'wall_s', '.1f')} | {f(on, 'wall_s', '.1f')} | "
            f"{row['load_1min_before']:.1f} |"
        )
    prof = report.get("profile")
    if prof:
        lines += ["", f"Profiled `on` run: plugin code's own time "
                      f"{prof['plugin_self_pct']:.1f} % of the scheduler's CPU.", "",
                  "| function | calls | self s | self % |", "|---|---:|---:|---:|"]
        lines += [f"| {r['function']} | {r['calls']:,} | {r['self_s']:.2f} | "
                  f"{r['self_pct']:.1f} |" for r in prof["top_self"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.schedscale")
    p.add_argument("--tasks", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--repeats", type=int, default=1, help="off/on pairs per size")
    p.add_argument("--profile-tasks", type=int, default=20_000, help="0: no profiled run")
    p.add_argument("--data-dir", default=None, help="keep the tiny datasets here")
    p.add_argument("--quick", action="store_true", help="2 000 tasks, no profile")
    p.add_argument("--out", default=None, help="JSON report (markdown next to it)")
    a = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress of a long run, as it goes
    if a.quick:
        a.tasks, a.profile_tasks = [2_000], 0
    date = datetime.date.today().isoformat()
    out = Path(a.out) if a.out else RESULTS / f"scale-{date}.json"
    report = {"date": date, "cpus": os.cpu_count()}

    def save() -> None:
        out.write_text(json.dumps(report, indent=1))
        out.with_suffix(".md").write_text(markdown(report))

    with tempfile.TemporaryDirectory(prefix="fedschedscale-") as tmp:
        data_dir = Path(a.data_dir) if a.data_dir else Path(tmp) / "data"
        measure(a.tasks, a.repeats, a.profile_tasks, data_dir, Path(tmp), report, save)
    save()
    print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
