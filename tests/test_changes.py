"""Datasets that keep changing while a site serves them (issue 15).

One federation for the module: a hub and site ``chg`` (real processes) checking its
datasets every second (``refresh: 1``). Each test changes files as a provider would — a
zarr append, a file added to a glob, ``os.replace`` of a netCDF file, a rewrite in place
with netCDF4, an Icechunk commit — and checks that the new data are visible within the
refresh, that the version changed, that nothing was read stale and that the writer never
failed; and that computations pinned to the version they were built from either finish
on the old extent (appends) or fail with ``DatasetChanged`` naming both versions.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import icechunk
import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from distributed import get_task_stream

from federation.errors import DatasetChanged
from federation.local import LocalFederation, write_site_config
from federation.standing import StandingError

SITE = "chg"
#: seconds the site waits between checks, and how long a test waits for a change
REFRESH, WAIT = 1, 30


def _days(start: int, n: int, offset: float = 0.0) -> xr.Dataset:
    """``n`` daily steps of a small field from day ``start``; values depend on the day."""
    time_ = pd.date_range("2000-01-01", periods=start + n, freq="D")[start:]
    lat, lon = np.linspace(-60, 60, 4), np.arange(5) * 72.0
    values = (np.arange(start, start + n)[:, None, None] + offset
              + lat[None, :, None] / 100 + lon[None, None, :] / 1000)
    return xr.Dataset(
        {"sst": (("time", "lat", "lon"), values.astype("f4"))},
        coords={"time": time_, "lat": lat, "lon": lon},
    )


def _write_nc(path: Path, ds: xr.Dataset) -> None:
    ds.to_netcdf(path, unlimited_dims=["time"], engine="netcdf4")


def _rewrite_in_place(path: Path, ds: xr.Dataset) -> None:
    """What a provider's netCDF4 script does: open the served file with mode "w"."""
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("lat", ds.sizes["lat"])
        nc.createDimension("lon", ds.sizes["lon"])
        t = nc.createVariable("time", "i8", ("time",))
        t.units, t.calendar = "days since 2000-01-01", "proleptic_gregorian"
        t[:] = (ds.time.values - np.datetime64("2000-01-01")) // np.timedelta64(1, "D")
        for name in ("lat", "lon"):
            nc.createVariable(name, "f8", (name,))[:] = ds[name].values
        nc.createVariable("sst", "f4", ("time", "lat", "lon"))[:] = ds.sst.values


@pytest.fixture(scope="module")
def site_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("changes")
    _days(0, 10).chunk({"time": 2}).to_zarr(root / "grow.zarr", consolidated=False)
    _days(0, 10).chunk({"time": 2}).to_zarr(root / "daily.zarr", consolidated=False)
    (root / "files").mkdir()
    for i in range(3):
        _write_nc(root / "files" / f"day_{i:02d}.nc", _days(2 * i, 2))
    _write_nc(root / "swap.nc", _days(0, 6))
    _write_nc(root / "inplace.nc", _days(0, 6))
    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(root / "ice")))
    session = repo.writable_session("main")
    _days(0, 6).to_zarr(session.store, consolidated=False)
    repo.create_tag("v1", snapshot_id=session.commit("six days"))
    return root


@pytest.fixture(scope="module")
def lf(site_root, tmp_path_factory):
    config = write_site_config(
        site_root / "chg.yaml", site=SITE, workers=1, nthreads=2, memory_limit="1GiB",
        refresh=REFRESH, local_directory=str(site_root / "scratch"),
        results_dir="results",
        datasets={
            "grow": {"path": "grow.zarr"},
            "daily": {"path": "daily.zarr"},
            "files": {"path": "files/day_*.nc"},
            "swap": {"path": "swap.nc"},
            "inplace": {"path": "inplace.nc"},
            "ice": {"path": "ice", "engine": "icechunk"},
        },
    )
    with LocalFederation(tmp_path_factory.mktemp("logs"), dashboard=False) as lf:
        lf.start_site(config, name=SITE)
        yield lf


@pytest.fixture(scope="module")
def fed(lf):
    with lf.connect() as fed:
        yield fed


