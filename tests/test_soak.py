"""The soak run, short: repeated cross-site computations while workers are killed."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak

pytestmark = pytest.mark.slow  # a fixed two minutes


def test_soak_two_minutes_no_wrong_results():
    report = soak(minutes=2.0, kill_every=4.0)
    print(report)
    assert report["wrong_results"] == 0, report
    assert report["workers_killed"] >= 10, report
    assert report["computations"] >= 10, report
    # failures are allowed (a task whose worker dies three times fails with KilledWorker),
    # but they must be rare and never silent
    assert report["failures"] <= report["computations"] // 4, report
    assert report["hub_rss_end"] - report["hub_rss_start"] < 100 * 2**20, report
