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

from distributed.comm.addressing import normalize_address

from federation.config import NAME_PATTERN, NAME_RULE
from federation.protocol import RESULTS, label_site, result_name, split_ref
from federation.security import identity

from .grants import principal
from .plugin import FederationPlugin
from .policy import PolicyPlugin
from .routing import RoutingPlugin
from .scan import ScanPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

logger = logging.getLogger(__name__)


def well_formed(kind: str, ref: str) -> bool:
    """Whether ``ref`` names an entry as sites announce them: ``site/NAME`` (a dataset or
    method) or ``site/results/NAME`` (a result; also read as a dataset), NAME of
    :data:`~federation.config.NAME_PATTERN`. Anything else (``awi/results/../sst``) is
    no catalog entry, and a site would resolve it as a path."""
    try:
        site, name = split_ref(ref)
    except ValueError:
        return False
    result = result_name(ref)
    if kind == "result" or (kind == "dataset" and result is not None):
        name = result or ""
    return bool(NAME_PATTERN.match(site) and NAME_PATTERN.match(name))


class TrustPlugin(FederationPlugin):
    """Records identities; refuses graphs that use what their submitter may not."""

    name = "federation-trust"

    # after routing and policy: it checks where they bound each task
    requires = (ScanPlugin, RoutingPlugin, PolicyPlugin)

    def __init__(self, state: FederationState):
        self.state = state
        self.routing = state.plugin(RoutingPlugin)
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
        next tick — nothing of a refused graph runs, and no byte of it moves. A
        site-bound call of a malformed reference is refused the same way (grants or not).
        """
        new = self.state.graph.tasks
        malformed = sorted({ref for calls in self.state.graph.bound.values()
                            for kind, ref in calls if not well_formed(kind, ref)})
        if malformed:
            self.state.refusals.refuse(new, ValueError(
                f"{', '.join(map(repr, malformed))} is not a reference: datasets and methods "
                f"are 'site/NAME', results 'site/{RESULTS}NAME', with NAME of {NAME_RULE}. "
                "Nothing of this computation ran."
            ))
            return
        if not self.grants.enabled:
            return
        who = principal(self.state.client_identity.get(client))
        missing = sorted(
            {ref for calls in self.state.graph.bound.values() for _, ref in calls
             if not self.grants.allows(who, ref)}
        )
        if not missing:
            self.check_placement(scheduler, client, who, new)
            return
        message = f"{self.grants.refusal(who, missing)}. Nothing of this computation ran."
        self.state.refusals.refuse(new, PermissionError(message))
        scheduler.log_event(
            "federation", {"action": "graph-refused", "client": client, "missing": missing}
        )
        logger.warning("Refused a graph of %s: %s", who, missing)

    def _sites_of(self, scheduler: Scheduler, ts: TaskState) -> set[str]:
        """Sites a task is restricted to, by labels, worker or host restrictions."""
        sites = set()
        if (label := self.routing.waiting_label(ts)) is not None:
            sites.add(label_site(label))
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
                    self.routing.confine(ts, workers)
        if not denied:
            return
        name = f"user {who!r}" if who else "an anonymous client"
        message = (
            f"{name} holds no grant at {', '.join(sorted(map(repr, denied)))}, so no task of "
            "theirs may run there; ask the hub operator for a grant (federation.grants). "
            "Nothing of this computation ran."
        )
        self.state.refusals.refuse(new, PermissionError(message))
        scheduler.log_event(
            "federation", {"action": "placement-refused", "client": client,
                           "sites": sorted(denied)}
        )
        logger.warning("Refused a graph of %s placed at %s", who, sorted(denied))
