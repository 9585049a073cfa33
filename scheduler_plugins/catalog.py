"""Site registration and the federated catalog, served over the scheduler's RPC port."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from distributed import SchedulerPlugin

from federation.catalog import DatasetInfo

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
    ``federation_heartbeat(site, session)``
        Keeps the registration alive; answers ``{"status": "unknown"}`` after a hub
        restart, and the site re-announces.
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
            }
        )

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """Remember which site a new worker belongs to."""
        site = self.state.site_of_worker(scheduler.workers[worker])
        scheduler.log_event(
            "federation", {"action": "worker-joined", "worker": worker, "site": site}
        )

    def register_site(
        self, comm, site: str, session: str, datasets: list[dict], join: bool = False
    ) -> dict[str, Any]:
        infos = [DatasetInfo.from_wire(d) for d in datasets]
        for info in infos:
            if info.site != site:
                raise ValueError(f"site {site!r} announced dataset {info.ref!r} of another site")
        self.state.register(site, session, comm.peer_address, infos, join=join)
        self.state.scheduler.log_event(
            "federation",
            {"action": "site-registered", "site": site, "datasets": [i.name for i in infos]},
        )
        logger.info("Site %s registered with datasets %s", site, [i.name for i in infos])
        return {"status": "OK"}

    def heartbeat(self, site: str, session: str) -> dict[str, str]:
        return {"status": "OK" if self.state.heartbeat(site, session) else "unknown"}

    def unregister_site(self, site: str, session: str) -> dict[str, str]:
        self.state.unregister(site, session)
        self.state.scheduler.log_event("federation", {"action": "site-left", "site": site})
        return {"status": "OK"}

    def catalog(self) -> list[dict[str, Any]]:
        return [info.summary() for _, info in sorted(self.state.datasets().items())]

    def dataset(self, name: str) -> dict[str, Any]:
        return self.state.dataset(name).to_wire()

    def sites(self) -> dict[str, dict[str, Any]]:
        return self.state.sites_info()
