"""Worker side of a site: resolving ``site/name`` to local files, and counting bytes sent.

Each worker process of a site gets a :class:`SiteWorkerPlugin` from its site process
(never from the hub). It holds the site's dataset sources, so :func:`read_chunk` can
resolve a dataset reference to a local path *on the worker*; a task that lands at
the wrong site fails loudly with :class:`DatasetNotHere`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
from distributed import WorkerPlugin, get_worker

from . import capability
from .catalog import DatasetInfo
from .config import NAME_PATTERN
from .direct import refuse_users
from .errors import DatasetChanged
from .methods import register as register_methods
from .protocol import RESULTS, WORKER_TRAFFIC, result_name
from .sources import ICECHUNK_VERSION, Source, ZarrSource
from .versions import VersionLog, current_version, digest, settled

# One worker process serves one site, so the registry can be process-wide.
_sources: dict[str, Source] = {}
_site: str | None = None
_results_dir: str | None = None
#: the site process's registration session: proves to the hub that a call comes from
#: this site (the only proof on a hub without TLS)
_session: str | None = None
#: the site's version log (``None`` outside a federation: reads are not pinned)
_versions: VersionLog | None = None

#: netCDF-C and HDF5 crash (SIGSEGV, SIGBUS) when two threads open and close files at
#: once, so files are opened, read and closed by one thread at a time; their reads were
#: serialized anyway (xarray's HDF5 lock). Zarr stores need no lock.
_file_lock = threading.RLock()


def _source(ref: str) -> Source | None:
    source = _sources.get(ref)
    name = result_name(ref)
    # a result's name becomes a path: only a NAME (no "../", no "./" alias of a result
    # whose policy the hub would not know) names one
    if (source is None and _results_dir and ref.startswith(f"{_site}/{RESULTS}")
            and name is not None and NAME_PATTERN.match(name)):
        path = os.path.join(_results_dir, name + ".zarr")
        if os.path.isdir(path):
            source = ZarrSource(path)
    return source


class DatasetNotHere(LookupError):
    """A read task ran on a worker of a site that does not hold its dataset."""


def _held(ref: str) -> Source:
    source = _source(ref)
    if source is None:
        try:
            where = get_worker().name
        except ValueError:
            where = "this process"
        raise DatasetNotHere(
            f"dataset {ref!r} is not held at {where} (site {_site!r}); "
            f"it can only be read at site {ref.split('/')[0]!r}"
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

    site, name = ref.split("/", 1)

    def describe() -> DatasetInfo:
        with _file_lock:
            return describe_source(site, name, source)

    return describe


def _at_snapshot(source: Source, snapshot: str) -> Source:
    options = {k: v for k, v in source.open_options.items() if k not in ICECHUNK_VERSION}
    return dataclasses.replace(source, open_options={**options, "snapshot_id": snapshot})


def _pinned(ref: str, source: Source, version: str) -> Source:
    """The source to read for a read pinned to ``version``: an Icechunk source reads
    that version's snapshot (the repository keeps it); others read the files as they are.
    """
    if _versions is None or source.engine != "icechunk":
        return source
    snapshot = _versions.snapshot(VersionLog.key(ref, source), version)
    return source if snapshot is None else _at_snapshot(source, snapshot)


def describe_snapshot(dataset: str, version: str) -> dict[str, Any]:
    """The catalog entry (wire form) of an old version of an Icechunk dataset: a tag, a
    branch, a snapshot id or a catalog version the site recorded. Runs at the site, in a
    task the hub signed a capability for (like :func:`read_chunk`).

    Raises
    ------
    ValueError
        For a dataset that is not an Icechunk repository, or a version it does not have.
    """
    source = _held(dataset)
    capability.require("dataset", dataset)
    if source.engine != "icechunk" or _versions is None:
        raise ValueError(
            f"dataset {dataset!r} keeps no old versions (only Icechunk repositories do); "
            "open it without version="
        )
    import icechunk

    key = VersionLog.key(dataset, source)
    snapshot = _versions.snapshot(key, version)
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
    _versions.remember(key, info.version, snapshot)
    return info.to_wire()


def _check_version(ref: str, source: Source, ident: list, version: str) -> None:
    """Raise :class:`DatasetChanged` unless the files read (identity ``ident``) are
    version ``version`` or grew from it by appends only."""
    assert _versions is not None
    key = VersionLog.key(ref, source)
    entry = _versions.find(key, digest(ident))
    if entry is None:  # nobody described these files yet: do it now
        _, entry = current_version(_versions, ref, source, _describe(ref, source))
    if not _versions.compatible(key, version, entry.version):
        raise DatasetChanged(
            f"dataset {ref!r} changed at its site since this computation was built: it "
            f"was built from version {version}, the site now holds version "
            f"{entry.version} ({entry.change} at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(entry.at))} UTC), which "
            "is not the old data with steps appended. Open the dataset again and rebuild "
            "the computation"
        )


def read_chunk(
    dataset: str, variable: str, index: tuple[slice, ...], decoded: bool = False,
    version: str | None = None,
) -> np.ndarray:
    """Read one chunk of ``variable`` of ``dataset`` (``site/name``) from local files.

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
    source = _held(dataset)  # raises DatasetNotHere, naming where it can be read
    capability.require("dataset", dataset)
    # a replica answers for another site's dataset under its own versions, and a result
    # is announced with the version its writer described: neither is pinned
    pinned = (version is not None and _versions is not None
              and dataset.startswith(f"{_site}/") and result_name(dataset) is None)
    read = _pinned(dataset, source, version) if pinned else source
    ident, values = settled(
        lambda: _read(read, variable, index, decoded), read, f"reading {dataset}"
    )
    if pinned and read is source:  # a snapshot never changes: nothing to check
        _check_version(dataset, source, ident, version)
    return values


