"""Markdown and plot of an RTT sweep (``python -m benchmarks run --rtt 0 20 40 80``).

One row per workload × RTT: wall time of every approach and of the site-local bound,
the ratios federation / hand-pinned and federation / site-local, the federation's
cross-border bytes, scheduler→site batches (federation and hand-pinned) and the site
queue's admission rounds, and the load average when the federation run started.
"""

from __future__ import annotations

from pathlib import Path

from .approaches import APPROACHES

MiB = 2**20
SWEEP_APPROACHES = (*APPROACHES, "site-local")


def is_sweep(results: dict) -> bool:
    return any(r.get("rtt_ms") is not None for r in results.get("runs", []))


def median_runs(runs: list[dict]) -> list[dict]:
    """Repeated runs (``--repeats``) collapsed to one per workload, RTT and approach: the
    run with the median wall time (the lower one of an even count), carrying every
    repeat's wall seconds, sorted, as ``wall_s_runs``. A failed repeat is kept only when
    all of them failed. Runs without repeats pass through unchanged."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["workload"], r.get("rtt_ms"), r["approach"]), []).append(r)
    out = []
    for group in groups.values():
        ok = sorted((r for r in group if "error" not in r), key=lambda r: r["wall_s"])
        if len(group) == 1 or not ok:
            out.append(group[-1])
            continue
        out.append({**ok[(len(ok) - 1) // 2], "wall_s_runs": [r["wall_s"] for r in ok],
                    "failed_repeats": len(group) - len(ok)})
    return out


def by_rtt(results: dict) -> dict[tuple[str, float, str], dict]:
    return {(r["workload"], r["rtt_ms"], r["approach"]): r
            for r in median_runs(results["runs"])}


def _t(r: dict | None) -> str:
    if r is None:
        return "–"
    if "error" in r:
        return "failed"
    walls = r.get("wall_s_runs")
    # median (min–max) of the repeats
    return f"{r['wall_s']:.1f}" + (f" ({walls[0]:.1f}–{walls[-1]:.1f})" if walls else "")


def _ratio(a: dict | None, b: dict | None) -> float | None:
    if not a or not b or "error" in a or "error" in b or not b["wall_s"]:
        return None
    return a["wall_s"] / b["wall_s"]


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def rows(results: dict) -> list[dict]:
    """The sweep table as records (also stored in the JSON as ``sweep``)."""
    by = by_rtt(results)
    rtts = sorted({r["rtt_ms"] for r in results["runs"] if r.get("rtt_ms") is not None})
    out = []
    for name in results.get("minimum", {}):
        for rtt in rtts:
            runs = {a: by.get((name, rtt, a)) for a in SWEEP_APPROACHES}
            fed, pin = runs["federation"], runs["hand-pinned"]
            row = {"workload": name, "rtt_ms": rtt,
                   "wall_s": {a: r["wall_s"] for a, r in runs.items()
                              if r and "error" not in r},
                   "wall_s_runs": {a: r["wall_s_runs"] for a, r in runs.items()
                                   if r and "wall_s_runs" in r},
                   "fed_over_pinned": _ratio(fed, pin),
                   "fed_over_site_local": _ratio(fed, runs["site-local"]),
                   "load_1min": (fed or {}).get("load_1min")}
            if fed and "error" not in fed:
                msgs = fed.get("messages", {})
                row.update(fed_cross_bytes=fed["cross_bytes"],
                           fed_to_sites_batches=msgs.get("to_sites_batches"),
                           fed_admissions=msgs.get("admissions"),
                           fed_admitted_reads=msgs.get("admitted_reads"),
                           fed_idle_admissions=msgs.get("idle_admissions"),
                           fed_queue_depth=(msgs["depth_sum"] / msgs["label_releases"]
                                            if msgs.get("label_releases") else None),
                           fed_tasks=fed["tasks"])
                row["fed_idle_thread_s"] = fed.get("idle_thread_s")
            if pin and "error" not in pin:
                row["pinned_to_sites_batches"] = pin.get("messages", {}).get("to_sites_batches")
                row["pinned_idle_thread_s"] = pin.get("idle_thread_s")
            out.append(row)
    return out


def markdown(results: dict) -> list[str]:
    lines = ["", "## RTT sweep", "",
             "Wall seconds per approach (of repeated runs: the median, and min–max in "
             "brackets; the ratios and the other columns are of the median runs; "
             "*site-local*: plain Dask at the slowest input's site "
             "on its local files, no hub, no network: the bound). *batches*: messages "
             "batches the scheduler sent to the site workers during the computation "
             "(each one a site waits for); *admissions*: site-queue rounds that released "
             "parked reads (reads released; *idle*: releases into a site with a thread "
             "that had nothing to run — the first one per site and computation is the "
             "start, every further one a round trip the site waited for); *depth*: the tasks "
             "per thread the site queue allowed, mean over its releases (saturation, or "
             "more to prefetch a round trip's worth of reads); *idle thread-s*: seconds the "
             "threads of the workers that ran tasks spent not computing between their "
             "first and last task (federation / hand-pinned).", "",
             "| workload | RTT ms | " + " | ".join(SWEEP_APPROACHES)
             + " | fed / pinned | fed / site-local | fed crossed | fed batches "
               "| pinned batches | admissions (reads; idle) | depth | idle thread-s | load |",
             "| --- | ---: |" + " ---: |" * (len(SWEEP_APPROACHES) + 9)]
    by = by_rtt(results)
    for row in rows(results):
        times = " | ".join(_t(by.get((row["workload"], row["rtt_ms"], a)))
                           for a in SWEEP_APPROACHES)
        crossed, adm, load = row.get("fed_cross_bytes"), row.get("fed_admissions"), row["load_1min"]
        admitted, idle = row.get("fed_admitted_reads"), row.get("fed_idle_admissions")
        lines.append(
            f"| {row['workload']} | {row['rtt_ms']:g} | {times} | "
            f"{_fmt(row['fed_over_pinned'])} | {_fmt(row['fed_over_site_local'])} | "
            f"{'–' if crossed is None else f'{crossed / 1024:,.1f} KiB'} | "
            f"{row.get('fed_to_sites_batches', '–')} | {row.get('pinned_to_sites_batches', '–')} | "
            f"{'–' if adm is None else f'{adm} ({admitted}; {idle})'} | "
            f"{_fmt(row.get('fed_queue_depth'))} | "
            f"{_fmt(row.get('fed_idle_thread_s'))} / {_fmt(row.get('pinned_idle_thread_s'))} | "
            f"{'–' if load is None else f'{load:.1f}'} |")
    return lines


def plot(results: dict, path: Path) -> Path | None:
    """Wall time vs RTT, one panel per workload, one line per approach."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    table = rows(results)
    names = list(dict.fromkeys(r["workload"] for r in table))
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names):
        mine = [r for r in table if r["workload"] == name]
        for approach in SWEEP_APPROACHES:
            pts = [(r["rtt_ms"], r["wall_s"][approach]) for r in mine if approach in r["wall_s"]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=approach,
                        linestyle="--" if approach == "site-local" else "-")
        ax.set_title(name)
        ax.set_xlabel("RTT [ms]")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("wall time [s]")
    axes[0][-1].legend(fontsize=8)
    meta = results["meta"]
    fig.suptitle(f"dask-federation RTT sweep {meta['date']}: "
                 f"{meta['size_per_site'] / MiB:,.0f} MiB/site, "
                 f"{meta['network'].get('bandwidth') or 'loopback'}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
