"""Scheduler overhead of the federation plugins on a large graph.

Two sites with a small dataset each (one time step per chunk, 8×8 points). With
the plugins the sites run as ``dask federation site`` (the hub refuses workers of
unregistered sites); without them as :mod:`benchmarks.plain_site` with every worker
able to read both datasets (so the graph runs with plain Dask placement). The graph is
``x.mean() + y.mean()`` over both datasets: one read task per chunk, per-chunk
reductions, tree reductions and one cross-site combination, ``--overhead-tasks`` tasks
in total. The scheduler runs in its own process (:mod:`benchmarks.sched`), identical
except for ``scheduler_plugins.install``; its CPU time (user+system) during the
computation is divided by the number of tasks. Variants alternate to spread the
machine's other load evenly. One extra run with the plugins under cProfile (CPU
clock) shows where the plugins spend their time.
"""

from __future__ import annotations

import math
import pstats
import statistics
import time
from dataclasses import replace
from pathlib import Path

import dask
import psutil
from distributed import Client

from federation.catalog import describe_dataset
from federation.lazy import build_dataset
from federation.local import write_site_config
from federation.sources import ZarrSource

from .cluster import free_port
from .data import write_tiny
from .measure import Sampler, _pid, cpu_seconds

#: tasks per time step of ``x.mean()`` (read, per-chunk reduction, tree), measured:
#: 144,930 tasks for 2 x 24,155 steps
TASKS_PER_STEP = 3.0
SITES = ("s1", "s2")


def _graph(infos, steps: int | None = None):
    x = build_dataset(infos["s1/x"], None).x[:steps]
    y = build_dataset(infos["s2/x"], None).x[:steps]
    return x.mean() + y.mean()


def _count(obj) -> int:
    (opt,) = dask.optimize(obj.data)
    return len(opt.__dask_graph__())


