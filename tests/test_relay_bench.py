"""``python -m benchmarks.relay --quick --loopback`` runs end to end and writes its report.

No timing assertions (the machine is shared): only that both federations ran, the
transfer went through the relay for outbound-only sites and not for direct ones, and the
CPU figures are there for the hub and both sites.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_relay_benchmark_quick_report(tmp_path):
    out = tmp_path / "relay.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.relay", "--quick", "--loopback", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=290,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["shaped"] == {"skipped": "--loopback given"}
    run = report["loopback"]
    assert len(run["load"]["before"]) == 3 and len(run["load"]["after"]) == 3
    assert run["network"]["kind"] == "loopback"
    mb, repeats = report["transfer_MB"], report["repeats"]
    for kind in ("direct", "relayed"):
        r = run[kind]
        assert r["transfer_s"] > 0 and r["reduction_s"] > 0, kind
        assert set(r["transfer_cpu_s_per_GB"]) == {"hub", "a", "b"}, kind
        assert all(v >= 0 for v in r["transfer_cpu_s_per_GB"].values()), kind
        # the array crossed the border once per transfer (and once in the warm-up)
        assert r["crossed_borders_bytes"] >= (repeats + 1) * mb * 2**20, kind
    assert run["direct"]["relayed_bytes"] == 0
    # every relayed transfer went through the relay, whole
    assert run["relayed"]["transfer_relayed_bytes"] >= repeats * mb * 2**20
    assert run["relayed"]["relayed_bytes"] >= run["relayed"]["crossed_borders_bytes"]
    assert run["relayed_over_direct_throughput"] > 0
    assert set(run["relayed_over_direct"]) == {"reduction_s", "transfer_s"}
