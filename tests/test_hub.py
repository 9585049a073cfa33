"""The hub pieces outside the session federation: preload into a plain scheduler, demo."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from federation.local import LocalFederation, free_port

from .conftest import make_site, open_local


def test_preload_into_a_plain_dask_scheduler(tmp_path):
    """`dask scheduler --preload scheduler_plugins` is a hub too."""
    lf = LocalFederation(tmp_path / "logs", dashboard=False)
    port = free_port()
    lf.address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
         "--dashboard-address", ":0", "--preload", "scheduler_plugins"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        cfg = make_site(tmp_path, "solo", "sst", "sst.zarr", size=10 * 180 * 360 * 4)
        lf.start_site(cfg)
        with lf.connect() as fed:
            assert list(fed.catalog()["dataset"]) == ["solo/sst"]
            with fed.traffic() as t:
                mean = fed.open_dataset("solo/sst").sst.mean().compute()
            np.testing.assert_allclose(mean, open_local(tmp_path / "solo" / "sst.zarr").sst.mean(),
                                       rtol=1e-5)
            assert t.tasks.keys() == {"solo"}
    finally:
        lf.close()
        scheduler.terminate()
        scheduler.wait(30)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "demo", "--size", "20MB",
         "--directory", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for text in ("corr(sst, chl)", "Tasks run per site: awi:", "Bytes across site borders",
                 "a download-everything approach moves", "federation page http://",
                 "monthly anomaly corr(sst, chl)"):
        assert text in out, out
    assert float(out.split("corr(sst, chl)")[1].split()[0]) < -0.5
