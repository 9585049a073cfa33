"""Reading a site's datasets on its workers: resolving ``site/name`` to local files.

The site-bound calls :func:`federation.sitecalls.read_chunk` and
:func:`~federation.sitecalls.describe_snapshot` run these with the
:class:`~federation.sitecontext.SiteContext` of their worker, which holds the site's
dataset sources; a task that lands at the wrong site fails loudly with
:class:`DatasetNotHere`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .catalog import DatasetInfo
from .errors import DatasetChanged, DatasetNotHere
from .protocol import result_name, site_of_ref, split_ref
from .sitecontext import SiteContext
from .sources import ICECHUNK_VERSION, Source
from .versions import VersionLog, current_version, digest, settled

#: netCDF-C and HDF5 crash (SIGSEGV, SIGBUS) when two threads open and close files at
#: once, so files are opened, read and closed by one thread at a time; their reads were
#: serialized anyway (xarray's HDF5 lock). Process-wide on purpose, not in a site's
#: context: it guards the C libraries, which every worker in the process shares.
#: Zarr stores need no lock.
_file_lock = threading.RLock()


def _held(context: SiteContext, ref: str) -> Source:
    source = context.source(ref)
    if source is None:
        raise DatasetNotHere(
            f"dataset {ref!r} is not held at site {context.site!r}; "
            f"it can only be read at site {site_of_ref(ref)!r}"
        )
    return source


def _read(source: Source, variable: str, index: tuple[slice, ...], decoded: bool) -> np.ndarray:
    """One read from freshly opened files, closed again at once: no file stays open (or
    HDF5-locked) between reads, so providers can append, replace or rewrite it."""
    with _file_lock if source.kind != "store" else contextlib.nullcontext():
        ds = source.open() if decoded else source.open_stored()
        try:
            var = ds[variable].variable[index]
            if var.chunks is not None:
                # a combined glob is dask-backed: compute it here, in this task's thread,
                # instead of submitting to the hub from inside a task. Not with
                # dask.config.set: that is process-wide and would turn other threads'
                # computations local too.
                var = var.compute(scheduler="synchronous")
            return np.asarray(var.values)
        finally:
            ds.close()


def _describe(ref: str, source: Source) -> Callable[[], DatasetInfo]:
    from .describe import describe_source  # it builds lazy datasets of read tasks

    site, name = split_ref(ref)

    def describe() -> DatasetInfo:
        with _file_lock:
            return describe_source(site, name, source)

    return describe


def _at_snapshot(source: Source, snapshot: str) -> Source:
    options = {k: v for k, v in source.open_options.items() if k not in ICECHUNK_VERSION}
    return dataclasses.replace(source, open_options={**options, "snapshot_id": snapshot})


def _pinned(versions: VersionLog, ref: str, source: Source, version: str) -> Source:
    """The source to read for a read pinned to ``version``: an Icechunk source reads
    that version's snapshot (the repository keeps it); others read the files as they are.
    """
    if source.engine != "icechunk":
        return source
    snapshot = versions.snapshot(VersionLog.key(ref, source), version)
    return source if snapshot is None else _at_snapshot(source, snapshot)


def describe_snapshot(context: SiteContext, dataset: str, version: str) -> dict[str, Any]:
    """The catalog entry (wire form) of an old version of an Icechunk dataset: a tag, a
    branch, a snapshot id or a catalog version the site recorded. Runs at the site, in a
    task the hub signed a capability for (like :func:`read_chunk`).

    Raises
    ------
    ValueError
        For a dataset that is not an Icechunk repository, or a version it does not have.
    """
    source = _held(context, dataset)
    context.require("dataset", dataset)
    versions = context.versions
    if source.engine != "icechunk" or versions is None:
        raise ValueError(
            f"dataset {dataset!r} keeps no old versions (only Icechunk repositories do); "
            "open it without version="
        )
    import icechunk

    key = VersionLog.key(dataset, source)
    snapshot = versions.snapshot(key, version)
    if snapshot is None:
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(source.path))
        for lookup in (repo.lookup_tag, repo.lookup_branch, repo.lookup_snapshot):
            try:
                found = lookup(version)
            except Exception:  # icechunk.IcechunkError: not a tag, branch or snapshot
                continue
            snapshot = str(getattr(found, "id", found))
            break
        else:
            raise ValueError(
                f"dataset {dataset!r} has no tag, branch, snapshot or recorded version "
                f"{version!r}; see its repository's tags and history"
            )
    old = _at_snapshot(source, snapshot)
    info = _describe(dataset, old)()
    versions.remember(key, info.version, snapshot)
    return info.to_wire()


def _check_version(
    versions: VersionLog, ref: str, source: Source, ident: list, version: str
) -> None:
    """Raise :class:`DatasetChanged` unless the files read (identity ``ident``) are
    version ``version`` or grew from it by appends only."""
    key = VersionLog.key(ref, source)
    entry = versions.find(key, digest(ident))
    if entry is None:  # nobody described these files yet: do it now
        _, entry = current_version(versions, ref, source, _describe(ref, source))
    if not versions.compatible(key, version, entry.version):
        raise DatasetChanged(
            f"dataset {ref!r} changed at its site since this computation was built: it "
            f"was built from version {version}, the site now holds version "
            f"{entry.version} ({entry.change} at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry.at))} UTC), which "
            "is not the old data with steps appended. Open the dataset again and rebuild "
            "the computation"
        )


def read_chunk(
    context: SiteContext, dataset: str, variable: str, index: tuple[slice, ...],
    decoded: bool = False, version: str | None = None,
) -> np.ndarray:
    """Read one chunk of ``variable`` of ``dataset`` (``site/name``) from the files of
    site ``context``.

    ``decoded=False`` returns the values as stored (packed integers, character arrays,
    times as numbers: the client decodes them); ``True`` returns them decoded, as
    ``xr.open_dataset`` shows them. This is the only function that touches a site's
    data; the routing plugin finds tasks that call it and binds them to the dataset's
    site. It reads only in a task the hub signed a capability for (see
    :mod:`federation.capability`); otherwise it raises
    :class:`~federation.errors.CapabilityError`.

    ``version`` pins the read to the catalog version the computation was built from:
    if the site's files are that version with steps appended, the chunk (inside the old
    extent) is read as usual; an Icechunk dataset reads the pinned snapshot; anything
    else raises :class:`~federation.errors.DatasetChanged` naming both versions. The
    files are opened for this read only; a read that overlaps a provider's write is
    retried on the new files (see :func:`federation.versions.settled`).
    """
    source = _held(context, dataset)  # raises DatasetNotHere, naming where it can be read
    context.require("dataset", dataset)
    # a replica answers for another site's dataset under its own versions, and a result
    # is announced with the version its writer described: neither is pinned
    versions = context.versions
    pinned = (version is not None and versions is not None
              and site_of_ref(dataset) == context.site and result_name(dataset) is None)
    read = _pinned(versions, dataset, source, version) if pinned else source
    ident, values = settled(
        lambda: _read(read, variable, index, decoded), read, f"reading {dataset}"
    )
    if pinned and read is source:  # a snapshot never changes: nothing to check
        _check_version(versions, dataset, source, ident, version)
    return values
