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
from benchmarks.workloads import WORKLOADS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_benchmark_runner_in_loopback_mode_on_tiny_data(tmp_path):
    results_dir = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "benchmarks", "run", "--quick", "--loopback",
        "--size", "4MiB", "--chunk-days", "5", "--memory-limit", "1GiB",
        "--data-dir", str(tmp_path / "data"), "--results-dir", str(results_dir),
        "--name", "smoke", "--overhead-tasks", "1500", "--no-diagnose",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)
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
    assert overhead["tasks"] > 1000
    assert all(r["scheduler_cpu_s"] > 0 for r in overhead["runs"])
    assert "overhead_pct" in overhead
