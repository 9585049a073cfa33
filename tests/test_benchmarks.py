"""The benchmark runner works end to end: loopback, tiny data, every workload x approach.

No timing assertions (the machine is shared); only that the runner measures real
outcomes: results written for every workload and approach, the same answers
everywhere, download moving the raw data and the federation only reduced results.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.approaches import APPROACHES
from benchmarks.schedscale import markdown, summarise
from benchmarks.sweep import median_runs, rows
from benchmarks.workloads import WORKLOADS, agrees

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_benchmark_runner_in_loopback_mode_on_tiny_data(tmp_path):
    results_dir = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "benchmarks", "run", "--quick", "--loopback",
        "--size", "4MiB", "--chunk-days", "5", "--memory-limit", "1GiB",
        "--data-dir", str(tmp_path / "data"), "--results-dir", str(results_dir),
        "--name", "smoke", "--overhead-tasks", "400", "--no-diagnose",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=590)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Using loopback" in proc.stdout

    results = json.loads((results_dir / "smoke.json").read_text())
    assert (results_dir / "smoke.md").read_text().startswith("# dask-federation benchmarks")
    try:  # the plot needs the [bench] extra
        import matplotlib  # noqa: F401
    except ImportError:
        pass
    else:
        assert (results_dir / "smoke.png").stat().st_size > 1000

    runs = {(r["workload"], r["approach"]): r for r in results["runs"]}
    assert set(runs) == {(w, a) for w in WORKLOADS for a in APPROACHES}
    for key, r in runs.items():
        assert "error" not in r, (key, r.get("traceback"))
        assert r["wall_s"] > 0 and r["tasks"] > 0, key
        assert all(v for k, v in r.items() if k.startswith("agrees_with_")), key

    for name, minimum in results["minimum"].items():
        fed, download = runs[(name, "federation")], runs[(name, "download")]
        pinned = runs[(name, "hand-pinned")]
        # download moves the raw inputs, the federation only reduced results
        assert download["cross_bytes"] >= 0.9 * minimum["input_nbytes"], name
        assert 0 < fed["cross_bytes"] < download["cross_bytes"] / 3, name
        assert fed["fed_traffic_total"] == fed["cross_bytes"], name
        # reads ran where the data are: no raw data through a "shared filesystem"
        assert fed["remote_read_bytes"] == 0 and pinned["remote_read_bytes"] == 0, name
        assert fed["cross_bytes"] >= minimum["minimum_bytes"] > 0, name
    # plain Dask placement reads other sites' data when it may
    assert sum(runs[(w, "shared-fs")]["remote_read_bytes"] for w in WORKLOADS) > 0

    overhead = results["overhead"]
    assert {r["variant"] for r in overhead["runs"]} == {"off", "on"}
    assert overhead["tasks"] >= 400
    assert all(r["scheduler_cpu_s"] > 0 for r in overhead["runs"])
    assert "overhead_pct" in overhead
    # the scale tables (benchmarks.schedscale) from the same runs: CPU and memory per task
    assert all(r["rss_peak_delta_bytes"] >= 0 and r["rss_idle_bytes"] > 0
               for r in overhead["runs"])
    row = summarise({**overhead, "load_1min_before": 0.0, "seconds": 1.0})
    assert row["tasks"] == overhead["tasks"] and row["cpu_ratio"] > 0
    assert f"| {overhead['tasks']:,} |" in markdown({"date": "d", "cpus": 2, "sizes": [row]})


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scale_benchmark_quick(tmp_path):
    """Many sites at one hub, in its smallest form: the report has every figure."""
    out = tmp_path / "scale.json"
    subprocess.run([sys.executable, "-m", "benchmarks.scale", "--quick", "--out", str(out)],
                   cwd=REPO, check=True, timeout=280, stdout=subprocess.DEVNULL)
    report = json.loads(out.read_text())
    assert (report["sites"], report["datasets"]) == (2, 10)
    assert report["catalog"]["rows"] == 10
    assert report["registration_s"] > 0 and report["hub_cpu_registration_s"] > 0
    assert report["hub_idle_cpu_fraction"] >= 0
    assert {"federation", "status"} <= report["dashboard"].keys()
    assert report["dashboard"]["federation"]["bytes"] > 0


def _namespaces_or_skip() -> None:
    from benchmarks.network import can_use_namespaces

    ok, why = can_use_namespaces()
    if not ok:
        pytest.skip(f"the shaped network needs namespaces: {why}")
    if not Path("/dev/net/tun").exists():
        pytest.skip("the delay router needs /dev/net/tun")


@pytest.mark.timeout(420)
def test_rtt_sweep_quick_through_the_delay_router(tmp_path):
    """``--rtt``: the matrix at two RTTs through the delay router, with the site-local
    bound, message counts and the measured RTT per setting; run it only under
    ``flock /tmp/netns.lock`` (fixed namespace names)."""
    _namespaces_or_skip()
    results_dir = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "benchmarks", "run", "--quick", "--rtt", "0", "30",
        "--size", "4MiB", "--chunk-days", "5", "--memory-limit", "1GiB",
        "--workloads", "climatology", "--overhead-tasks", "0",
        "--data-dir", str(tmp_path / "data"), "--results-dir", str(results_dir),
        "--name", "sweep",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=410)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((results_dir / "sweep.json").read_text())
    assert "## RTT sweep" in (results_dir / "sweep.md").read_text()
    assert "delay router" in results["meta"]["network"]["note"]

    # the router's RTT is near the setting (a TCP handshake to the hub per setting)
    measured = results["rtt_measured_ms"]
    assert measured["0.0"] < 5, measured
    assert 25 < measured["30.0"] < 40, measured

    approaches = {*APPROACHES, "site-local"}
    runs = {(r["workload"], r["rtt_ms"], r["approach"]): r for r in results["runs"]}
    assert set(runs) == {("climatology", rtt, a) for rtt in (0.0, 30.0) for a in approaches}
    for key, r in runs.items():
        assert "error" not in r, (key, r.get("traceback", r["error"]))
        assert r["wall_s"] > 0 and r["load_1min"] >= 0, key
        if key[2] != "site-local":
            assert all(v for k, v in r.items() if k.startswith("agrees_with_")), key
            assert r["messages"]["to_sites_batches"] > 0, key
    # the site-local bound computed the same reduction at the site, without a hub
    local = runs[("climatology", 30.0, "site-local")]
    fed = runs[("climatology", 30.0, "federation")]
    assert agrees(local["per_site"]["awi"]["fingerprint"], fed["fingerprint"])
    # the federation's reads went through the site queue, and it was counted
    assert results["admissions_counted"] and fed["messages"]["admitted_reads"] > 0
    sweep = {(r["workload"], r["rtt_ms"]): r for r in results["sweep"]}
    assert set(sweep) == {("climatology", rtt) for rtt in (0.0, 30.0)}
    assert all(r["fed_over_pinned"] > 0 and r["fed_over_site_local"] > 0 for r in sweep.values())


def test_repeated_runs_are_reported_by_their_median_run_with_the_spread():
    """``--repeats``: each workload × RTT × approach is reported by its median run (the
    lower of an even count), the ratio is of the medians, a failed repeat is dropped
    unless all failed, and single runs pass through unchanged."""
    def run(approach, wall, rtt=20.0, **extra):
        return {"workload": "w", "rtt_ms": rtt, "approach": approach, "wall_s": wall,
                "cross_bytes": 0, "tasks": 1, **extra}

    runs = [run("federation", 3.0), run("hand-pinned", 2.0), run("federation", 1.0),
            run("hand-pinned", 9.0), run("federation", 2.0), run("hand-pinned", 1.5),
            run("hand-pinned", 0.0, error="boom"), run("site-local", 0.5, rtt=0.0),
            run("site-local", 0.0, rtt=20.0, error="x"), run("site-local", 0.0, error="y")]
    median = {(r["approach"], r["rtt_ms"]): r for r in median_runs(runs)}
    assert median["federation", 20.0]["wall_s"] == 2.0
    assert median["federation", 20.0]["wall_s_runs"] == [1.0, 2.0, 3.0]
    assert median["hand-pinned", 20.0]["wall_s"] == 2.0  # 1.5, 2.0, 9.0; the error dropped
    assert median["hand-pinned", 20.0]["failed_repeats"] == 1
    assert median["site-local", 0.0] == runs[7]  # one run: unchanged
    assert median["site-local", 20.0]["error"] == "y"  # all failed: the last one
    table = rows({"runs": runs, "minimum": {"w": {}}})
    at20 = next(r for r in table if r["rtt_ms"] == 20.0)
    assert at20["fed_over_pinned"] == 1.0 and at20["fed_over_site_local"] is None
