"""Opening a site's data with xarray, as the site's config says: engine and open options.

A :class:`Source` opens one dataset two ways (see :mod:`federation.catalog`): as users
see it (``open``, exactly ``xr.open_dataset(path, engine=..., **open_options)``, or
``xr.open_mfdataset`` for a glob), and as stored (``open_stored``: the same with
``decode_cf=False``, so read tasks move encoded chunks). Sources run only at the site
(in the site process to build the catalog, and in the site's workers to read chunks).
Nothing here is ever sent to the hub.
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import xarray as xr

from .catalog import DECODE_OPTIONS, decode_kwargs
from .config import DatasetConfig

#: options of ``engine: icechunk`` that choose the version; the rest go to xarray's zarr
ICECHUNK_VERSION = ("branch", "tag", "snapshot_id")

#: metadata files of a zarr store: zarr rewrites them on every append or resize
ZARR_METADATA = ("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata")


#: HDF5 (netCDF4, h5netcdf) takes a shared lock on every file a reader has open, and a
#: writer then fails with PermissionError (and netCDF4 has already truncated the file).
#: Sites read without locks: providers may write at any time, and reads check the files'
#: identity instead (federation.versions.settled). HDF5 reads it when the library loads.
UNLOCKED_HDF5 = {"HDF5_USE_FILE_LOCKING": "FALSE"}


def read_without_locks() -> None:
    """Make this process's HDF5 reads take no file locks; call it before any HDF5 file
    is opened (HDF5 reads the setting once)."""
    os.environ.update(UNLOCKED_HDF5)


def is_url(path: str) -> bool:
    return "://" in path


class OptionError(ValueError):
    """An ``open_options`` key the engine does not accept; ``key`` names it."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _parameters(func: Any) -> set[str]:
    return {
        p.name for p in inspect.signature(func).parameters.values()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }


@dataclass(frozen=True)
class Source:
    """A dataset's files (or URL, or Icechunk repository) at the site.

    ``engine`` is any installed xarray engine (``None``: xarray guesses) or
    ``icechunk``; ``open_options`` are keyword arguments of ``xr.open_dataset`` (of
    ``xr.open_mfdataset`` for a glob: ``combine``, ``concat_dim`` ...).
    """

    path: str
    engine: str | None = None
    open_options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_glob(self) -> bool:
        return not is_url(self.path) and glob.has_magic(self.path)

    def _target(self) -> tuple[Any, str | None, dict[str, Any]]:
        """What to hand xarray: path or store, engine, remaining options."""
        options = dict(self.open_options)
        if self.engine != "icechunk":
            return self.path, self.engine, options
        import icechunk

        version = {k: options.pop(k) for k in ICECHUNK_VERSION if k in options}
        if not version:
            version = {"branch": "main"}
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(self.path))
        options.setdefault("consolidated", False)
        return repo.readonly_session(**version).store, "zarr", options

    def check_options(self) -> None:
        """Refuse ``open_options`` that neither xarray nor the engine accepts.

        Raises
        ------
        OptionError
            Naming the key and the keys the engine accepts.
        """
        engine = "zarr" if self.engine == "icechunk" else self.engine
        if engine is None:
            target = sorted(glob.glob(self.path))[0] if self.is_glob else self.path
            engine = xr.backends.plugins.guess_engine(target)
        backend = xr.backends.plugins.get_backend(engine)
        allowed = _parameters(xr.open_dataset) | set(backend.open_dataset_parameters or ())
        if self.is_glob:
            allowed |= _parameters(xr.open_mfdataset)
        if self.engine == "icechunk":
            allowed |= set(ICECHUNK_VERSION)
        allowed -= {"filename_or_obj", "paths", "engine", "chunks", "cache"}
        for key in self.open_options:
            if key not in allowed:
                raise OptionError(
                    key,
                    f"the {self.engine or engine} engine does not accept {key!r}; "
                    f"accepted: {', '.join(sorted(allowed))}",
                )

    def open(self) -> xr.Dataset:
        """The dataset as users see it; lazy (no array data is read until indexed)."""
        target, engine, options = self._target()
        with warnings.catch_warnings():
            # stores without consolidated metadata are normal for zarr v3
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
            if self.is_glob:
                # dask-backed, one chunk per file: a read touches only the files it overlaps
                return xr.open_mfdataset(sorted(glob.glob(self.path)), engine=engine, **options)
            decoders = decode_kwargs(options)
            options = {k: v for k, v in options.items() if k not in DECODE_OPTIONS}
            return xr.open_dataset(
                target, engine=engine, chunks=None, cache=False, **options, **decoders
            )

    def open_stored(self) -> xr.Dataset:
        """The variables as stored: the same source with ``decode_cf=False``."""
        if self.is_glob:
            raise ValueError(f"{self.path!r}: a glob is combined from decoded files")
        target, engine, options = self._target()
        options = {k: v for k, v in options.items() if k not in DECODE_OPTIONS}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated")
            return xr.open_dataset(
                target, engine=engine, chunks=None, cache=False, decode_cf=False, **options
            )

    @property
    def kind(self) -> str:
        """``"glob"``, ``"file"`` or ``"store"`` (a zarr store, Icechunk repository, URL)."""
        if self.is_glob:
            return "glob"
        if is_url(self.path) or self.engine == "icechunk" or os.path.isdir(self.path):
            return "store"
        return "file"

    def stamp(self) -> str:
        """The identity of the files (see :func:`identity`), to version the catalog entry."""
        return json.dumps(identity(self))