def scheduler_overhead(net, procs, workdir: Path, spec: dict, log=print) -> dict:
    n_tasks = int(spec["overhead_tasks"])
    repeats = int(spec.get("overhead_repeats", 2))
    steps = max(8, math.ceil(n_tasks / len(SITES) / TASKS_PER_STEP))
    data_dir = Path(spec["data_dir"]) / f"overhead-{steps}"
    configs, infos = {}, {}
    for site in SITES:
        path = write_tiny(data_dir / site / "x.zarr", steps)
        configs[site] = write_site_config(
            workdir / f"overhead-{site}.yaml", site=site, workers=1, nthreads=2,
            memory_limit="1GiB", datasets={"x": {"path": str(path)}},
        )
        source = ZarrSource(str(path))
        with source.open() as ds:
            info = describe_dataset(site, "x", ds, "", source.stamp())
        # described here, not by the site's version log: reads unpinned (version None)
        infos[info.ref] = replace(info, version=None)
    small = max(8, math.ceil(min(n_tasks, int(spec.get("profile_tasks", 20_000)))
                             / len(SITES) / TASKS_PER_STEP))
    # (variant, time steps per site): the full graph alternating off/on; on a smaller
    # graph the plugins without the site queue, and the profiled run
    names = spec.get("variants", ("off", "on"))  # "on-nocaps": the plugins minus capabilities
    variants = [(v, steps) for _ in range(repeats) for v in names]
    if spec.get("diagnose", True):
        extra = spec.get("diagnose_variants") or (
            "off", "on-noqueue", *(("on-profile",) if spec.get("profile", True) else ()))
        variants += [(v, small) for v in extra]
    prefix = net.prefix("client")  # everything on the client's loopback: CPU, not network
    runs = []
    profile_file = workdir / "overhead-plugins.prof"
    # every variant's scheduler and workers start together (start-up overlaps); the
    # idle ones only heartbeat while another variant is measured
    addresses = {}
    try:
        for i, (variant, _) in enumerate(variants):
            port = free_port()
            addresses[i] = f"tcp://127.0.0.1:{port}"
            args = ["-m", "benchmarks.sched", "--host", "127.0.0.1", "--port", str(port)]
            if variant != "off":
                args.append("--plugins")
            if variant == "on-profile":
                args += ["--profile", str(profile_file)]
            if variant == "on-nocaps":
                args.append("--no-capabilities")
            # the hub's per-user graph limit (1 000 000 tasks) would refuse the largest
            # graphs, which are what is measured
            env = {"DASK_FEDERATION__FAIR_SHARE__MAX_GRAPH_TASKS": str(2 * n_tasks + 1000),
                   "DASK_FEDERATION__FAIR_SHARE__MAX_TASKS_IN_FLIGHT": str(4 * n_tasks + 1000)}
            if variant == "on-noqueue":
                env["DASK_FEDERATION__SITE_QUEUE__ENABLED"] = "False"
            procs.spawn(f"ovh-sched-{i}", prefix, *args, env=env)
        for i in addresses:
            procs.wait_for(f"ovh-sched-{i}", "scheduler at")
            for site in SITES:
                if variants[i][0] == "off":
                    # plain Dask: any worker may get any read, so all can read all
                    other = [str(configs[s]) for s in SITES if s != site]
                    procs.spawn(f"ovh-{site}-{i}", prefix, "-m", "benchmarks.plain_site",
                                str(configs[site]), "--scheduler", addresses[i],
                                "--shared", *other)
                else:  # the hub accepts only workers of registered sites
                    site_cmd = (("benchmarks.unchecked_site",) if variants[i][0] == "on-nocaps"
                                else ("federation.cli", "site"))
                    procs.spawn(f"ovh-{site}-{i}", prefix, "-m", *site_cmd,
                                str(configs[site]), "--hub", addresses[i])
        for i in addresses:
            for site in SITES:
                procs.wait_for(f"ovh-{site}-{i}", "serving")
        for i, (variant, nsteps) in enumerate(variants):
            with Client(addresses[i], timeout="60s", set_as_default=False) as client:
                sched_pid = client.run_on_scheduler(_pid)
                obj = _graph(infos, nsteps)
                tasks = _count(obj) + 1  # + the finalize task
                # warm-up: open the datasets at both workers
                for ref in infos:
                    build_dataset(infos[ref], None).x[:4].mean().compute(scheduler=client)
                rss0 = psutil.Process(sched_pid).memory_info().rss
                cpu0 = cpu_seconds(sched_pid)
                t0 = time.perf_counter()
                with Sampler({"scheduler": sched_pid}, interval=0.5) as peak:
                    value = float(obj.compute(scheduler=client))
                wall = time.perf_counter() - t0
                cpu = cpu_seconds(sched_pid) - cpu0
            # the scheduler's memory per task: its peak RSS above the idle one (the whole
            # graph is held while it runs; the sampling misses peaks shorter than 0.5 s)
            rss = max(peak.peak["scheduler"], rss0) - rss0
            run = {"variant": variant, "tasks": tasks, "wall_s": wall, "scheduler_cpu_s": cpu,
                   "cpu_per_task_us": cpu / tasks * 1e6, "result": value,
                   "rss_idle_bytes": rss0, "rss_peak_delta_bytes": rss,
                   "rss_per_task_bytes": rss / tasks}
            runs.append(run)
            log(f"  plugins {variant:10s} {tasks:,} tasks  {wall:6.1f} s wall  "
                f"scheduler CPU {cpu:6.1f} s = {run['cpu_per_task_us']:.0f} µs/task, "
                f"{run['rss_per_task_bytes']:,.0f} B/task")
            # done with this variant: free the machine
            procs.stop(*[f"ovh-{site}-{i}" for site in SITES])
            procs.stop(f"ovh-sched-{i}")  # the profiled one writes its stats now
    finally:
        procs.stop(*[f"ovh-{site}-{i}" for i in addresses for site in SITES])
        procs.stop(*[f"ovh-sched-{i}" for i in addresses])
    big = runs[0]["tasks"] if runs else 0
    off = [r["cpu_per_task_us"] for r in runs if r["variant"] == "off" and r["tasks"] == big]
    on = [r["cpu_per_task_us"] for r in runs if r["variant"] == "on" and r["tasks"] == big]
    out = {
        "tasks": big,
        "runs": runs,
        "off_cpu_per_task_us": statistics.median(off) if off else None,
        "on_cpu_per_task_us": statistics.median(on) if on else None,
    }
    if off and on:
        out["overhead_pct"] = 100 * (out["on_cpu_per_task_us"] / out["off_cpu_per_task_us"] - 1)
    out["median_cpu_per_task_us"] = {
        v: statistics.median(r["cpu_per_task_us"] for r in runs
                             if r["variant"] == v and r["tasks"] == big)
        for v in dict.fromkeys(r["variant"] for r in runs if r["tasks"] == big)
    }
    if profile_file.exists():
        out["profile"] = analyse_profile(profile_file)
    return out


HOOKS = ("update_graph", "transition", "add_worker", "remove_worker", "admit",
         "schedule", "start", "collect", "traffic", "register_site", "heartbeat")


def analyse_profile(path: Path, top: int = 12) -> dict:
    """Share of the scheduler's CPU spent in plugin code (cProfile, CPU clock)."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    own, hooks = [], []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore
        if "scheduler_plugins" in file or "/federation/" in file:
            where = f"{Path(file).parent.name}/{Path(file).name}:{line}({func})"
            own.append({"function": where, "calls": nc, "self_s": tt, "cum_s": ct,
                        "self_pct": 100 * tt / total, "cum_pct": 100 * ct / total})
            if "scheduler_plugins" in file and func in HOOKS:
                hooks.append({"function": where, "calls": nc, "cum_s": ct,
                              "cum_pct": 100 * ct / total})
    own.sort(key=lambda r: -r["self_s"])
    hooks.sort(key=lambda r: -r["cum_s"])
    self_total = sum(r["self_s"] for r in own)
    return {
        "profiled_cpu_s": total,
        "plugin_self_s": self_total,
        "plugin_self_pct": 100 * self_total / total if total else 0.0,
        "top_self": own[:top],
        "hooks_cumulative": hooks[:top],
        "note": "cProfile with a CPU clock on the scheduler's event-loop thread; the run "
                "is slower than unprofiled ones, shares are what matters. Hook cumulative "
                "times include scheduler work they trigger (e.g. _admit -> transitions).",
    }
