"""Site registration and the federated catalog, served over the scheduler's RPC port."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import dask
from distributed import SchedulerPlugin

from federation.catalog import DatasetInfo
from federation.config import CONNECTIVITY
from federation.methods import MethodInfo
from federation.security import identity

from .grants import principal
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)


class CatalogPlugin(SchedulerPlugin):
    """Registers sites and answers catalog questions.

    RPC handlers it adds to the scheduler (all arguments msgpack-plain; nothing a
    site sends is unpickled):

    ``federation_register_site(site, session, datasets, join=False)``
        A site process announces itself and its catalog.
    ``federation_heartbeat(site, session, jobs=None)``
        Keeps the registration alive (and brings the state of a batch site's jobs);
        answers ``{"status": "unknown"}`` after a hub restart, and the site re-announces.
    ``federation_unregister_site(site, session)``
        A site process leaves.
    ``federation_catalog()`` / ``federation_dataset(name)`` / ``federation_sites()``
        What clients ask.
    """

    name = "federation-catalog"

    def __init__(self, state: FederationState):
        self.state = state

    async def start(self, scheduler: Scheduler) -> None:
        """Install the RPC handlers."""
        scheduler.handlers.update(
            {
                "federation_register_site": self.register_site,
                "federation_heartbeat": self.heartbeat,
                "federation_unregister_site": self.unregister_site,
                "federation_catalog": self.catalog,
                "federation_dataset": self.dataset,
                "federation_sites": self.sites,
                "federation_methods": self.methods,
                "federation_method": self.method,
                "federation_add_result": self.add_result,
                "federation_provenance": self.provenance,
            }
        )

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
    ) -> dict[str, Any]:
        ident = identity(comm.extra_info.get("peercert"))
        if self.state.scheduler.address.startswith("tls://") and ident != ("site", site):
            who = f"{ident[0]} {ident[1]!r}" if ident else "an unidentified peer"
            raise PermissionError(
                f"the certificate of {who} cannot register site {site!r}; a site registers "
                "with a certificate issued for it: dask federation certs issue --site NAME"
            )
        infos = [DatasetInfo.from_wire(d) for d in datasets]
        method_infos = [MethodInfo.from_wire(m) for m in methods]
        stored = [(DatasetInfo.from_wire(r["info"]), r["provenance"]) for r in results]
        for ref in [i.ref for i in infos] + [m.ref for m in method_infos]:
            if not ref.startswith(f"{site}/"):
                raise ValueError(f"site {site!r} announced {ref!r} of another site")
        # the hub's default applies to sites that do not say
        connectivity = connectivity or dask.config.get("federation.connectivity", "direct")
        if connectivity not in CONNECTIVITY:
            raise ValueError(
                f"connectivity {connectivity!r} of site {site!r} is not one of {CONNECTIVITY}"
            )
        self.state.register(
            site, session, comm.peer_address, infos, methods=method_infos, results=stored,
            accepts_results=accepts_results, join=join, connectivity=connectivity,
        )
        self.state.scheduler.log_event(
            "federation",
            {"action": "site-registered", "site": site, "datasets": [i.name for i in infos]},
        )
        logger.info("Site %s registered with datasets %s", site, [i.name for i in infos])
        reply: dict[str, Any] = {"status": "OK", "connectivity": connectivity}
        if connectivity == "outbound-only":
            reply["relay"] = {
                # behind a NodePort or proxy, sites reach the relay on another port
                "port": dask.config.get("federation.relay.public-port", None)
                or self.state.relay_port,
                "token": self.state.relay.token_for(site),
            }
        return reply

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
            info.summary() for ref, info in sorted(self.state.datasets().items())
            if self.state.grants.allows(who, ref)
        ]

    def dataset(self, comm, name: str) -> dict[str, Any]:
        info = self.state.dataset(name)
        self._granted(comm, info.ref)
        return info.to_wire()

    def sites(self) -> dict[str, dict[str, Any]]:
        return self.state.sites_info()

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

    def add_result(self, site: str, result: dict, worker: str) -> dict[str, str]:
        """A site worker stored a result (called from its write task)."""
        if self.state.worker_site.get(worker) != site:
            raise PermissionError(f"worker {worker} cannot announce results of site {site!r}")
        info = DatasetInfo.from_wire(result["info"])
        self.state.add_result(site, info, result["provenance"])
        self.state.scheduler.log_event(
            "federation", {"action": "result-published", "result": info.ref}
        )
        return {"status": "OK"}

    def provenance(self, name: str) -> dict[str, Any]:
        return self.state.provenance(name)