def _wait_for_new_version(fed, ref: str, old: str) -> tuple[str, float]:
    """The new version of ``ref`` and how long it took to appear in the catalog."""
    start = time.monotonic()
    while time.monotonic() - start < WAIT:
        version = fed.info(ref).version
        if version != old:
            return version, time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{ref} kept version {old} for {WAIT} s")


def _compute(fed, obj):
    return fed.client.compute(obj).result()


def test_zarr_append_is_seen_and_pins_old_extent(fed, site_root):
    ref = f"{SITE}/grow"
    old = fed.open_dataset(ref)
    version = fed.info(ref).version
    pinned_sum = old.sst.sum()  # built from the 10 steps
    climatology = old.sst.mean("time")
    _days(10, 4).chunk({"time": 2}).to_zarr(
        site_root / "grow.zarr", append_dim="time", consolidated=False
    )
    new_version, seen_after = _wait_for_new_version(fed, ref, version)
    assert seen_after < REFRESH + 10
    new = fed.open_dataset(ref)
    assert new.sizes["time"] == 14
    plain = xr.open_zarr(site_root / "grow.zarr", consolidated=False)
    xr.testing.assert_identical(_compute(fed, new.sst), plain.sst.compute())
    # the computation built before the append reads the old extent, and right values
    assert float(_compute(fed, pinned_sum)) == pytest.approx(float(plain.sst[:10].sum()))
    # the provenance of a result names the version its reads were pinned to
    published = fed.publish_result("climatology", climatology)
    assert fed.provenance(published)["datasets"] == [{"dataset": ref, "version": version}]
    row = fed.catalog().set_index("dataset").loc[ref]
    assert row["version"] == new_version
    assert row["changed"] > pd.Timestamp.now("UTC") - pd.Timedelta("5min")


def test_file_added_to_glob_is_seen(fed, site_root):
    ref = f"{SITE}/files"
    version = fed.info(ref).version
    old = fed.open_dataset(ref).sst.mean()
    _write_nc(site_root / "files" / "day_03.nc", _days(6, 2))
    _wait_for_new_version(fed, ref, version)
    ds = fed.open_dataset(ref)
    assert ds.sizes["time"] == 8
    plain = xr.open_mfdataset(sorted((site_root / "files").glob("*.nc")))
    np.testing.assert_array_equal(_compute(fed, ds.sst), plain.sst.values)
    assert float(_compute(fed, old)) == pytest.approx(float(plain.sst[:6].mean()))


def test_os_replace_is_seen_and_fails_pinned_reads(fed, site_root):
    ref = f"{SITE}/swap"
    version = fed.info(ref).version
    pinned = fed.open_dataset(ref).sst.sum()
    assert float(_compute(fed, fed.open_dataset(ref).sst.sum())) == pytest.approx(
        float(_days(0, 6).sst.sum())
    )
    tmp = site_root / "swap.new.nc"
    _write_nc(tmp, _days(0, 6, offset=100))
    os.replace(tmp, site_root / "swap.nc")
    new_version, _ = _wait_for_new_version(fed, ref, version)
    fresh = float(_compute(fed, fed.open_dataset(ref).sst.sum()))
    assert fresh == pytest.approx(float(_days(0, 6, offset=100).sst.sum()))
    with pytest.raises(DatasetChanged, match=f"version {version}.*version {new_version}"):
        _compute(fed, pinned)


def test_rewrite_in_place_with_netcdf4_never_fails_the_writer(fed, site_root):
    ref = f"{SITE}/inplace"
    path = site_root / "inplace.nc"
    version = fed.info(ref).version
    # the site has read the file (and would have kept it open and locked before)
    assert float(_compute(fed, fed.open_dataset(ref).sst.sum())) == pytest.approx(
        float(_days(0, 6).sst.sum())
    )
    expected = _days(0, 8, offset=50)
    _rewrite_in_place(path, expected)  # raised PermissionError while the site held it
    _wait_for_new_version(fed, ref, version)
    ds = fed.open_dataset(ref)
    assert ds.sizes["time"] == 8
    np.testing.assert_array_equal(_compute(fed, ds.sst), expected.sst.values)
    with xr.open_dataset(path) as plain:  # the file is intact for plain readers too
        np.testing.assert_array_equal(plain.sst.values, expected.sst.values)


