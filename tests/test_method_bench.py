"""Smoke test of the shared-method round-trip benchmark (no timing assertions)."""

from __future__ import annotations

import pytest

from benchmarks.methods import measure

pytestmark = pytest.mark.slow  # benchmark smoke


def test_method_round_trip_benchmark_runs():
    report = measure(calls=20, sizes_mb=(1,))
    assert report["calls"] == 20
    assert 0 < report["echo_median_ms"] <= report["echo_p99_ms"]
    assert report["arrays"]["1 MB"]["seconds"] > 0
