"""Markdown table, target check and plot from a results JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

from . import sweep
from .approaches import APPROACHES, DESCRIPTIONS

MiB = 2**20

TARGETS = {
    "bytes": "cross-site bytes <= 1.05 x theoretical minimum (federation)",
    "download": ">= 20x faster than download-then-compute",
    "pinned": "within 10 % of hand-pinned time",
    "overhead": "plugin overhead <= 5 % of scheduler CPU (large graph)",
}


def _mib(b: float | None) -> str:
    if b is None:
        return "–"
    if b < 0.1 * MiB:
        return f"{b / 1024:.1f} KiB"
    return f"{b / MiB:,.1f} MiB"


def _payload_ratio(r: dict, m: dict) -> str:
    if "cross_nbytes" not in r or not m["minimum_bytes"]:
        return "–"
    return f"{r['cross_nbytes'] / m['minimum_bytes']:,.2f}"


def runs_by(results: dict) -> dict[tuple[str, str], dict]:
    """(workload, approach) -> run (of repeats, the median one); of an RTT sweep, the
    runs at the lowest RTT."""
    runs = sweep.median_runs(results["runs"])
    rtts = [r["rtt_ms"] for r in runs if r.get("rtt_ms") is not None]
    if rtts:
        runs = [r for r in runs if r.get("rtt_ms") == min(rtts)]
    return {(r["workload"], r["approach"]): r for r in runs if r["approach"] in APPROACHES}


def targets(results: dict) -> dict:
    """Per-target, per-workload numbers and whether each is met."""
    by = runs_by(results)
    out: dict[str, dict] = {k: {} for k in TARGETS}
    for name, m in results.get("minimum", {}).items():
        fed = by.get((name, "federation"))
        if not fed or "error" in fed:
            continue
        ratio = fed["cross_bytes"] / m["minimum_bytes"] if m["minimum_bytes"] else math.nan
        out["bytes"][name] = {"value": ratio, "met": ratio <= 1.05}
        dl = by.get((name, "download"))
        if dl and "error" not in dl:
            speedup = dl["wall_s"] / fed["wall_s"]
            out["download"][name] = {"value": speedup, "met": speedup >= 20}
        pin = by.get((name, "hand-pinned"))
        if pin and "error" not in pin:
            rel = fed["wall_s"] / pin["wall_s"]
            out["pinned"][name] = {"value": rel, "met": rel <= 1.10}
    ovh = results.get("overhead") or {}
    if "overhead_pct" in ovh:
        out["overhead"]["graph"] = {"value": ovh["overhead_pct"], "met": ovh["overhead_pct"] <= 5}
    return out


def markdown(results: dict) -> str:
    meta = results["meta"]
    net = meta["network"]
    lines = [
        f"# dask-federation benchmarks — {meta['date']}",
        "",
        f"* Machine: {meta['cpus']} CPUs, {meta['memory_gib']:.0f} GiB RAM, Python "
        f"{meta['python']}, dask {meta['dask']}, distributed {meta['distributed']}. "
        f"{meta.get('load_note', '')}",
        f"* Network: {net['note']}.",
        f"* Data: {meta['size_per_site'] / MiB:,.0f} MiB at each of "
        f"{', '.join(s for s in meta['datasets'] if s != 'deep')} "
        f"({', '.join(f'{s}: {d}' for s, d in meta['datasets'].items())}), "
        f"{meta['chunk_days']}-day chunks; each site 1 worker × 2 threads, memory limit "
        f"{meta['memory_limit'] / MiB:,.0f} MiB."
        + (f" Site deep: {meta['deep_size'] / MiB:,.0f} MiB of sst, memory limit "
           f"{meta['deep_memory_limit'] / MiB:,.0f} MiB (memory workload: data = "
           f"{meta['memory_ratio']:.1f}× the site's worker memory)."
           if "deep" in meta["datasets"] else "")
        + " (Only the sites the chosen workloads read are started.)",
        f"* Run took {meta['duration_s'] / 60:.1f} min; command: `{meta['command']}`.",
        "",
        "Approaches: " + "; ".join(f"**{a}** — {DESCRIPTIONS[a]}" for a in APPROACHES) + ".",
        "",
        "| workload | approach | wall s | vs federation | crossed borders | theoretical min "
        "| crossed / min | payload / min | peak worker RSS | sched CPU µs/task | tasks "
        "| same result |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    by = runs_by(results)
    for name, m in results.get("minimum", {}).items():
        fed = by.get((name, "federation"))
        for approach in APPROACHES:
            r = by.get((name, approach))
            if r is None:
                continue
            if "error" in r:
                lines.append(f"| {name} | {approach} | failed: {r['error'][:60]} |" + " |" * 9)
                continue
            crossed = _mib(r["cross_bytes"])
            total = r["cross_bytes"]
            if r.get("remote_read_bytes"):
                crossed += f" + {_mib(r['remote_read_bytes'])} remote reads"
                total += r["remote_read_bytes"]
            vs = f"{r['wall_s'] / fed['wall_s']:.2f}×" if fed and "error" not in fed else "–"
            agree = [v for k, v in r.items() if k.startswith("agrees_with_")]
            lines.append(
                f"| {name} | {approach} | {r['wall_s']:.1f} | {vs} | {crossed} | "
                f"{_mib(m['minimum_bytes'])} | {total / m['minimum_bytes']:,.2f} | "
                f"{_payload_ratio(r, m)} | {_mib(r['peak_worker_rss'])} | "
                f"{r['scheduler_cpu_per_task_us']:,.0f} | "
                f"{r['tasks']:,} | {'yes' if all(agree) else 'NO'} |"
            )
    lines += [
        "",
        "*crossed borders*: bytes the site workers sent to another site or to the client "
        "(their `get_data` counters; for federation this equals `fed.traffic().total`). "
        "*remote reads*: raw chunks read by a worker of another site through the assumed "
        "shared filesystem (free here, since the files are local; over a WAN they would "
        "cross the links). *theoretical min*: the partial results that must cross "
        "(the result to the client; for the correlation one of the two series, see "
        "`Workload.minimum_bytes`). *payload / min*: the `nbytes` of the values that "
        "crossed (without remote reads) over the minimum; *crossed* counts wire bytes, "
        "which add a few hundred bytes of framing per transfer — for the correlation's "
        "one-month chunks of a time series (240 bytes each) most of what crosses.",
    ]
    if any("link_bytes_out_of_sites" in r for r in results["runs"]):
        lines += ["", "Bytes on the shaped links (IP level, scheduler messages included):", "",
                  "| workload | approach | left the sites | entered the client |",
                  "| --- | --- | ---: | ---: |"]
        for (name, approach), r in by.items():
            if "link_bytes_out_of_sites" in r:
                lines.append(f"| {name} | {approach} | {_mib(r['link_bytes_out_of_sites'])} | "
                             f"{_mib(r['link_bytes_into_client'])} |")
    ovh = results.get("overhead")
    if ovh:
        lines += ["", f"## Scheduler overhead ({ovh['tasks']:,}-task graph)", "",
                  "| plugins | tasks | wall s | scheduler CPU s | µs/task |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        for r in ovh["runs"]:
            lines.append(f"| {r['variant']} | {r['tasks']:,} | {r['wall_s']:.1f} | "
                         f"{r['scheduler_cpu_s']:.1f} | {r['cpu_per_task_us']:.0f} |")
        if "overhead_pct" in ovh:
            lines += ["", "Median scheduler CPU per task: "
                          f"off {ovh['off_cpu_per_task_us']:.0f} µs, "
                          f"on {ovh['on_cpu_per_task_us']:.0f} µs → overhead "
                          f"**{ovh['overhead_pct']:+.1f} %**."]
        small = {r["variant"]: r for r in ovh["runs"] if r["tasks"] != ovh["tasks"]}
        if "off" in small:
            base = small["off"]["cpu_per_task_us"]
            parts = [f"{v} {100 * (r['cpu_per_task_us'] / base - 1):+.0f} %"
                     for v, r in small.items() if v in ("on", "on-noqueue")]
            lines += ["", f"On the {small['off']['tasks']:,}-task graph, vs. off: "
                          + ", ".join(parts) + " (on-noqueue: plugins with "
                          "`federation.site-queue.enabled: false`)."]
        prof = ovh.get("profile")
        if prof:
            lines += ["", f"Profile (plugins on, cProfile CPU clock): plugin code itself "
                          f"{prof['plugin_self_pct']:.1f} % of the scheduler's "
                          f"{prof['profiled_cpu_s']:.1f} s CPU; hooks including what they "
                          "call: " + ", ".join(f"`{h['function'].split('(')[-1][:-1]}` "
                                               f"{h['cum_pct']:.1f} %"
                                               for h in prof["hooks_cumulative"][:4])
                          + ". Top functions by own time:", "",
                      "| function | calls | own s | own % | cumulative % |",
                      "| --- | ---: | ---: | ---: | ---: |"]
            for f in prof["top_self"][:8]:
                lines.append(f"| `{f['function']}` | {f['calls']:,} | {f['self_s']:.2f} | "
                             f"{f['self_pct']:.1f} | {f['cum_pct']:.1f} |")
    if sweep.is_sweep(results):
        lines += sweep.markdown(results)
    t = targets(results)
    lines += ["", "## Targets", "", "| target | per workload | met |", "| --- | --- | :---: |"]
    for key, desc in TARGETS.items():
        vals = t.get(key, {})
        if not vals:
            lines.append(f"| {desc} | not measured | – |")
            continue
        fmt = "{:+.1f} %" if key == "overhead" else "{:.2f}"
        cells = ", ".join(f"{n}: {fmt.format(v['value'])}" for n, v in vals.items())
        met = all(v["met"] for v in vals.values())
        some = any(v["met"] for v in vals.values())
        lines.append(f"| {desc} | {cells} | {'yes' if met else ('partly' if some else 'no')} |")
    for note in meta.get("notes", []):
        lines.append(f"\n* {note}")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    by = runs_by(results)
    names = list(results.get("minimum", {}))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(APPROACHES)
    for i, approach in enumerate(APPROACHES):
        xs, times, data = [], [], []
        for j, name in enumerate(names):
            r = by.get((name, approach))
            if r is None or "error" in r:
                continue
            xs.append(j + (i - (len(APPROACHES) - 1) / 2) * width)
            times.append(r["wall_s"])
            data.append(max(r["cross_bytes"] + r.get("remote_read_bytes", 0), 1) / MiB)
        axes[0].bar(xs, times, width, label=approach)
        axes[1].bar(xs, data, width, label=approach)
    mins = [results["minimum"][n]["minimum_bytes"] / MiB for n in names]
    axes[1].scatter(range(len(names)), mins, marker="_", s=600, color="k", zorder=3,
                    label="theoretical minimum")
    for ax, title in ((axes[0], "wall time [s]"), (axes[1], "bytes across site borders [MiB]")):
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)), names)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[1].legend(fontsize=8)
    meta = results["meta"]
    bw = meta["network"].get("bandwidth") or "loopback"
    fig.suptitle(f"dask-federation benchmarks {meta['date']}: "
                 f"{meta['size_per_site'] / MiB:,.0f} MiB/site, {bw}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: dict, directory: Path, stem: str) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / f"{stem}.json", "md": directory / f"{stem}.md"}
    results["targets"] = targets(results)
    if sweep.is_sweep(results):
        results["sweep"] = sweep.rows(results)
    paths["json"].write_text(json.dumps(results, indent=1, default=str))
    paths["md"].write_text(markdown(results))
    if sweep.is_sweep(results):
        png = sweep.plot(results, directory / f"{stem}.png")
    else:
        png = plot(results, directory / f"{stem}.png")
    if png:
        paths["png"] = png
    return paths
