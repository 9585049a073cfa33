"""Demand-driven sites: what the hub tells a site that scales its workers (batch jobs).

A site whose workers are batch jobs (``cluster:`` and ``adapt:`` in its config, see
:mod:`federation.jobs`) asks the hub how much work waits for it and retires workers
through the hub. RPC handlers (with TLS, only the site's own certificate may call them):

``federation_site_demand(site)``
    ``{"tasks", "held", "workers"}``: tasks waiting for the site (its parked reads, and
    tasks bound to it in ``no-worker``) plus those its workers process; how many results
    its workers hold; per worker (by name) tasks processing and keys held.
``federation_retire_site_workers(site, names)``
    Retire some of the site's workers. Like ``Scheduler.retire_workers``, but the data
    only they hold is replicated to **other workers of the same site** only; a worker
    whose data has nowhere to go in its site is kept. Returns the names retired.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from time import time
from typing import TYPE_CHECKING, Any

from distributed.active_memory_manager import (
    ActiveMemoryManagerExtension,
    RetireWorker,
    Suggestion,
)
from distributed.core import Status

from federation.protocol import (
    RETIRE_SITE_WORKERS,
    SITE_DEMAND,
    Demand,
    WorkerLoad,
    label_site,
)

from .plugin import FederationPlugin
from .routing import RoutingPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, WorkerState

logger = logging.getLogger(__name__)


class SiteRetireWorker(RetireWorker):
    """distributed's ``RetireWorker`` policy, replicating only onto ``peers()`` (the
    retiring worker's own site); with no peer, the retirement is abandoned."""

    __slots__ = ("peers",)

    def __init__(self, address: str, peers: Callable[[], set[WorkerState]]):
        super().__init__(address)
        self.peers = peers

    def run(self) -> Iterator[Suggestion]:
        policy = super().run()
        reply = None
        while True:
            try:
                suggestion = policy.send(reply)
            except StopIteration:
                return
            if suggestion.op == "replicate" and suggestion.candidates is None:
                suggestion = suggestion._replace(candidates=self.peers())
            reply = yield suggestion


class ScalingPlugin(FederationPlugin):
    """Per-site demand and site-confined retirement for sites that scale."""

    name = "federation-scaling"

    requires = (RoutingPlugin,)

    def __init__(self, state: FederationState):
        self.state = state
        self.routing = state.plugin(RoutingPlugin)

    async def start(self, scheduler: Scheduler) -> None:
        scheduler.handlers.update({
            SITE_DEMAND: self.demand,
            RETIRE_SITE_WORKERS: self.retire,
        })

    def demand(self, comm: Any, site: str) -> dict[str, Any]:
        scheduler = self.state.scheduler
        # parked reads and tasks bound to the site that wait for a worker (no-worker)
        tasks = sum(
            1 for ts in scheduler.unrunnable
            if (label := self.routing.waiting_label(ts)) and label_site(label) == site
        )
        workers = self.state.workers_of(site)
        tasks += sum(len(ws.processing) for ws in workers)
        return Demand(
            tasks=tasks,
            held=sum(len(ws.has_what) for ws in workers),
            workers={
                str(ws.name): WorkerLoad(processing=len(ws.processing), keys=len(ws.has_what))
                for ws in workers
            },
        ).model_dump(mode="json")

    async def retire(self, comm: Any, site: str, names: list[str]) -> list[str]:
        scheduler = self.state.scheduler
        wanted = {str(n) for n in names}
        leaving = [ws for ws in self.state.workers_of(site) if str(ws.name) in wanted]
        if not leaving:
            return []
        stimulus_id = f"federation-retire-{site}-{time()}"

        def peers() -> set[WorkerState]:
            return {ws for ws in self.state.workers_of(site) if ws.status == Status.running}

        amm = scheduler.extensions.get("amm")
        temporary = amm is None or not amm.running
        if temporary:
            amm = ActiveMemoryManagerExtension(
                scheduler, policies=set(), register=False, start=True, interval=0.5
            )
        try:
            policies = []
            for ws in leaving:
                policy = SiteRetireWorker(ws.address, peers)
                amm.add_policy(policy)
                policies.append((ws, ws.status, policy))
                # no new tasks for it, as in Scheduler.retire_workers
                scheduler.handle_worker_status_change(Status.closing_gracefully, ws,
                                                      stimulus_id)
                scheduler.stream_comms[ws.address].send({
                    "op": "worker-status-change", "status": ws.status.name,
                    "stimulus_id": stimulus_id,
                })
            amm.run_once()
            retired = await asyncio.gather(*(
                self._finish(ws, status, policy, stimulus_id) for ws, status, policy in policies
            ))
        finally:
            if temporary:
                amm.stop()
        scheduler.log_event("federation", {
            "action": "site-scaled-down", "site": site,
            "retired": [n for n in retired if n], "stimulus_id": stimulus_id,
        })
        return [n for n in retired if n]

    async def _finish(
        self, ws: WorkerState, previous: Status, policy: SiteRetireWorker, stimulus_id: str
    ) -> str | None:
        """Wait until the worker's data has a copy in its site; then remove and close it."""
        scheduler = self.state.scheduler
        while not policy.done():
            await asyncio.sleep(0.05)
        if ws.address not in scheduler.workers:
            return str(ws.name)  # gone by itself meanwhile
        if policy.no_recipients:
            # nothing else in the site can take its data: keep it serving
            scheduler.stream_comms[ws.address].send({
                "op": "worker-status-change", "status": previous.name,
                "stimulus_id": stimulus_id,
            })
            return None
        await scheduler.remove_worker(ws.address, expected=True, close=True,
                                      stimulus_id=stimulus_id)
        return str(ws.name)
