"""A corpus of files in the conventions climate data really uses, made with plain xarray.

``write_corpus(folder)`` writes them and returns the site's ``datasets:`` config (paths
relative to ``folder``). Each entry must open through the federation exactly as with
``xr.open_dataset`` (``xr.open_mfdataset`` for globs) and its ``open_options``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

#: datasets with a time axis: the time tests (``.dt``, groupby, resample) run on them
TIMED = (
    "noleap", "day360", "all_leap", "julian", "pre1582", "packed", "timedelta",
    "bigendian", "glob", "zarr2", "zarr3", "contiguous", "group", "options",
)


def _daily(calendar: str, start: str = "2000-01-01", days: int = 730) -> xr.Dataset:
    time = xr.date_range(start, periods=days, freq="D", calendar=calendar, use_cftime=True)
    rng = np.random.default_rng(0)
    bounds = np.stack([time.values, time.shift(1, "D").values], axis=1)
    ds = xr.Dataset(
        {
            "tas": (("time", "lat"), rng.normal(280, 5, (days, 3)).astype("float32"),
                    {"units": "K", "standard_name": "air_temperature"}),
            "time_bnds": (("time", "bnds"), bounds),
        },
        coords={"time": time, "lat": ("lat", [-45.0, 0.0, 45.0], {"units": "degrees_north"})},
        attrs={"title": f"{calendar} model output", "Conventions": "CF-1.8"},
    )
    ds.time.attrs["bounds"] = "time_bnds"
    ds.time.encoding.update(units="days since 1850-01-01", calendar=calendar)
    ds.time_bnds.encoding.update(units="days since 1850-01-01", calendar=calendar)
    return ds


def _standard_daily(days: int = 400) -> xr.Dataset:
    time = xr.date_range("2001-01-01", periods=days, freq="D")
    return xr.Dataset(coords={"time": time})


def write_corpus(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Write every corpus file into ``folder``; returns ``{name: dataset config}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(1)

    for name, cal in [("noleap", "noleap"), ("day360", "360_day"), ("all_leap", "all_leap"),
                      ("julian", "julian")]:
        _daily(cal).to_netcdf(folder / f"{name}.nc")
        datasets[name] = {"path": f"{name}.nc"}
    # before the Gregorian reform: cftime proleptic dates in the standard calendar
    _daily("standard", start="1500-01-01").to_netcdf(folder / "pre1582.nc")
    datasets["pre1582"] = {"path": "pre1582.nc"}

    # strings: |S bytes (char arrays on disk), NC_STRING, explicit char arrays, <U coords
    station = np.array(["ALERT", "BARROW"])
    strings = xr.Dataset(
        {
            "code": ("station", np.array([b"abcd", b"wxyz"], dtype="S4")),
            "label": ("station", np.array(["Alert, Nunavut", "Utqiagvik"], dtype=object)),
            "flag": ("station", np.array(["ok", "bad"])),
            "pressure": (("station", "level"), rng.normal(1000, 10, (2, 4))),
        },
        coords={"station": station, "level": [1000, 850, 500, 250]},
    )
    strings.flag.encoding["dtype"] = "S1"  # stored as a character array
    strings.to_netcdf(folder / "strings.nc")
    datasets["strings"] = {"path": "strings.nc"}

    # zarr v2 and v3 with string labels and a time axis
    for fmt in (2, 3):
        z = _standard_daily(200).assign_coords(site=("site", ["ALERT", "BARROW", "CAPE"]))
        z["obs"] = (("time", "site"), rng.normal(0, 1, (200, 3)).astype("float32"))
        z.obs.encoding["chunks"] = (50, 3)
        z.to_zarr(folder / f"labels_v{fmt}.zarr", zarr_format=fmt, mode="w", consolidated=False)
        datasets[f"zarr{fmt}"] = {"path": f"labels_v{fmt}.zarr"}

    # packed int16 with positive and negative scale, _Unsigned bytes, typed/array attrs
    packed = _standard_daily()
    n = packed.sizes["time"]
    packed["sst"] = ("time", (15 + 10 * np.sin(np.arange(n) / 20)).astype("float32"))
    packed["sst"][5] = np.nan
    packed.sst.encoding.update(dtype="int16", scale_factor=0.01, add_offset=10.0,
                               _FillValue=np.int16(-32767), missing_value=np.int16(-32767))
    packed["depth"] = ("time", np.linspace(0, 50, n))
    packed.depth.encoding.update(dtype="int16", scale_factor=-0.002, add_offset=0.0,
                                 _FillValue=np.int16(32767))
    packed["quality"] = ("time", np.arange(n, dtype="uint8") % 250)
    packed.quality.encoding.update(dtype="int8", _Unsigned="true", _FillValue=np.int8(-1))
    packed.sst.attrs.update(
        valid_range=np.array([-5.0, 40.0], dtype="float32"),
        flag_values=np.array([0, 1, 2], dtype="int8"), count=np.int32(7),
        resolution=np.float32(0.25), long_name="sea surface temperature",
    )
    packed.attrs["version"] = np.int16(3)
    packed.to_netcdf(folder / "packed.nc")
    datasets["packed"] = {"path": "packed.nc"}

    # timedelta variables
    td = _standard_daily(100)
    td["lead"] = ("time", (np.arange(100) % 10).astype("timedelta64[D]").astype("m8[ns]"))
    td["lead"].attrs["long_name"] = "forecast lead"
    td["x"] = ("time", np.arange(100.0))
    td.to_netcdf(folder / "timedelta.nc")
    datasets["timedelta"] = {"path": "timedelta.nc"}

    # big-endian storage
    be = _standard_daily(120)
    be["pr"] = ("time", rng.gamma(2, 1, 120).astype(">f4"))
    be.pr.encoding["endian"] = "big"
    be.to_netcdf(folder / "bigendian.nc", engine="netcdf4")
    datasets["bigendian"] = {"path": "bigendian.nc"}

    # netCDF4 groups: each group is a dataset of its own
    ocean = _standard_daily(90)
    ocean["temp"] = ("time", rng.normal(4, 1, 90))
    ocean.to_netcdf(folder / "groups.nc", group="ocean", mode="w")
    ice = xr.Dataset({"extent": ("t", np.arange(3.0))})
    ice.to_netcdf(folder / "groups.nc", group="ice", mode="a")
    datasets["group"] = {"path": "groups.nc", "engine": "h5netcdf",
                         "open_options": {"group": "ocean"}}

    # a glob of files with a different scale per file
    (folder / "multi").mkdir(exist_ok=True)
    for i, year in enumerate((2001, 2002, 2003)):
        part = xr.Dataset(coords={"time": xr.date_range(f"{year}-01-01", periods=365)})
        part["v"] = ("time", np.linspace(i, i + 1, 365) * 10 ** i)
        part.v.encoding.update(dtype="int16", scale_factor=10.0 ** (i - 3), _FillValue=-1)
        part.to_netcdf(folder / "multi" / f"v_{year}.nc")
    datasets["glob"] = {"path": "multi/v_*.nc",
                        "open_options": {"combine": "nested", "concat_dim": "time"}}

    # a contiguous (unchunked) variable of 8 MB
    big = _standard_daily(1000)
    big["field"] = (("time", "x"), rng.normal(0, 1, (1000, 1000)))
    big.field.encoding["contiguous"] = True
    big.to_netcdf(folder / "contiguous.nc", engine="netcdf4")
    datasets["contiguous"] = {"path": "contiguous.nc"}

    # open options: no mask/scale, one variable dropped, cftime decoding asked for
    datasets["options"] = {
        "path": "packed.nc",
        "open_options": {"mask_and_scale": False, "drop_variables": ["depth"],
                         "decode_times": {"use_cftime": True}},
    }
    return datasets


def decode_options(options: dict[str, Any]) -> dict[str, Any]:
    """``open_options`` as plain xarray takes them (a coder for a mapping)."""
    from federation.catalog import decode_kwargs

    return {**options, **decode_kwargs(options)}


def open_plain(folder: str | os.PathLike, entry: dict[str, Any]) -> xr.Dataset:
    """What plain xarray gives for a corpus entry, at the site (computations on it must
    use a local scheduler: ``dask.config.set(scheduler="threads")``)."""
    if entry.get("engine") == "icechunk":
        return open_icechunk(folder, entry)
    path = entry["path"] if "://" in entry["path"] else str(Path(folder) / entry["path"])
    options = decode_options(entry.get("open_options", {}))
    if "*" in path:
        import glob

        return xr.open_mfdataset(sorted(glob.glob(path)), engine=entry.get("engine"), **options)
    return xr.open_dataset(path, engine=entry.get("engine"), **options)


def write_reference_sources(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """A kerchunk reference file and an Icechunk repository (branch ``main``, tag ``v1``)
    in ``folder``; returns their dataset configs."""
    import json

    import icechunk
    from kerchunk.hdf import SingleHdf5ToZarr

    folder = Path(folder)
    refs = SingleHdf5ToZarr(str(folder / "noleap.nc")).translate()
    (folder / "noleap.json").write_text(json.dumps(refs))

    repo = icechunk.Repository.create(icechunk.local_filesystem_storage(str(folder / "repo")))
    first = _daily("360_day", days=120)
    session = repo.writable_session("main")
    first.to_zarr(session.store, consolidated=False)
    repo.create_tag("v1", snapshot_id=session.commit("first version"))
    session = repo.writable_session("main")
    first[["tas"]].assign(tas=first.tas + 1).to_zarr(session.store, mode="a", consolidated=False)
    session.commit("warmer")
    return {
        "kerchunk": {"path": "noleap.json", "engine": "kerchunk"},
        "icechunk_main": {"path": "repo", "engine": "icechunk"},
        "icechunk_v1": {"path": "repo", "engine": "icechunk", "open_options": {"tag": "v1"}},
    }


def open_icechunk(folder: str | os.PathLike, entry: dict[str, Any]) -> xr.Dataset:
    """Plain xarray on an Icechunk repository's branch or tag."""
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(Path(folder) / "repo")))
    version = entry.get("open_options") or {"branch": "main"}
    return xr.open_zarr(repo.readonly_session(**version).store, consolidated=False, chunks=None)
