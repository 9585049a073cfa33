"""The sites' datasets, generated once with :func:`federation.demo.write_dataset` and cached.

``<data-dir>/<size>-<chunk_days>d/<site>/<file>``; a ``.complete`` marker next to each
file says it was written to the end, so an interrupted generation is redone.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from federation.demo import STEP_BYTES, VARIABLES, write_dataset

#: site -> (kind, file name); the three institutes of ``dask federation demo`` plus
#: ``deep``, a small-memory site whose dataset is 4x its workers' memory
SITES = {"awi": ("sst", "sst.zarr"), "geomar": ("chl", "chl.zarr"), "dkrz": ("t2m", "t2m.nc"),
         "deep": ("sst", "sst.zarr")}


def size_tag(size: int, chunk_days: int) -> str:
    return f"{size // 2**20}MiB-{chunk_days}d"


def prepare(data_dir: Path, sizes: dict[str, int], chunk_days: int, log=print) -> dict[str, Path]:
    """Generate (or reuse) the dataset of each site in ``sizes``; returns site -> dataset
    path."""
    paths = {}
    for site, size in sizes.items():
        kind, filename = SITES[site]
        path = Path(data_dir) / size_tag(size, chunk_days) / site / filename
        marker = path.with_name(path.name + ".complete")
        if not marker.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            started = time.monotonic()
            log(f"generating {site}/{kind}: {size / 2**20:.0f} MiB in {path} ...")
            write_dataset(kind, path, size, chunk_days=chunk_days)
            marker.write_text(str(size))
            log(f"  done in {time.monotonic() - started:.0f} s")
        paths[site] = path
    return paths


def ndays(size: int) -> int:
    return max(1, size // STEP_BYTES)


def warm_page_cache(paths: dict[str, Path]) -> int:
    """Read every file once so that no approach pays for cold disk reads first."""
    total = 0
    for path in paths.values():
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    total += len(chunk)
    return total


def write_tiny(path: Path, steps: int, side: int = 8) -> Path:
    """A small dataset with one time step per chunk, for the scheduler-overhead graph
    (many tiny reads, so the scheduler is what is measured)."""
    marker = path.with_name(path.name + ".complete")
    if marker.exists():
        return path
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ds = xr.Dataset(
        {"x": (("time", "lat", "lon"), rng.standard_normal((steps, side, side), dtype="f4"))},
        coords={"time": pd.date_range("2000-01-01", periods=steps, freq="D"),
                "lat": np.arange(side, dtype="f8"), "lon": np.arange(side, dtype="f8")},
    )
    ds.x.encoding["chunks"] = (1, side, side)
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    marker.write_text(str(steps))
    return path


def describe_sites(sites: list[str]) -> dict[str, str]:
    described = {}
    for site in sites:
        kind, filename = SITES[site]
        described[site] = f"{kind} ({VARIABLES[kind][2]}), {filename}"
    return described


def du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
