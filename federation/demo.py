"""``dask federation demo``: three institutes on one machine, one cross-site analysis.

The data are generated but shaped like the real thing: daily fields on a shared
1° lat/lon grid with a land mask, a seasonal cycle, a common interannual signal
(so the sites' series really correlate) and weather noise.

- ``awi``    sea-surface temperature (zarr)
- ``geomar`` surface chlorophyll (zarr)
- ``dkrz``   2 m air temperature (netCDF)
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
import zlib
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from dask.utils import format_bytes, parse_bytes

from .local import LocalFederation, write_site_config

NLAT, NLON = 180, 360
STEP_BYTES = NLAT * NLON * 4  # one float32 daily field
CHUNK_DAYS = 30


def grid(size: str | int) -> xr.Dataset:
    """The shared grid for ``size`` bytes per variable (at least one chunk of days)."""
    nbytes = parse_bytes(size) if isinstance(size, str) else size
    ndays = max(1, int(nbytes) // STEP_BYTES)
    return xr.Dataset(
        coords={
            "time": pd.date_range("2000-01-01", periods=ndays, freq="D"),
            "lat": np.linspace(-89.5, 89.5, NLAT),
            "lon": np.linspace(0.5, 359.5, NLON),
        }
    )


def _land(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """A crude but fixed land mask: a few elliptical continents."""
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    land = np.zeros(la.shape, bool)
    for clat, clon, rlat, rlon in [(50, 20, 25, 40), (10, 20, 30, 20), (45, 260, 25, 35),
                                   (-15, 300, 25, 15), (-25, 135, 12, 18), (-80, 180, 10, 180)]:
        land |= ((la - clat) / rlat) ** 2 + ((lo - clon) / rlon) ** 2 < 1
    return land


def _field(kind: str, g: xr.Dataset, chunk_days: int) -> da.Array:
    t = np.arange(g.sizes["time"])
    lat, lon = g.lat.values, g.lon.values
    land = _land(lat, lon)
    coslat = np.cos(np.deg2rad(lat))[:, None]
    hemi = np.sign(lat)[:, None]
    signal = np.sin(2 * np.pi * t / (3.7 * 365.25))  # an ENSO-like common mode

    def block(block_info=None):
        (t0, t1), _, _ = block_info[None]["array-location"]
        rng = np.random.default_rng([zlib.crc32(kind.encode()), t0])
        tt = t[t0:t1, None, None]
        season = np.cos(2 * np.pi * (tt - 45) / 365.25) * hemi
        s = signal[t0:t1, None, None]
        noise = rng.standard_normal((t1 - t0, NLAT, NLON)).astype("f4")
        if kind == "sst":
            x = 29 * coslat**2 - 1.5 + 3 * season + 1.2 * s + 0.8 * noise
            x = np.where(land, np.nan, x)
        elif kind == "chl":
            x = np.exp(-0.5 + 0.4 * (1 - coslat**2) - 0.3 * s + 0.3 * noise)
            x = np.where(land, np.nan, x)
        else:  # t2m
            x = 300 - 45 * (1 - coslat**2) + 8 * season + 1.0 * s + 2.0 * noise
        return x.astype("f4")

    shape = (g.sizes["time"], NLAT, NLON)
    chunks = (chunk_days, NLAT, NLON)
    return da.map_blocks(block, chunks=da.core.normalize_chunks(chunks, shape), dtype="f4")


VARIABLES = {
    "sst": ("sea_surface_temperature", "degC", "Daily sea surface temperature"),
    "chl": ("mass_concentration_of_chlorophyll_in_sea_water", "mg m-3",
            "Daily surface chlorophyll-a"),
    "t2m": ("air_temperature", "K", "Daily 2 m air temperature"),
}


def make_dataset(kind: str, size: str | int, chunk_days: int = CHUNK_DAYS) -> xr.Dataset:
    g = grid(size)
    standard_name, units, description = VARIABLES[kind]
    ds = g.assign(
        {kind: (("time", "lat", "lon"), _field(kind, g, chunk_days),
                {"standard_name": standard_name, "units": units})}
    )
    ds.attrs = {"title": description, "source": "dask-federation demo generator"}
    return ds


def write_dataset(kind: str, path: Path, size: str | int, chunk_days: int = CHUNK_DAYS) -> Path:
    """Write a generated dataset as zarr (``*.zarr``) or netCDF (anything else)."""
    ds = make_dataset(kind, size, chunk_days)
    with dask.config.set(scheduler="threads"):
        if path.suffix == ".zarr":
            ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
        else:
            ds.to_netcdf(path, encoding={kind: {"chunksizes": (chunk_days, NLAT, NLON)}})
    return path


SITES = {"awi": ("sst", "sst.zarr"), "geomar": ("chl", "chl.zarr"), "dkrz": ("t2m", "t2m.nc")}


def prepare_site(directory: Path, site: str, size: str | int, hub: str) -> Path:
    """Data (unless already there) and a config file for ``site`` in its own folder;
    returns the config path."""
    kind, filename = SITES[site]
    folder = directory / site
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / filename).exists():
        write_dataset(kind, folder / filename, size)
    extra = {}
    if site == "dkrz":  # dkrz shares a workflow that uses the other two sites' data
        extra = {
            "workflows": {"anomaly_correlation": "federation.demo_workflows:anomaly_correlation"},
            "results_dir": "results",
        }
    return write_site_config(
        folder / f"{site}.yaml",
        site=site, hub=hub, workers=1, nthreads=2, memory_limit="1GiB",
        datasets={kind: {"path": filename, "description": VARIABLES[kind][2]}},
        **extra,
    )


def analysis(fed) -> tuple[dict[str, float], int]:
    """Correlate SST (awi) with chlorophyll (geomar) and with tropical air temperature
    (dkrz); returns the correlations and the raw bytes a download would have moved."""
    sst = fed.open_dataset("awi/sst").sst
    chl = fed.open_dataset("geomar/chl").chl
    t2m = fed.open_dataset("dkrz/t2m").t2m
    weights = np.cos(np.deg2rad(sst.lat))
    sst_ts = sst.weighted(weights).mean(["lat", "lon"])
    chl_ts = chl.weighted(weights).mean(["lat", "lon"])
    t2m_ts = t2m.sel(lat=slice(-30, 30)).mean(["lat", "lon"])
    r_chl, r_t2m = dask.compute(
        xr.corr(sst_ts, chl_ts, dim="time"), xr.corr(sst_ts, t2m_ts, dim="time")
    )
    raw = sst.nbytes + chl.nbytes + t2m.sel(lat=slice(-30, 30)).nbytes
    return {"corr(sst, chl)": float(r_chl), "corr(sst, tropical t2m)": float(r_t2m)}, raw


def _stop_on_sigterm() -> None:
    """SIGTERM (``timeout``, ``docker stop``, systemd) and SIGHUP (a closed terminal) stop
    the demo like Ctrl-C: ``with``/``finally`` blocks then stop the hub and sites and
    delete the temporary data. Python's default for them would exit at once and leave
    the subprocesses (in their own sessions) and the data behind."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def run_demo(size: str = "200MB", keep: bool = False, directory: str | None = None) -> None:
    """Start a hub and three sites, run the analysis, print what crossed site borders.

    Progress goes to stdout as it happens: each site's data written, each site up.
    """
    started = time.monotonic()

    def elapsed() -> str:
        return f"{time.monotonic() - started:4.1f} s"

    _stop_on_sigterm()
    workdir = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="federation-demo-"))
    try:
        print(f"Starting a hub and three sites; data ({size} per site) in {workdir}", flush=True)
        with LocalFederation(workdir / "logs") as lf:
            print(f"[{elapsed()}] hub up at {lf.address}; federation page {lf.page_url}",
                  flush=True)
            # each site starts while the next one's data is generated
            for site, (kind, _) in SITES.items():
                config = prepare_site(workdir, site, size, lf.address)
                print(f"[{elapsed()}] {site}: {kind} ready, starting the site", flush=True)
                lf.start_site(config, wait=False)
            for site in SITES:
                lf.wait_for_site(site, lf.processes[site])
                print(f"[{elapsed()}] {site}: site up", flush=True)
            with lf.connect() as fed:
                print("\nCatalog:")
                print(fed.catalog()[["dataset", "variables", "shape", "nbytes", "description"]]
                      .to_string(index=False))
                with fed.traffic() as t:
                    result, raw = analysis(fed)
                print("\nResult:")
                for name, value in result.items():
                    print(f"  {name:26s} {value:+.3f}")
                print("\nTasks run per site:", ", ".join(f"{s}: {n}" for s, n in t.tasks.items()))
                print("Bytes across site borders:")
                print(t.bytes.to_string(index=False))
                print(f"  total {format_bytes(t.total)} "
                      f"vs. {format_bytes(raw)} a download-everything approach moves "
                      f"({raw / max(t.total, 1):,.0f}x more)")
                print("\nShared workflow dkrz/anomaly_correlation (runs at dkrz, reads at awi "
                      "and geomar):")
                r = fed.call("dkrz/anomaly_correlation", "awi/sst", "sst", "geomar/chl", "chl")
                print(f"  monthly anomaly corr(sst, chl) {r.result():+.3f}")
                print(f"\nDemo took {time.monotonic() - started:.0f} s.", flush=True)
                if keep:
                    print(f"Federation running at {lf.address}, federation page {lf.page_url}; "
                          "Ctrl-C (or SIGTERM) stops it and deletes the demo data.", flush=True)
                    try:
                        while True:
                            time.sleep(3600)
                    except KeyboardInterrupt:
                        pass
    except KeyboardInterrupt:
        pass  # Ctrl-C during start-up: stop and clean up like at the end
    finally:
        if directory is None:
            shutil.rmtree(workdir, ignore_errors=True)
