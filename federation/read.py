"""Worker side of a site: resolving ``site/name`` to local files, and counting bytes sent.

Each worker process of a site gets a :class:`SiteWorkerPlugin` from its site process
(never from the hub). It holds the site's dataset sources, so :func:`read_chunk` can
resolve a dataset reference to a local path *on the worker*; a task that lands at
the wrong site fails loudly with :class:`DatasetNotHere`.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from typing import Any

import numpy as np
import xarray as xr
from distributed import WorkerPlugin, get_worker

from . import capability
from .direct import refuse_users
from .methods import register as register_methods
from .protocol import RESULTS, WORKER_TRAFFIC
from .sources import Source, ZarrSource

# One worker process serves one site, so the registry can be process-wide.
_sources: dict[str, Source] = {}
#: (reference, decoded) -> the opened dataset (stored view, or as users see it)
_opened: dict[tuple[str, bool], xr.Dataset] = {}
_open_lock = threading.Lock()
_site: str | None = None
_results_dir: str | None = None
#: the site process's registration session: proves to the hub that a call comes from
#: this site (the only proof on a hub without TLS)
_session: str | None = None


def _source(ref: str) -> Source | None:
    source = _sources.get(ref)
    if source is None and _results_dir and ref.startswith(f"{_site}/{RESULTS}"):
        path = os.path.join(_results_dir, ref.split("/", 2)[2] + ".zarr")
        if os.path.isdir(path):
            source = ZarrSource(path)
    return source


class DatasetNotHere(LookupError):
    """A read task ran on a worker of a site that does not hold its dataset."""


def _dataset(ref: str, decoded: bool = False) -> xr.Dataset:
    ds = _opened.get((ref, decoded))
    if ds is not None:
        return ds
    with _open_lock:
        if (ref, decoded) not in _opened:
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
            _opened[ref, decoded] = source.open() if decoded else source.open_stored()
        return _opened[ref, decoded]


def read_chunk(
    dataset: str, variable: str, index: tuple[slice, ...], decoded: bool = False
) -> np.ndarray:
    """Read one chunk of ``variable`` of ``dataset`` (``site/name``) from local files.

    ``decoded=False`` returns the values as stored (packed integers, character arrays,
    times as numbers: the client decodes them); ``True`` returns them decoded, as
    ``xr.open_dataset`` shows them. This is the only function that touches a site's
    data; the routing plugin finds tasks that call it and binds them to the dataset's
    site. It reads only in a task the hub signed a capability for (see
    :mod:`federation.capability`); otherwise it raises
    :class:`~federation.errors.CapabilityError`.
    """
    if (dataset, decoded) not in _opened and _source(dataset) is None:
        _dataset(dataset, decoded)  # raises DatasetNotHere, naming where it can be read
    capability.require("dataset", dataset)
    var = _dataset(dataset, decoded)[variable].variable[index]
    if var.chunks is not None:
        # a combined glob is dask-backed: compute it here, in this task's thread, instead
        # of submitting to the hub from inside a task. Not with dask.config.set: that is
        # process-wide and would turn other threads' computations local too.
        var = var.compute(scheduler="synchronous")
    return np.asarray(var.values)


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
    ):
        self.site = site
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
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def setup(self, worker) -> None:
        global _site, _results_dir, _session
        _site = self.site
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
