"""Each site's worker state lives in its worker's ``SiteContext``, not in module globals:
two sites' workers in one process (an in-process hub, ``gen_cluster``) read their own
data under their own capability keys, and write results into their own folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from dask import delayed

from federation import DatasetNotHere, NotAtSite, ResultError
from federation.sitecalls import read_chunk, write_result
from federation.sources import ZarrSource

from .hub import hub_cluster

#: the two sites' data, written by the fixture below (sources are named at import)
DATA = Path(tempfile.gettempdir()) / f"federation-unit-sitecontext-{os.getpid()}"
#: both sites hold a dataset ``sst``; awi's is all 1, geomar's all 2
SOURCES = {f"{site}/sst": ZarrSource(str(DATA / f"{site}.zarr")) for site in ("awi", "geomar")}
RESULTS = {"awi": str(DATA / "awi-results")}
INDEX = (slice(0, 2), slice(0, 3))


@pytest.fixture(autouse=True, scope="module")
def _data():
    for value, source in enumerate(SOURCES.values(), start=1):
        xr.Dataset({"sst": (("time", "lat"), np.full((4, 3), float(value)))}).to_zarr(
            source.path, mode="w", consolidated=False)
    yield
    shutil.rmtree(DATA, ignore_errors=True)


@hub_cluster("awi/sst", "geomar/sst", None, sources=SOURCES, zarr=True)
async def test_two_sites_in_one_process_read_their_own_data(c, s, a, g, plain):
    # the hub signs each read with its site's key; each worker checks with its own
    for ref, worker, value in (("awi/sst", a, 1.0), ("geomar/sst", g, 2.0)):
        future = c.submit(read_chunk, ref, "sst", INDEX, pure=False)
        np.testing.assert_array_equal(await future, np.full((2, 3), value))
        assert s.tasks[future.key].who_has == {s.workers[worker.address]}
    # hidden in a lambda the hub does not see the read: geomar runs it, holds no awi data
    misrouted = c.submit(lambda: read_chunk("awi/sst", "sst", INDEX),
                         workers=[g.address], pure=False)
    with pytest.raises(DatasetNotHere, match="'awi/sst' is not held at site 'geomar'"):
        await misrouted
    # a worker without a site's plugin has no context
    stray = c.submit(lambda: read_chunk("awi/sst", "sst", INDEX),
                     workers=[plain.address], pure=False)
    with pytest.raises(NotAtSite, match="is not a site's worker .* SiteWorkerPlugin"):
        await stray


def test_a_site_bound_call_outside_a_worker_names_the_fix():
    with pytest.raises(NotAtSite, match="runs only in a task on a site's worker"):
        read_chunk("awi/sst", "sst", INDEX)


@hub_cluster("awi/sst", "geomar/sst", sources=SOURCES, results_dirs=RESULTS, zarr=True)
async def test_the_results_writer_uses_its_workers_context(c, s, a, g):
    mean = xr.Dataset({"m": ("lat", np.arange(3.0))})
    ref = "awi/results/mean"
    info = await c.compute(delayed(write_result, pure=False)(ref, mean, {}, False))
    assert info["name"] == "results/mean"
    stored = Path(RESULTS["awi"]) / "mean.zarr"
    xr.testing.assert_identical(xr.open_zarr(stored, consolidated=False, chunks=None).load(), mean)
    # awi's worker now reads the result from its own results folder
    assert (await c.submit(read_chunk, ref, "m", (slice(0, 3),), pure=False)).tolist() == [
        0.0, 1.0, 2.0]
    # geomar's worker, in the same process, does not write awi's results
    elsewhere = c.submit(lambda: write_result("awi/results/other", mean, {}, False),
                         workers=[g.address], pure=False)
    with pytest.raises(ResultError, match="can only be written at site 'awi'"):
        await elsewhere
    assert not (Path(RESULTS["awi"]) / "other.zarr").exists()