def test_icechunk_commit_is_seen_and_pinned_reads_keep_their_snapshot(fed, site_root):
    ref = f"{SITE}/ice"
    version = fed.info(ref).version
    pinned = fed.open_dataset(ref).sst.sum()
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(site_root / "ice")))
    session = repo.writable_session("main")
    _days(0, 6, offset=1000).to_zarr(session.store, mode="a", consolidated=False)
    session.commit("recalibrated")
    _wait_for_new_version(fed, ref, version)
    fresh = float(_compute(fed, fed.open_dataset(ref).sst.sum()))
    assert fresh == pytest.approx(float(_days(0, 6, offset=1000).sst.sum()))
    # the repository keeps the old snapshot: the pinned computation reads it
    assert float(_compute(fed, pinned)) == pytest.approx(float(_days(0, 6).sst.sum()))
    # and old versions open by tag
    tagged = fed.open_dataset(ref, version="v1")
    assert float(_compute(fed, tagged.sst.sum())) == pytest.approx(float(_days(0, 6).sst.sum()))
    with pytest.raises(ValueError, match="keeps no old versions"):
        fed.open_dataset(f"{SITE}/swap", version="v1")


def _page_tables(dask_scheduler) -> dict:
    """The data of the federation page's standing and versions tables, on the hub."""
    from scheduler_plugins.dashboard.page import FederationPage
    from scheduler_plugins.dashboard.plugin import DashboardPlugin

    page = FederationPage(dask_scheduler, dask_scheduler.plugins[DashboardPlugin.name])
    return {name: dict(page.components[name].source.data) for name in ("standing", "versions")}


def area_mean(ds: xr.Dataset) -> xr.DataArray:
    return ds.sst.mean(["lat", "lon"])


def _wait_for_steps(fed, ref: str, steps: int) -> xr.Dataset:
    start = time.monotonic()
    while time.monotonic() - start < WAIT * 2:
        ds = fed.open_dataset(ref)
        if ds.sizes["time"] >= steps:
            return ds
        time.sleep(0.2)
    raise AssertionError(f"{ref} did not reach {steps} steps: {fed.standing_list()}")


def test_standing_area_mean_appends_only_new_steps_and_survives_a_hub_restart(
    fed, lf, site_root
):
    dataset = f"{SITE}/daily"
    with pytest.raises(StandingError, match="not per-step"):
        fed.standing("anomaly", lambda ds: ds.sst - ds.sst.mean("time"), dataset)
    ref = fed.standing("sst-mean", area_mean, dataset)
    assert fed.open_dataset(ref).sizes["time"] == 10
    with get_task_stream(client=fed.client) as stream:
        _days(10, 10).chunk({"time": 2}).to_zarr(
            site_root / "daily.zarr", append_dim="time", consolidated=False
        )
        result = _wait_for_steps(fed, ref, 20)
    assert result.sizes["time"] == 20  # exactly the 10 new days
    full = _compute(fed, area_mean(fed.open_dataset(dataset)))
    xr.testing.assert_allclose(_compute(fed, result.sst), full.rename("sst"))
    # read tasks (fused with what follows them, "...-read-...") of the standing update
    keys = [tuple(t["key"]) for t in stream.data if isinstance(t["key"], (list, tuple))]
    reads = {k for k in keys if "read-" in str(k[0])}
    assert len(reads) == 5  # the 5 new chunks of 2 days, not the 10 of a recompute
    row = fed.standing_list().set_index("result").loc[ref]
    assert (row["state"], row["steps"], row["dataset"]) == ("active", 20, dataset)
    # the federation page's standing computations and dataset versions tables
    tables = fed.client.run_on_scheduler(_page_tables)
    assert tables["standing"]["result"] == [ref] and tables["standing"]["steps"] == ["20"]
    assert dataset in tables["versions"]["dataset"]

    lf.stop("hub")
    lf.start_hub()
    _days(20, 3).chunk({"time": 2}).to_zarr(
        site_root / "daily.zarr", append_dim="time", consolidated=False
    )
    with lf.connect() as again:
        result = _wait_for_steps(again, ref, 23)
        xr.testing.assert_allclose(
            again.client.compute(result.sst).result(),
            again.client.compute(area_mean(again.open_dataset(dataset))).result().rename("sst"),
        )
        again.standing_cancel(ref)
        assert again.standing_list().set_index("result").loc[ref, "state"] == "cancelled"
