"""The federation core against real processes and real files."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from distributed import get_task_stream, wait

from federation import UnknownDatasetError
from federation.read import DatasetNotHere
from federation.sitecalls import read_chunk

from .conftest import open_local, site_path, worker_sites


def _sites_of_tasks(fed, stream: list[dict], part: str | None = None) -> dict[str, int]:
    """Tasks run per site (of tasks whose key contains ``part``; fused reads keep
    "read-" in their names)."""
    sites = worker_sites(fed)
    out: dict[str, int] = {}
    for entry in stream:
        key = entry["key"]
        name = key[0] if isinstance(key, tuple) else key
        if part is None or part in str(name):
            site = sites[entry["worker"]]
            out[site] = out.get(site, 0) + 1
    return out


def test_catalog_lists_every_site_without_paths(fed, data_root):
    cat = fed.catalog()
    # (results other tests published on this shared federation are listed too)
    assert [d for d in cat["dataset"] if "/results/" not in d] == [
        "awi/sst", "dkrz/t2m", "geomar/chl"
    ]
    assert list(cat.columns) == [
        "dataset", "site", "variables", "dims", "shape", "dtype", "nbytes", "chunks",
        "description", "egress", "calendars", "version", "changed",
    ]
    row = cat.set_index("dataset").loc["awi/sst"]
    assert row["shape"] == (40, 180, 360) and row["dtype"] == "float32"
    assert row["chunks"] == {"time": 5, "lat": 180, "lon": 360}
    assert row["nbytes"] == open_local(site_path(data_root, "awi")).nbytes
    # the file path never leaves the site
    for name in cat["dataset"]:
        assert str(data_root) not in repr(fed.info(name).to_wire())


def test_open_dataset_is_lazy_and_matches_the_file(fed, data_root):
    with fed.traffic() as t:
        ds = fed.open_dataset("awi/sst")
    assert t.tasks == {} and t.total == 0
    local = open_local(site_path(data_root, "awi"))
    assert ds.sst.chunks == local.sst.chunks
    xr.testing.assert_identical(ds.coords.to_dataset(), local.coords.to_dataset())
    assert ds.sst.attrs == local.sst.attrs
    assert ds.sst.data.name.startswith("read-awi.sst.sst-")
    # chunks as in xarray
    assert fed.open_dataset("awi/sst", chunks={"time": 10}).sst.chunks[0] == (10,) * 4
    assert fed.open_dataset("awi/sst", chunks={"time": -1}).sst.chunks[0] == (40,)


def test_single_site_reduction_runs_only_at_that_site(fed, data_root):
    sst = fed.open_dataset("awi/sst").sst
    with get_task_stream(client=fed.client) as stream:
        result = sst.mean(["lat", "lon"]).compute()
    expected = open_local(site_path(data_root, "awi")).sst.mean(["lat", "lon"]).compute()
    xr.testing.assert_allclose(result, expected)
    assert set(_sites_of_tasks(fed, stream.data)) == {"awi"}
    # both of awi's workers shared the reads
    assert len({e["worker"] for e in stream.data}) == 2


def test_two_site_correlation_equals_direct_xarray(fed, data_root):
    sst = fed.open_dataset("awi/sst").sst
    chl = fed.open_dataset("geomar/chl").chl
    with get_task_stream(client=fed.client) as stream, fed.traffic() as t:
        r = xr.corr(sst.mean(["lat", "lon"]), chl.mean(["lat", "lon"]), dim="time").compute()

    local_sst = open_local(site_path(data_root, "awi")).sst
    local_chl = open_local(site_path(data_root, "geomar")).chl
    expected = xr.corr(local_sst.mean(["lat", "lon"]), local_chl.mean(["lat", "lon"]), dim="time")
    np.testing.assert_allclose(float(r), float(expected.compute()), rtol=1e-6)

    # reads ran where the data are
    reads = _sites_of_tasks(fed, stream.data, part="read-")
    assert reads == {"awi": 8, "geomar": 8}, reads
    assert t.tasks.keys() == {"awi", "geomar"}

    # only reduced results crossed borders: two 40-day series are 640 bytes
    raw = sst.nbytes + chl.nbytes
    crossed = t.bytes
    assert 0 < t.total < raw / 1000, (t.total, raw)
    assert crossed["nbytes"].sum() < 20 * 2 * 40 * 8
    assert set(crossed["source"]) <= {"awi", "geomar"}
    assert "client" in set(crossed["destination"])


def test_netcdf_site_and_three_sites(fed, data_root):
    sst = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
    t2m = fed.open_dataset("dkrz/t2m").t2m.sel(lat=slice(-30, 30)).mean(["lat", "lon"])
    chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
    with fed.traffic() as t:
        table = xr.Dataset({"sst": sst, "t2m": t2m, "chl": chl}).compute()
    local = open_local(site_path(data_root, "dkrz")).t2m
    xr.testing.assert_allclose(table.t2m, local.sel(lat=slice(-30, 30)).mean(["lat", "lon"]))
    assert set(t.tasks) == {"awi", "dkrz", "geomar"}
    assert t.total < 100_000


def test_misrouted_read_fails_loudly(fed):
    geomar = [a for a, s in worker_sites(fed).items() if s == "geomar"]
    # wrapped in a lambda the hub does not see the read, so geomar's worker runs it
    misrouted = fed.client.submit(lambda: read_chunk("awi/sst", "sst", (slice(0, 1),) * 3),
                                  workers=geomar, pure=False)
    with pytest.raises(DatasetNotHere, match="'awi/sst' is not held at site 'geomar'.* 'awi'"):
        misrouted.result(timeout=30)


def test_user_pinning_a_read_elsewhere_is_overridden(fed):
    """Where data is read is decided by the federation, not by worker= hints."""
    geomar = [a for a, s in worker_sites(fed).items() if s == "geomar"]
    future = fed.client.submit(
        read_chunk, "awi/sst", "sst", (slice(0, 1), slice(0, 2), slice(0, 2)), workers=geomar
    )
    assert future.result(timeout=30).shape == (1, 2, 2)
    assert worker_sites(fed)[fed.client.who_has(future)[future.key][0]] == "awi"


def test_unknown_dataset_lists_what_exists_and_hub_keeps_serving(fed):
    with pytest.raises(UnknownDatasetError) as err:
        fed.open_dataset("awi/sstt")
    msg = str(err.value)
    assert "Did you mean 'awi/sst'" in msg and "geomar/chl" in msg
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'nowhere/x'"):
        fed.open_dataset("nowhere/x")
    # bare names resolve when unique
    assert "chl" in fed.open_dataset("chl")
    with pytest.raises(ValueError, match=r"unknown dimension\(s\) \['depth'\]"):
        fed.open_dataset("awi/sst", chunks={"depth": 1})
    datasets = fed.catalog()["dataset"]
    assert len([d for d in datasets if "/results/" not in d]) == 3


def test_sites_report(fed):
    sites = fed.sites()
    assert set(sites) == {"awi", "dkrz", "geomar"}
    awi = sites["awi"]
    assert awi["status"] == "connected"
    assert len(awi["workers"]) == 2 and awi["nthreads"] == 4
    assert awi["datasets"] == ["sst"]
    assert awi["memory_limit"] == 2 * 2**30


def test_rebalance_and_replicate_stay_inside_the_site(fed):
    sst = fed.open_dataset("awi/sst").sst.data
    chunks = fed.client.persist(sst.to_delayed().ravel().tolist())  # raw chunks, at awi
    wait(chunks)
    sites = worker_sites(fed)

    def holder_sites():
        return {sites[w] for ws in fed.client.who_has(chunks).values() for w in ws}

    assert holder_sites() == {"awi"}
    fed.client.rebalance(chunks)  # plain Dask would spread them over idle sites
    assert holder_sites() == {"awi"}
    fed.client.replicate(chunks, n=4)
    assert holder_sites() == {"awi"}
    assert all(len(ws) == 2 for ws in fed.client.who_has(chunks).values())
    fed.client.cancel(chunks)


def test_xarray_engine(local_federation, data_root):
    url = local_federation.address.replace("tcp://", "fed://") + "/awi/sst"
    ds = xr.open_dataset(url, engine="federation")
    assert ds.sst.data.name.startswith("read-awi.sst.sst-")
    local = open_local(site_path(data_root, "awi")).sst
    np.testing.assert_allclose(float(ds.sst.mean().compute()), float(local.mean()), rtol=1e-5)
