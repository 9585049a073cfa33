"""The hub's knowledge of the federation, kept in one place.

The plugins (:mod:`.catalog`, :mod:`.routing`, :mod:`.traffic`) share one
:class:`FederationState`: which sites are registered, their catalogs, which worker
belongs to which site, and how many tasks ran where.
"""

from __future__ import annotations

import difflib
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import dask
from dask.utils import parse_timedelta

from federation.catalog import DatasetInfo
from federation.errors import (
    ReplicaMismatch,
    SiteNameTaken,
    SiteOfflineError,
    UnknownDatasetError,
    UnknownMethodError,
)
from federation.protocol import MethodInfo, SiteStatus, label_dataset, site_of, split_ref

from .grants import Grants
from .relay import RelayPlugin
from .scan import NewGraph

if TYPE_CHECKING:
    from distributed import SchedulerPlugin
    from distributed.scheduler import Scheduler, WorkerState

    from .refusal import Refusals

    P = TypeVar("P", bound=SchedulerPlugin)

#: Longer names are refused before any lookup: quoting them whole would make an error
#: message longer than distributed forwards ("Long error message")
MAX_NAME = 256

#: A site process heartbeats every few seconds; after this long without one its
#: registration lapses and the name becomes free again.
SESSION_EXPIRY = 15.0


