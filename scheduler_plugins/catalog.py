"""Site registration and the federated catalog, served over the scheduler's RPC port."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import dask

from federation import protocol
from federation.catalog import DatasetInfo
from federation.config import CONNECTIVITY, NAME_PATTERN, NAME_RULE
from federation.protocol import RESULTS, MethodInfo
from federation.security import identity, serial

from .announce import check_announcement
from .answers import user_errors
from .grants import principal
from .plugin import FederationPlugin
from .relay import RelayPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)


def check_entry(site: str, kind: str, owner: str, name: str) -> None:
    """Refuse a catalog entry a site may not announce: one of another site, or one
    outside its namespace. Datasets and methods are ``site/NAME``; results are
    ``site/results/NAME``, so a result can never shadow a dataset.
    """
    if owner != site:
        raise PermissionError(f"site {site!r} cannot announce {kind} {owner}/{name} of site "
                              f"{owner!r}; a site announces only its own entries")
    if kind == "result":
        bare = name[len(RESULTS):] if name.startswith(RESULTS) else ""
    else:
        bare = name
    if not NAME_PATTERN.match(bare):
        where = f"{site}/{RESULTS}NAME" if kind == "result" else f"{site}/NAME"
        raise PermissionError(
            f"site {site!r} cannot announce {kind} {site}/{name}: {kind}s are named {where} "
            f"with NAME of {NAME_RULE}"
        )


class CatalogPlugin(FederationPlugin):
    """Registers sites and answers catalog questions.

    RPC handlers it adds to the scheduler (all arguments msgpack-plain; nothing a
    site sends is unpickled): ``REGISTER_SITE``, ``HEARTBEAT``, ``UNREGISTER_SITE``,
    ``ADD_RESULT``, ``UPDATE_DATASETS``, ``CATALOG``, ``DATASET``, ``SITES``, ``METHODS``,
    ``METHOD`` and ``PROVENANCE``; their arguments and answers are in
    :mod:`federation.protocol`, who may call each in :mod:`.handlers`.
    """

    name = "federation-catalog"
    # registration replies carry the site's relay token
    requires = (RelayPlugin,)

    def __init__(self, state: FederationState):
        self.state = state

    async def start(self, scheduler: Scheduler) -> None:
        """Install the RPC handlers."""
        scheduler.handlers.update(
            {
                protocol.REGISTER_SITE: self.register_site,
                protocol.HEARTBEAT: self.heartbeat,
                protocol.UNREGISTER_SITE: self.unregister_site,
                protocol.CATALOG: self.catalog,
                protocol.DATASET: self.dataset,
                protocol.SITES: self.sites,
                protocol.METHODS: self.methods,
                protocol.METHOD: self.method,
                protocol.ADD_RESULT: self.add_result,
                protocol.UPDATE_DATASETS: self.update_datasets,
                protocol.PROVENANCE: self.provenance,
            }
        )
        # a user's or site's mistake is answered to them, not logged as a hub ERROR
        for op, handler in list(scheduler.handlers.items()):
            if getattr(handler, "__self__", None) is self:
                scheduler.handlers[op] = user_errors(handler, op)

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """Remember which site a new worker belongs to; turn away impostors.

        A worker whose labels name a site that never registered, or a dataset its site
        does not hold, would attract that site's reads; it is removed at once.
        """
        ws = scheduler.workers[worker]
        reason = self.state.check_worker(ws)
        if reason is not None:
            logger.warning("Refusing worker %s: %s", worker, reason)
            scheduler.log_event(
                "federation", {"action": "worker-refused", "worker": worker, "reason": reason}
            )
            scheduler.loop.add_callback(
                scheduler.remove_worker, worker, stimulus_id="federation-refuse-worker",
                close=True,
            )
            return
        site = self.state.site_of_worker(ws)
        scheduler.log_event(
            "federation", {"action": "worker-joined", "worker": worker, "site": site}
        )

    def register_site(
        self,
        comm,
        site: str,
        session: str,
        datasets: list[dict],
        methods: list[dict] = (),
        results: list[dict] = (),
        accepts_results: bool = False,
        join: bool = False,
        connectivity: str | None = None,
        strict: bool = False,
    ) -> dict[str, Any]:
        # who may register which site is checked before this runs (see .handlers)
        check_announcement(site, list(datasets), list(methods), list(results))
        infos = [DatasetInfo.from_wire(d) for d in datasets]
        method_infos = [MethodInfo.from_wire(m) for m in methods]
        stored = [(DatasetInfo.from_wire(r["info"]), r["provenance"]) for r in results]
        for kind, entries in (("dataset", infos), ("method", method_infos)):
            for entry in entries:
                check_entry(site, kind, entry.site, entry.name)
        for info, _ in stored:
            check_entry(site, "result", info.site, info.name)
        # the hub's default applies to sites that do not say
        connectivity = connectivity or dask.config.get("federation.connectivity")
        if connectivity not in CONNECTIVITY:
            raise ValueError(
                f"connectivity {connectivity!r} of site {site!r} is not one of {CONNECTIVITY}"
            )
        self.state.register(
            site, session, comm.peer_address, infos, methods=method_infos, results=stored,
            accepts_results=accepts_results, join=join, connectivity=connectivity,
        )
        if (number := serial(comm.extra_info.get("peercert"))) is not None:
            self.state.session_serial[session] = number  # revoking it ends the registration
        self.state.scheduler.log_event(
            "federation",
            {"action": "site-registered", "site": site, "datasets": [i.name for i in infos]},
        )
        logger.info("Site %s registered with datasets %s", site, [i.name for i in infos])
        exposed = [i.ref for i in infos if i.egress == "none"]
        if exposed and not strict:
            logger.warning(
                "Site %s is not strict but serves %s with egress 'none': code a granted user "
                "runs there can open the site's files directly, so on this site these "
                "policies bind honest computations only. Set 'strict: true' in its config",
                site, exposed,
            )
        # every site gets a relay token: outbound-only sites register their listeners
        # with it, and without TLS it is how any site's workers ask for relay tickets
        return protocol.RegisterReply(
            connectivity=connectivity,
            # the site's workers check the hub's capabilities with it (federation.capability)
            capability_key=self.state.site_secret(site).hex(),
            relay=self.state.plugin(RelayPlugin).access(site),
        ).model_dump(mode="json")

    def heartbeat(
        self, site: str, session: str, jobs: dict[str, Any] | None = None
    ) -> dict[str, str]:
        return {"status": "OK" if self.state.heartbeat(site, session, jobs) else "unknown"}

    def unregister_site(self, site: str, session: str) -> dict[str, str]:
        self.state.unregister(site, session)
        self.state.scheduler.log_event("federation", {"action": "site-left", "site": site})
        return {"status": "OK"}

    def _who(self, comm) -> str | None:
        return principal(identity(comm.extra_info.get("peercert")))

    def _granted(self, comm, ref: str) -> None:
        who = self._who(comm)
        if not self.state.grants.allows(who, ref):
            raise PermissionError(self.state.grants.refusal(who, [ref]))

    def catalog(self, comm) -> list[dict[str, Any]]:
        """The datasets the asking identity may use."""
        who = self._who(comm)
        return [
            summary for ref, summary in self.state.summaries()
            if self.state.grants.allows(who, ref)
        ]

    def dataset(self, comm, name: str) -> dict[str, Any]:
        info = self.state.dataset(name)
        self._granted(comm, info.ref)
        return info.to_wire()

    def sites(self, comm) -> dict[str, dict[str, Any]]:
        who = self._who(comm)
        return {
            name: self.state.grants.site_view(who, name, info)
            for name, info in self.state.sites_info().items()
        }

    def methods(self, comm) -> list[dict[str, Any]]:
        who = self._who(comm)
        return [
            m.to_wire() for ref, m in sorted(self.state.methods().items())
            if self.state.grants.allows(who, ref)
        ]

    def method(self, comm, name: str) -> dict[str, Any]:
        info = self.state.method(name)
        self._granted(comm, info.ref)
        return info.to_wire()

    def add_result(self, site: str, session: str, result: dict) -> dict[str, str]:
        """A site worker stored a result (called from its write task).

        Only the site itself gets here (certificate and session, see .handlers), and
        only with an entry in its own ``results/`` namespace.
        """
        info = DatasetInfo.from_wire(result["info"])
        check_entry(site, "result", info.site, info.name)
        self.state.add_result(site, info, result["provenance"])
        self.state.scheduler.log_event(
            "federation", {"action": "result-published", "result": info.ref}
        )
        return {"status": "OK"}

    def update_datasets(self, site: str, session: str, datasets: list[dict]) -> dict[str, str]:
        """New versions of datasets the site registered (its periodic check or SIGHUP).

        Only the site itself gets here (certificate and session, see .handlers), and only
        with datasets it registered: a change cannot add a dataset.
        """
        check_announcement(site, list(datasets), [], [])
        infos = [DatasetInfo.from_wire(d) for d in datasets]
        for info in infos:
            check_entry(site, "dataset", info.site, info.name)
        changed = self.state.update_datasets(site, infos)
        for old, new in changed:
            self.state.scheduler.log_event("federation", {
                "action": "dataset-changed", "dataset": new.ref, "from": old.version,
                "to": new.version, "dims": new.dims,
            })
            logger.info("Dataset %s changed: version %s -> %s %s", new.ref, old.version,
                        new.version, new.dims)
        return {"status": "OK"}

    def provenance(self, comm, name: str) -> dict[str, Any]:
        prov = self.state.provenance(name)
        self._granted(comm, self.state.dataset(name).ref)
        return prov
