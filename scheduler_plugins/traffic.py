"""Traffic accounting: bytes that really crossed site borders.

Each site worker counts what its ``get_data`` handler wrote on the wire, by requester
(see :class:`federation.sitecontext.SiteWorkerPlugin`): peers fetching inputs, and the hub
gathering results for a client. :class:`TrafficPlugin` pulls these counters from
the workers when asked (and so synchronises with them), attributes both ends to
sites, and keeps the last counters of departed workers so totals never go down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from federation.protocol import TRAFFIC, WORKER_TRAFFIC, TrafficReport

from .plugin import FederationPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)

#: Destination name for results gathered through the hub by clients.
CLIENT = "client"


class TrafficPlugin(FederationPlugin):
    """Collects per-worker transfer counters into a source × destination ledger.

    RPC handler: :data:`~federation.protocol.TRAFFIC` answers a
    :class:`~federation.protocol.TrafficReport`, cumulative since the hub started.
    """

    name = "federation-traffic"

    def __init__(self, state: FederationState, timeout: float = 10.0):
        self.state = state
        self.timeout = timeout
        #: worker address -> its last reported counters {requester: [wire, nbytes, n]}
        self.counters: dict[str, dict[str, list[int]]] = {}

    async def start(self, scheduler: Scheduler) -> None:
        scheduler.handlers[TRAFFIC] = self.traffic

    async def collect(self) -> None:
        """Pull every worker's counters (workers that do not answer keep their last)."""
        scheduler = self.state.scheduler
        workers = [
            addr for addr, ws in scheduler.workers.items() if self.state.site_of_worker(ws)
        ]
        if not workers:
            return
        try:
            replies = await asyncio.wait_for(
                scheduler.broadcast(
                    msg={"op": WORKER_TRAFFIC}, workers=workers, on_error="return"
                ),
                self.timeout,
            )
        except asyncio.TimeoutError:
            logger.warning("Workers did not report traffic within %ss", self.timeout)
            return
        for addr, reply in replies.items():
            if isinstance(reply, dict):
                self.counters[addr] = reply

    def ledger(self) -> list[list[Any]]:
        rows: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for source_addr, by_requester in self.counters.items():
            source = self.state.worker_site.get(source_addr, source_addr)
            for who, (wire, nbytes, n) in by_requester.items():
                dest = self.state.worker_site.get(who, CLIENT) if who else CLIENT
                row = rows[(source, dest)]
                row[0] += wire
                row[1] += nbytes
                row[2] += n
        return [[s, d, *v] for (s, d), v in sorted(rows.items())]

    async def traffic(self) -> dict[str, Any]:
        await self.collect()
        return TrafficReport(
            rows=self.ledger(),
            tasks=self.state.tasks_done,
            refusals=self.state.egress_refusals,
        ).model_dump(mode="json")
