"""A reduction over a dataset 4× larger than its site's memory streams through the site."""

from __future__ import annotations

import threading

import numpy as np
import xarray as xr
from dask.utils import parse_bytes

from .conftest import make_site, open_local, worker_sites

MEMORY_LIMIT = "400MiB"
DAYS = 4 * parse_bytes(MEMORY_LIMIT) // (180 * 360 * 4) + 1  # 4x the worker's memory


def test_reduction_over_4x_memory_completes_without_killing_workers(
    tmp_path, local_federation, fed
):
    cfg = make_site(
        tmp_path, "deep", "sst", "big.zarr", size=DAYS * 180 * 360 * 4, chunk_days=20,
        workers=1, nthreads=2, memory_limit=MEMORY_LIMIT,
    )
    local_federation.start_site(cfg)
    before = {a for a, s in worker_sites(fed).items() if s == "deep"}
    sst = fed.open_dataset("deep/sst").sst
    assert sst.nbytes > 4 * parse_bytes(MEMORY_LIMIT)

    peak = [0]
    done = threading.Event()

    def watch():  # the hub's view of the site's process memory, from worker heartbeats
        while not done.is_set():
            peak[0] = max(peak[0], fed.sites()["deep"]["memory_used"])
            done.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        # two reductions share every chunk, so raw chunks stay in memory until both ran
        result = xr.Dataset(
            {"mean": sst.mean(["lat", "lon"]), "max": sst.max(["lat", "lon"])}
        ).compute()
    finally:
        done.set()
        watcher.join()

    after = {a for a, s in worker_sites(fed).items() if s == "deep"}
    assert after == before  # the same worker process survived: nothing was killed
    print(f"peak process memory {peak[0] / 2**20:.0f} MiB of {MEMORY_LIMIT}")
    # the site queue keeps it below distributed's spill threshold (70 %); without the
    # queue this run peaks around 310 MiB and has to spill
    assert peak[0] < 0.7 * parse_bytes(MEMORY_LIMIT), peak[0]
    local = open_local(tmp_path / "deep" / "big.zarr").sst
    expected = xr.Dataset(  # one pass over the store for both references
        {"mean": local.mean(["lat", "lon"]), "max": local.max(["lat", "lon"])}
    ).compute()
    np.testing.assert_allclose(result["mean"], expected["mean"], rtol=1e-5)
    np.testing.assert_allclose(result["max"], expected["max"])
    local_federation.stop("deep")
