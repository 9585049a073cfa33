"""Opening a site's files with xarray: one small class per storage engine.

Sources run only at the site (in the site process to build the catalog, and in the
site's workers to read chunks). Nothing here is ever sent to the hub.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from typing import ClassVar

import xarray as xr

from .config import DatasetConfig


@dataclass(frozen=True)
class Source:
    """A dataset's files at the site."""

    path: str
    engine: ClassVar[str]

    def open(self) -> xr.Dataset:
        """Open lazily: no array data is read until a variable is indexed."""
        raise NotImplementedError

    def stamp(self) -> str:
        """Sizes and modification times of the files, to version the catalog entry."""
        files = sorted(glob.glob(self.path)) if glob.has_magic(self.path) else [self.path]
        parts = []
        for f in files:
            if os.path.isdir(f):
                # a zarr store: its metadata files change when arrays are rewritten
                for root, _, names in os.walk(f):
                    for n in names:
                        if n in ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"):
                            st = os.stat(os.path.join(root, n))
                            parts.append(f"{n}:{st.st_size}:{st.st_mtime_ns}")
            else:
                st = os.stat(f)
                parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        return ";".join(parts)


@dataclass(frozen=True)
class ZarrSource(Source):
    engine: ClassVar[str] = "zarr"

    def open(self) -> xr.Dataset:
        with warnings.catch_warnings():
            # stores without consolidated metadata are normal for zarr v3
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
            return xr.open_zarr(self.path, chunks=None)


@dataclass(frozen=True)
class NetCDFSource(Source):
    """A netCDF file, or a glob of files combined along their coordinates."""

    engine: ClassVar[str] = "netcdf"

    def open(self) -> xr.Dataset:
        if glob.has_magic(self.path):
            files = sorted(glob.glob(self.path))
            # chunks=None keeps every file lazily indexed without dask; reading a chunk
            # then touches only the files it overlaps.
            parts = [xr.open_dataset(f, chunks=None, cache=False) for f in files]
            return xr.combine_by_coords(parts, combine_attrs="drop_conflicts")
        return xr.open_dataset(self.path, chunks=None, cache=False)


ENGINES: dict[str, type[Source]] = {cls.engine: cls for cls in (ZarrSource, NetCDFSource)}


def source_for(ds: DatasetConfig) -> Source:
    return ENGINES[ds.resolved_engine](ds.path)