@dataclass
class SiteRecord:
    """A registered site: its catalog and the site processes (sessions) serving it."""

    name: str
    catalog: dict[str, DatasetInfo]
    methods: dict[str, MethodInfo] = field(default_factory=dict)
    #: result name ("results/x") -> (catalog entry, provenance)
    results: dict[str, tuple[DatasetInfo, dict[str, Any]]] = field(default_factory=dict)
    accepts_results: bool = False
    #: session id -> (peer address, monotonic time of last heartbeat)
    sessions: dict[str, tuple[str, float]] = field(default_factory=dict)
    registered: float = field(default_factory=time.time)
    #: "direct", or "outbound-only" (reached through the relay)
    connectivity: str = "direct"
    #: workers as batch jobs: requested/pending/running/failed, as the site last reported
    #: (``None``: the site starts its workers itself)
    jobs: dict[str, Any] | None = None

    def alive(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return any(now - seen < SESSION_EXPIRY for _, seen in self.sessions.values())


def _check_length(kind: str, name: object, error: type[Exception]) -> None:
    if isinstance(name, str) and len(name) > MAX_NAME:
        raise error(
            f"{kind} name of {len(name):,} characters ({name[:40]!r}...) is too long: "
            f"names are 'site/name' of at most {MAX_NAME} characters"
        )


class FederationState:
    """Sites, catalogs and per-site counters of one hub, and its plugins."""

    #: tasks refused at the hub, failed on the next tick (made by :func:`.install`)
    refusals: Refusals

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler
        self.sites: dict[str, SiteRecord] = {}
        #: every worker address ever seen -> site, so traffic from departed workers
        #: can still be attributed
        self.worker_site: dict[str, str] = {}
        self.tasks_done: Counter[str] = Counter()
        #: identities from TLS certificates, (role, name) or None without TLS
        self.client_identity: dict[str, tuple[str, str] | None] = {}
        self.worker_identity: dict[str, tuple[str, str] | None] = {}
        #: site session -> serial number of the certificate that registered it
        self.session_serial: dict[str, int] = {}
        self.grants = Grants.from_config()
        #: "dataset (policy)" -> computations refused by egress policies
        self.egress_refusals: Counter[str] = Counter()
        #: site -> the secret its workers check capabilities with; kept while the hub
        #: lives, so a site re-registering (a lapsed session, --join) keeps its workers
        self.site_secrets: dict[str, bytes] = {}
        #: bumped whenever a catalog changes (registration, departure, result): the
        #: catalog is rebuilt on change, not per request
        self.catalog_version = 0
        self._catalog_cache: tuple[Any, dict[str, DatasetInfo], list] | None = None
        #: the federation's plugins by class (see :func:`scheduler_plugins.install`)
        self.plugins: dict[type, SchedulerPlugin] = {}
        #: the graph being submitted, scanned once (see :mod:`.scan`)
        self.graph = NewGraph()
        #: task key -> the user who submitted it (kept by the fair-share plugin)
        self.task_owner: dict[Any, str] = {}

    def plugin(self, cls: type[P]) -> P:
        """The installed plugin of class ``cls``.

        Raises
        ------
        LookupError
            If it is not installed (yet): a plugin that uses another lists it in its
            ``requires``, which installs that one first.
        """
        try:
            return self.plugins[cls]  # type: ignore[return-value]
        except KeyError:
            raise LookupError(
                f"{cls.__name__} is not installed on this hub (yet); a plugin that uses it "
                "lists it in its 'requires'"
            ) from None

    # -- sites ---------------------------------------------------------------------------

    def register(
        self,
        site: str,
        session: str,
        peer: str,
        datasets: list[DatasetInfo],
        methods: list[MethodInfo] = (),
        results: list[tuple[DatasetInfo, dict[str, Any]]] = (),
        accepts_results: bool = False,
        join: bool = False,
        connectivity: str = "direct",
    ) -> SiteRecord:
        """Record a site process; refuse a name another live site already uses."""
        now = time.monotonic()
        record = self.sites.get(site)
        catalog = {d.name: d for d in datasets}
        for info in datasets:
            if info.replica_of:
                self._check_replica(info)
        if record is not None and record.alive(now) and session not in record.sessions:
            if not join:
                others = ", ".join(addr for addr, _ in record.sessions.values())
                raise SiteNameTaken(
                    f"site name {site!r} is already registered with this hub (by {others}). "
                    f"Choose another 'site:' name, stop the other site, or — to add workers "
                    f"to the running site — start this one with --join"
                )
            ours = {n: d.version for n, d in catalog.items()}
            theirs = {n: d.version for n, d in record.catalog.items()}
            if ours != theirs:
                raise SiteNameTaken(
                    f"cannot --join site {site!r}: its datasets differ from the running "
                    f"site's ({sorted(theirs.items())} vs {sorted(ours.items())}, name and "
                    "version); use the same configuration"
                )
        if record is None or not record.alive(now) or not join:
            # new, lapsed, or re-announcing (after a hub restart, with new data)
            record = self.sites[site] = SiteRecord(
                name=site,
                catalog=catalog,
                methods={m.name: m for m in methods},
                results={info.name: (info, prov) for info, prov in results},
                accepts_results=accepts_results,
                connectivity=connectivity,
                sessions=record.sessions if record is not None and record.alive(now) else {},
            )
        record.sessions[session] = (peer, now)
        self.catalog_version += 1
        return record

    def _check_replica(self, info: DatasetInfo) -> None:
        origin_site, origin_name = split_ref(info.replica_of)
        record = self.sites.get(origin_site)
        origin = record.catalog.get(origin_name) if record else None
        if origin is None:
            raise ReplicaMismatch(
                f"dataset {info.ref!r} declares replica_of {info.replica_of!r}, which the hub "
                "does not know; start the original's site first, or fix replica_of"
            )
        why = info.same_content_as(origin)
        if why:
            raise ReplicaMismatch(
                f"dataset {info.ref!r} is not a replica of {info.replica_of!r}: {why}; "
                "fix the file or remove replica_of"
            )

    def site_secret(self, site: str) -> bytes:
        """The capability secret of ``site`` (made at its first registration)."""
        secret = self.site_secrets.get(site)
        if secret is None:
            secret = self.site_secrets[site] = secrets.token_bytes(32)
        return secret

    def heartbeat(self, site: str, session: str, jobs: dict[str, Any] | None = None) -> bool:
        record = self.sites.get(site)
        if record is None or session not in record.sessions:
            return False
        record.sessions[session] = (record.sessions[session][0], time.monotonic())
        record.jobs = jobs
        return True

    def drop_sessions(self, serials: frozenset[int]) -> list[str]:
        """End the registrations made with revoked certificates; the sites affected."""
        dropped = []
        for record in self.sites.values():
            for session in list(record.sessions):
                if self.session_serial.get(session) in serials:
                    del record.sessions[session]
                    dropped.append(record.name)
        return dropped

    def starting_workers(self, site: str) -> bool:
        """Whether a live site has asked its batch system for workers not yet running
        (tasks waiting for it then wait for the queue, not for an outage)."""
        record = self.sites.get(site)
        return bool(record and record.alive() and record.jobs and record.jobs["pending"]
                    and not record.jobs.get("halted"))

    def unregister(self, site: str, session: str) -> None:
        """End a session. A site none of whose workers ever joined (it failed while
        starting) is forgotten, rather than listed as an offline ghost."""
        record = self.sites.get(site)
        if record is not None:
            record.sessions.pop(session, None)
            if not record.sessions and site not in self.worker_site.values():
                del self.sites[site]

    # -- workers -------------------------------------------------------------------------

    def site_of_worker(self, ws: WorkerState) -> str | None:
        site = site_of(ws.resources)
        if site is not None:
            self.worker_site[ws.address] = site
        return site

    def check_worker(self, ws: WorkerState) -> str | None:
        """Why a joining worker's labels are not believable (``None`` if they are)."""
        site = site_of(ws.resources)
        ident = self.worker_identity.get(ws.address)
        if ident is not None and ident != ("site", site):
            claim = f"claims site {site!r}" if site else "carries no site label"
            return f"its certificate is {ident[0]} {ident[1]!r}, but it {claim}"
        if site is None:
            return None  # not a site worker: it gets only unrestricted work
        record = self.sites.get(site)
        if record is None:
            return f"it claims site {site!r}, which has not registered with this hub"
        held = {info.ref for info in record.catalog.values()}
        held |= {info.replica_of for info in record.catalog.values() if info.replica_of}
        for label in ws.resources:
            if (ref := label_dataset(label)) is not None and ref not in held:
                return f"it claims dataset {ref!r}, which site {site!r} does not hold"
        return None

    def members(self) -> set[str]:
        """Addresses of the federation's site workers: the only peers a worker dials
        (and the only endpoints worth relaying to)."""
        return {addr for addr, ws in self.scheduler.workers.items() if site_of(ws.resources)}

    def workers_of(self, site: str) -> list[WorkerState]:
        return [ws for ws in self.scheduler.workers.values() if site_of(ws.resources) == site]

    # -- catalog -------------------------------------------------------------------------

    def live_sites(self) -> list[SiteRecord]:
        return [record for record in self.sites.values() if record.alive()]

    def _catalog(self) -> tuple[dict[str, DatasetInfo], list]:
        """(datasets by ref, sorted (ref, summary) pairs), rebuilt only when a catalog
        changed or a site came or went."""
        live = self.live_sites()
        key = (self.catalog_version, tuple(record.name for record in live))
        if self._catalog_cache is None or self._catalog_cache[0] != key:
            out: dict[str, DatasetInfo] = {}
            for record in live:
                out.update({info.ref: info for info in record.catalog.values()})
                out.update({info.ref: info for info, _ in record.results.values()})
            summaries = [(ref, info.summary()) for ref, info in sorted(out.items())]
            self._catalog_cache = (key, out, summaries)
        return self._catalog_cache[1], self._catalog_cache[2]

    def datasets(self) -> dict[str, DatasetInfo]:
        """Every dataset and published result of every live site, by ``site/name``
        (cached: do not modify)."""
        return self._catalog()[0]

    def summaries(self) -> list[tuple[str, dict[str, Any]]]:
        """``(ref, DatasetInfo.summary())`` of :meth:`datasets`, sorted by ref (cached)."""
        return self._catalog()[1]

    def methods(self) -> dict[str, MethodInfo]:
        """Every shared method and workflow, by ``site/name``."""
        return {m.ref: m for record in self.live_sites() for m in record.methods.values()}

    def method(self, name: str) -> MethodInfo:
        _check_length("method", name, UnknownMethodError)
        known = self.methods()
        if name in known:
            return known[name]
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        listing = ", ".join(sorted(known)) or "none — no site shares a method"
        raise UnknownMethodError(f"unknown method {name!r}.{hint} Available: {listing}")

    def add_result(self, site: str, info: DatasetInfo, provenance: dict[str, Any]) -> None:
        record = self.sites.get(site)
        if record is None:
            raise UnknownDatasetError(f"site {site!r} is not registered")
        record.results[info.name] = (info, provenance)
        self.catalog_version += 1

    def update_datasets(
        self, site: str, infos: list[DatasetInfo]
    ) -> list[tuple[DatasetInfo, DatasetInfo]]:
        """Replace the catalog entries of datasets ``site`` registered by new versions;
        returns (old, new) pairs.

        Raises
        ------
        UnknownDatasetError
            For a site that is not registered, or a dataset it did not register.
        """
        record = self.sites.get(site)
        if record is None:
            raise UnknownDatasetError(f"site {site!r} is not registered; register first")
        unknown = sorted(i.name for i in infos if i.name not in record.catalog)
        if unknown:
            raise UnknownDatasetError(
                f"site {site!r} did not register dataset(s) {unknown}; a change cannot add a "
                "dataset: restart the site with the new configuration"
            )
        changed = []
        for info in infos:
            old = record.catalog[info.name]
            if info.replica_of:
                self._check_replica(info)
            record.catalog[info.name] = info
            changed.append((old, info))
        self.catalog_version += 1
        return changed

    def provenance(self, name: str) -> dict[str, Any]:
        info = self.dataset(name)
        record = self.sites[info.site]
        if info.name not in record.results:
            raise UnknownDatasetError(f"{info.ref!r} is a dataset, not a published result")
        return record.results[info.name][1]

    def dataset(self, name: str) -> DatasetInfo:
        """Resolve ``site/name`` (or a bare name held by exactly one site).

        Raises :class:`SiteOfflineError` for a dataset of a registered site that is
        offline, :class:`UnknownDatasetError` (listing what exists) otherwise.
        """
        _check_length("dataset", name, UnknownDatasetError)
        known = self.datasets()
        if name in known:
            return known[name]
        if "/" not in name:
            matches = [each for each in known if split_ref(each)[1] == name]
            if len(matches) == 1:
                return known[matches[0]]
            if len(matches) > 1:
                raise UnknownDatasetError(
                    f"dataset name {name!r} is held by several sites: {sorted(matches)}; "
                    "say which one as 'site/name'"
                )
        self._check_offline(name)
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        listing = ", ".join(sorted(known)) or "none — no site has registered yet"
        raise UnknownDatasetError(f"unknown dataset {name!r}.{hint} Available: {listing}")

    def _check_offline(self, name: str) -> None:
        """Raise :class:`SiteOfflineError` if ``name`` is held by an offline site."""
        for record in self.sites.values():
            held = {i.ref for i in record.catalog.values()}
            held |= {i.ref for i, _ in record.results.values()}
            if record.alive() or not (name in held or f"{record.name}/{name}" in held):
                continue
            timeout = dask.config.get("federation.site-outage-timeout")
            raise SiteOfflineError(
                f"dataset {name!r} is held by site {record.name!r}, which is offline (no site "
                "process connected to the hub). Open it when the site is back; computations "
                "already submitted wait for the site for up to "
                f"federation.site-outage-timeout ({parse_timedelta(timeout):g} s)"
            )

    def sites_info(self) -> dict[str, dict[str, Any]]:
        """What ``fed.sites()`` shows: one entry per registered or worker-backed site."""
        relay = self.plugin(RelayPlugin)
        names = set(self.sites) | {
            s for ws in self.scheduler.workers.values() if (s := site_of(ws.resources))
        }
        out = {}
        for name in sorted(names):
            record = self.sites.get(name)
            workers = self.workers_of(name)
            alive = record is not None and record.alive()
            status = "connected" if workers else "no workers"
            if record is not None and not alive:
                status = "offline"
            out[name] = SiteStatus(
                status=status,
                workers=[ws.name for ws in workers],
                nthreads=sum(ws.nthreads for ws in workers),
                memory_limit=sum(ws.memory_limit or 0 for ws in workers),
                memory_used=sum(ws.memory.process for ws in workers),
                datasets=sorted(record.catalog) if record else [],
                methods=sorted(record.methods) if record else [],
                results=sorted(record.results) if record else [],
                accepts_results=record.accepts_results if record else False,
                tasks_done=self.tasks_done[name],
                registered=record.registered if record else None,
                connectivity=record.connectivity if record else "direct",
                relayed_bytes=relay.relayed_bytes(name),
                jobs=record.jobs if record else None,
            ).model_dump(mode="json")
        return out
