"""Who is who, and who may use what: identities from TLS certificates, and grants.

With mutual TLS, every connection to the hub carries a certificate issued by the
federation's CA (see :mod:`federation.security`) naming a role and a name. This plugin
records the identity of each client and worker as they register, and — when the hub is
configured with ``federation.grants`` — refuses, before anything runs, a graph that
reads a dataset, calls a method or stores a result the submitting user has no grant for,
or that places a task at a site where the user holds no grant at all.

Grants map an identity to ``fnmatch`` patterns over references::

    federation:
      grants:
        alice: ["awi/*", "geomar/chl"]   # a user (certificate role "user")
        site:awi: ["geomar/*"]           # a site's workflows, running at awi
        "*": ["*/results/*"]             # everyone

A pattern ``awi/*`` covers awi's datasets, methods and results.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from distributed import SchedulerPlugin
from distributed.comm.addressing import normalize_address

from federation.security import identity

from .grants import principal
from .refusal import Refusals
from .routing import _label_site
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

logger = logging.getLogger(__name__)



class TrustPlugin(SchedulerPlugin):
    """Records identities; refuses graphs that use what their submitter may not."""

    name = "federation-trust"

    def __init__(self, state: FederationState, refusals: Refusals):
        self.state = state
        self.refusals = refusals
        self.grants = state.grants

    async def start(self, scheduler: Scheduler) -> None:
        """Wrap the client and worker registration handlers to read certificates."""
        add_client = scheduler.handlers["register-client"]
        add_worker = scheduler.handlers["register-worker"]

        async def register_client(comm, client: str, **kwargs):
            self.state.client_identity[client] = identity(comm.extra_info.get("peercert"))
            return await add_client(comm, client=client, **kwargs)

        async def register_worker(comm, address: str, **kwargs):
            ident = identity(comm.extra_info.get("peercert"))
            self.state.worker_identity[normalize_address(address)] = ident
            return await add_worker(comm, address=address, **kwargs)

        scheduler.handlers["register-client"] = register_client
        scheduler.handlers["register-worker"] = register_worker

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list, stimulus_id: str, **kwargs
    ) -> None:
        """Refuse the whole graph if it uses anything its submitter has no grant for.

        Runs after the routing plugin (it is installed after it): the graph's new tasks
        are held on a resource no worker has, and failed with a PermissionError on the
        next tick — nothing of a refused graph runs, and no byte of it moves.
        """
        if not self.grants.enabled:
            return
        who = principal(self.state.client_identity.get(client))
        new = [ts for key in tasks if (ts := scheduler.tasks.get(key)) and ts.state == "released"]
        missing = sorted(
            {ref for calls in self.state.scan.bound(scheduler, tasks, stimulus_id).values()
             for _, ref in calls
             if not self.grants.allows(who, ref)}
        )
        if not missing:
            self.check_placement(scheduler, client, who, new)
            return
        message = f"{self.grants.refusal(who, missing)}. Nothing of this computation ran."
        self.refusals.refuse(new, PermissionError(message))
        scheduler.log_event(
            "federation", {"action": "graph-refused", "client": client, "missing": missing}
        )
        logger.warning("Refused a graph of %s: %s", who, missing)

    def _sites_of(self, scheduler: Scheduler, ts: TaskState) -> set[str]:
        """Sites a task is restricted to, by labels, worker or host restrictions."""
        sites = set()
        labels = dict(ts.resource_restrictions or {})
        if (parked := self.refusals.routing.parked.get(ts.key)) is not None:
            labels[parked] = 1
        if site := _label_site(labels):
            sites.add(site)
        for addr in ts.worker_restrictions or ():
            sites.add(self.state.worker_site.get(addr) or f"worker {addr}")
        if ts.host_restrictions:
            sites |= {self.state.worker_site.get(ws.address) or f"worker {ws.address}"
                      for ws in scheduler.workers.values() if ws.host in ts.host_restrictions}
        return sites

    def check_placement(
        self, scheduler: Scheduler, client: str, who: str | None, new: list[TaskState]
    ) -> None:
        """Placement needs a grant: refuse a graph with a task restricted to a site where
        its submitter holds no grant; keep tasks free to run anywhere at the sites where
        it holds one (as the scheduler would pick any site's worker for them)."""
        granted = {s for s in set(self.state.worker_site.values()) | set(self.state.sites)
                   if self.grants.allows_site(who, s)}
        free: list[TaskState] = []
        denied: set[str] = set()
        for ts in new:
            sites = self._sites_of(scheduler, ts)
            if sites:
                denied |= {s for s in sites if not self.grants.allows_site(who, s)}
            elif not ts.dependencies:
                free.append(ts)
        if not denied and free:
            workers = {ws.address for ws in scheduler.workers.values()
                       if self.state.worker_site.get(ws.address) in granted}
            if len(workers) < len(scheduler.workers):
                if not granted:
                    denied.add("any site")
                for ts in free:
                    ts.worker_restrictions = workers
                    ts.loose_restrictions = False
        if not denied:
            return
        name = f"user {who!r}" if who else "an anonymous client"
        message = (
            f"{name} holds no grant at {', '.join(sorted(map(repr, denied)))}, so no task of "
            "theirs may run there; ask the hub operator for a grant (federation.grants). "
            "Nothing of this computation ran."
        )
        self.refusals.refuse(new, PermissionError(message))
        scheduler.log_event(
            "federation", {"action": "placement-refused", "client": client,
                           "sites": sorted(denied)}
        )
        logger.warning("Refused a graph of %s placed at %s", who, sorted(denied))