def identity(source: Source) -> list[list[Any]]:
    """What the file system says about ``source``'s files, without opening them:
    ``[[name, inode, size, mtime_ns], ...]`` of a file, of each file of a glob, or of the
    metadata files of a zarr store (rewritten on every append or resize); the snapshot
    id of an Icechunk branch or tag (``[["snapshot", id]]``); ``[["url", url]]`` for a
    URL (not watched).

    Raises
    ------
    FileNotFoundError
        If the file (or every file of a glob) is gone.
    """
    if is_url(source.path):
        return [["url", source.path]]
    if source.engine == "icechunk":
        return [["snapshot", icechunk_snapshot(source)]]
    files = sorted(glob.glob(source.path)) if source.is_glob else [source.path]
    if source.is_glob and not files:
        raise FileNotFoundError(f"no file matches {source.path!r}")
    out: list[list[Any]] = []
    for f in files:
        if not os.path.isdir(f):
            st = os.stat(f)
            out.append([os.path.basename(f), st.st_ino, st.st_size, st.st_mtime_ns])
            continue
        for root, dirs, names in os.walk(f):
            # chunk folders ("c" in zarr v3, numbers in v2 with "/" separators) hold no
            # metadata: not walking them keeps this cheap for stores of many chunks
            dirs[:] = sorted(d for d in dirs if d != "c" and not d.isdigit())
            for n in sorted(names):
                if n in ZARR_METADATA:
                    st = os.stat(os.path.join(root, n))
                    name = os.path.relpath(os.path.join(root, n), f)
                    out.append([name, st.st_ino, st.st_size, st.st_mtime_ns])
    return out


def icechunk_snapshot(source: Source) -> str:
    """The snapshot id the source's branch, tag or ``snapshot_id`` points at now."""
    import icechunk

    # it warns at every open that local storage is unsafe for concurrent commits: this
    # only reads, once per check and per read
    icechunk.set_logs_filter("error")
    options = source.open_options
    if "snapshot_id" in options:
        return str(options["snapshot_id"])
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(source.path))
    if "tag" in options:
        return str(repo.lookup_tag(options["tag"]))
    return str(repo.lookup_branch(options.get("branch", "main")))


@dataclass(frozen=True)
class ZarrSource(Source):
    """A zarr store (published results, and the demo's datasets)."""

    engine: str | None = "zarr"


def source_for(ds: DatasetConfig) -> Source:
    return Source(ds.path, ds.resolved_engine, dict(ds.open_options))
