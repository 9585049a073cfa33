"""The soak run, short: repeated cross-site computations while workers are killed."""

from __future__ import annotations

import pytest

from benchmarks.soak import soak

pytestmark = pytest.mark.slow  # about 40 s idle, at most six on a slow machine


@pytest.mark.timeout(600)
def test_soak_no_wrong_results():
    # ends once six workers were killed (each after its predecessor's replacement joined)
    # and six computations came back, so a slow machine takes longer, not fails
    report = soak(minutes=6.0, kill_every=3.0, enough=6)
    print(report)
    assert report["wrong_results"] == 0, report
    assert report["workers_killed"] >= 6, report
    assert report["computations"] >= 6, report
    # failures are allowed (a task whose worker dies three times fails with KilledWorker),
    # but they must be rare and never silent
    assert report["failures"] <= report["computations"] // 4, report
    assert report["hub_rss_end"] - report["hub_rss_start"] < 100 * 2**20, report