class SiteWorkerPlugin(WorkerPlugin):
    """Makes a worker part of a site.

    Parameters
    ----------
    site:
        The site's name.
    sources:
        Plain dataset name to its local :class:`~federation.sources.Source`.
    methods:
        Shared methods and workflows: name to ``module:function``.
    results_dir:
        Where published results are stored, if the site accepts them.
    replicas:
        Another site's dataset (``site/name``) to the local dataset replicating it.
    session:
        The site process's registration session with the hub.
    versions_dir:
        Where the site's version log is (see :mod:`federation.versions`); ``None``:
        reads are not pinned (plain Dask workers, e.g. the benchmarks' baselines).
    """

    name = "federation-site"

    def __init__(
        self,
        site: str,
        sources: dict[str, Source],
        methods: dict[str, str] | None = None,
        results_dir: str | None = None,
        replicas: dict[str, str] | None = None,
        capability_key: str | None = None,
        session: str | None = None,
        versions_dir: str | None = None,
    ):
        self.site = site
        self.versions_dir = versions_dir
        #: hex secret from the hub; ``None`` only outside a federation (plain Dask)
        self.capability_key = capability_key
        self.session = session
        self.sources = sources
        self.replicas = replicas or {}
        self.methods = methods or {}
        self.results_dir = results_dir
        # requester address ("" for the hub/client) -> [wire bytes, in-memory bytes, transfers]
        self.sent: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])

    def __getstate__(self) -> dict[str, Any]:
        return {
            "site": self.site, "sources": self.sources, "methods": self.methods,
            "results_dir": self.results_dir, "replicas": self.replicas,
            "capability_key": self.capability_key, "session": self.session,
            "versions_dir": self.versions_dir,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def setup(self, worker) -> None:
        global _site, _results_dir, _session, _versions
        _site = self.site
        _versions = VersionLog(self.site, self.versions_dir) if self.versions_dir else None
        _results_dir = self.results_dir
        _session = self.session
        _sources.update({f"{self.site}/{n}": s for n, s in self.sources.items()})
        _sources.update({ref: self.sources[name] for ref, name in self.replicas.items()})
        register_methods(self.site, self.methods)
        capability.set_secret(
            bytes.fromhex(self.capability_key) if self.capability_key else None
        )
        refuse_users(worker)
        self._count_outgoing(worker)
        worker.handlers[WORKER_TRAFFIC] = self.traffic

    def _count_outgoing(self, worker) -> None:
        """Wrap the worker's ``get_data`` handler to count what it really sends.

        ``get_data`` serves both peers (``who`` is the peer's address) and the hub
        gathering results for a client (``who`` is ``None``). It appends its own
        record, with the bytes written on the wire, to ``transfer_outgoing_log``
        just before returning, so the newest entry after the call is this call's.
        """
        original = worker.handlers["get_data"]
        log = worker.transfer_outgoing_log

        async def get_data(comm, keys, who=None, serializers=None):
            before = log[-1] if log else None
            result = await original(comm, keys=keys, who=who, serializers=serializers)
            if log and log[-1] is not before:
                entry = log[-1]
                counts = self.sent[who or ""]
                counts[0] += int(entry.get("compressed") or entry["total"])
                counts[1] += int(entry["total"])
                counts[2] += 1
            return result

        worker.handlers["get_data"] = get_data

    def traffic(self) -> dict[str, list[int]]:
        """Cumulative bytes this worker sent, by requester (RPC handler for the hub)."""
        return {who: list(c) for who, c in self.sent.items()}
