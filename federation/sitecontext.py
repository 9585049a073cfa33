"""The site's side of a worker: one :class:`SiteContext`, held by the worker's plugin.

Everything a site's worker knows about its site — datasets and replicas, the results
folder, the registration session, the version log, the published methods, the hub's
capability key and the bytes it sent — lives in one :class:`SiteContext`, created by the
site process and held by the :class:`SiteWorkerPlugin` it installs on each of its workers
(as distributed's worker extensions own their state). The site-bound calls of
:mod:`federation.sitecalls` find it through the worker running their task
(:meth:`SiteContext.current`: ``get_worker().plugins["federation-site"].context``), never
through module globals, so two sites' workers in one process (in-process tests) keep
their datasets, keys and counters apart.

Outside a federation (the strict allow-list corpus, the benchmarks' plain-Dask sites,
unit tests) callers build a context with :meth:`SiteContext.for_site` and install it
with ``SiteWorkerPlugin(context)``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field

from distributed import WorkerPlugin, get_worker

from . import capability
from .config import NAME_PATTERN
from .direct import refuse_users
from .errors import MethodError, NotAtSite
from .protocol import WORKER_TRAFFIC, Kind, ref, result_name, site_of_ref
from .sources import Source, ZarrSource
from .versions import VersionLog

#: the name the site's plugin is installed under on each worker (``Worker.plugins``)
PLUGIN = "federation-site"


def _no_counts() -> list[int]:
    return [0, 0, 0]


@dataclass
class SiteContext:
    """What one site's workers know about the site.

    Parameters
    ----------
    site:
        The site's name.
    sources:
        Reference (``site/name``, and another site's reference for a replica) to the
        local :class:`~federation.sources.Source` answering it.
    methods:
        Published method or workflow reference (``site/name``) to ``module:function``.
    results_dir:
        Where published results are stored; ``None``: the site stores none.
    session:
        The site process's registration session: proves to the hub that a call comes
        from this site (the only proof on a hub without TLS).
    versions:
        The site's version log; ``None``: reads are not pinned (plain Dask workers,
        e.g. the benchmarks' baselines).
    capability_key:
        The hub's secret for this site; ``None`` only outside a federation: site-bound
        calls are then not checked (see :mod:`federation.capability`).
    sent:
        Bytes this worker sent, by requester address (``""``: the hub, for a client):
        ``[wire bytes, in-memory bytes, transfers]``.
    """

    site: str
    sources: dict[str, Source] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    results_dir: str | None = None
    session: str | None = None
    versions: VersionLog | None = None
    capability_key: bytes | None = None
    sent: defaultdict[str, list[int]] = field(
        default_factory=lambda: defaultdict(_no_counts), repr=False
    )

    @classmethod
    def for_site(
        cls,
        site: str,
        sources: dict[str, Source],
        *,
        methods: dict[str, str] | None = None,
        results_dir: str | None = None,
        replicas: dict[str, str] | None = None,
        capability_key: str | None = None,
        session: str | None = None,
        versions_dir: str | None = None,
    ) -> SiteContext:
        """The context of a site from its configuration's plain names.

        ``sources`` and ``methods`` are keyed by plain name (``sst``), ``replicas`` maps
        another site's reference to the local dataset replicating it, ``capability_key``
        is hex (as the hub sends it), ``versions_dir`` where the version log is.
        """
        refs = {ref(site, name): source for name, source in sources.items()}
        refs.update({other: sources[name] for other, name in (replicas or {}).items()})
        return cls(
            site=site,
            sources=refs,
            methods={ref(site, name): spec for name, spec in (methods or {}).items()},
            results_dir=results_dir,
            session=session,
            versions=VersionLog(site, versions_dir) if versions_dir else None,
            capability_key=bytes.fromhex(capability_key) if capability_key else None,
        )

    @staticmethod
    def current() -> SiteContext:
        """The context of the site whose worker runs the calling task.

        Raises
        ------
        NotAtSite
            Outside a task on a worker, or on a worker that is not a site's.
        """
        try:
            worker = get_worker()
        except ValueError:
            raise NotAtSite(
                "a site-bound call (reading a dataset, running a method, writing a "
                "result) runs only in a task on a site's worker; compute it through the "
                "federation, or, outside one, install a SiteContext on the workers with "
                "SiteWorkerPlugin(SiteContext.for_site(...))"
            ) from None
        plugin = worker.plugins.get(PLUGIN)
        if not isinstance(plugin, SiteWorkerPlugin):
            raise NotAtSite(
                f"worker {worker.name!r} is not a site's worker (it has no "
                f"{PLUGIN!r} plugin): site-bound calls run only on the workers "
                "`dask federation site` starts, or on workers given "
                "SiteWorkerPlugin(SiteContext.for_site(...))"
            )
        return plugin.context

    def source(self, dataset: str) -> Source | None:
        """The local source of ``dataset`` (a dataset, a replicated one, or one of this
        site's stored results), ``None`` if this site does not hold it."""
        source = self.sources.get(dataset)
        name = result_name(dataset) if site_of_ref(dataset) == self.site else None
        # a result's name becomes a path: only a NAME (no "../", no "./" alias of a result
        # whose policy the hub would not know) names one
        if source is None and name and NAME_PATTERN.match(name) and self.results_dir:
            path = os.path.join(self.results_dir, f"{name}.zarr")
            if os.path.isdir(path):
                source = ZarrSource(path)
        return source

    def method(self, method: str) -> str:
        """``module:function`` of the published method ``method`` (``site/name``).

        Raises
        ------
        MethodError
            If this site does not publish it.
        """
        spec = self.methods.get(method)
        if spec is None:
            raise MethodError(f"method {method!r} is not published by this site")
        return spec

    def require(self, kind: Kind, reference: str) -> capability.Capability | None:
        """The hub's verified capability for ``kind`` ``reference`` in the running task
        (``None``: this context has no key and does not check); see
        :func:`federation.capability.require`."""
        return capability.require(self.capability_key, kind, reference)

    def traffic(self) -> dict[str, list[int]]:
        """Cumulative bytes this worker sent, by requester (RPC handler for the hub)."""
        return {who: list(c) for who, c in self.sent.items()}


class SiteWorkerPlugin(WorkerPlugin):
    """Makes a worker part of a site: holds its :class:`SiteContext` as ``context``.

    On setup it gates the worker's listeners against users, counts what ``get_data``
    sends and serves :data:`~federation.protocol.WORKER_TRAFFIC` for the hub.
    """

    name = PLUGIN

    def __init__(self, context: SiteContext):
        self.context = context

    def setup(self, worker) -> None:
        refuse_users(worker)
        self._count_outgoing(worker)
        worker.handlers[WORKER_TRAFFIC] = self.context.traffic

    def _count_outgoing(self, worker) -> None:
        """Wrap the worker's ``get_data`` handler to count what it really sends.

        ``get_data`` serves both peers (``who`` is the peer's address) and the hub
        gathering results for a client (``who`` is ``None``). It appends its own
        record, with the bytes written on the wire, to ``transfer_outgoing_log``
        just before returning, so the newest entry after the call is this call's.
        """
        original = worker.handlers["get_data"]
        log = worker.transfer_outgoing_log
        sent = self.context.sent

        async def get_data(comm, keys, who=None, serializers=None):
            before = log[-1] if log else None
            result = await original(comm, keys=keys, who=who, serializers=serializers)
            if log and log[-1] is not before:
                entry = log[-1]
                counts = sent[who or ""]
                counts[0] += int(entry.get("compressed") or entry["total"])
                counts[1] += int(entry["total"])
                counts[2] += 1
            return result

        worker.handlers["get_data"] = get_data
