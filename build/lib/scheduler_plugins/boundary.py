"""Keeping the scheduler's data-moving operations inside site borders.

Restrictions keep *tasks* at their site; ``Client.rebalance`` and
``Client.replicate`` move *data* between workers, and plain Dask would happily send a
site's raw chunks to another institute. :class:`BoundaryPlugin` wraps the two
scheduler handlers so each runs once per site, among that site's workers only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from distributed import SchedulerPlugin

from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler


class BoundaryPlugin(SchedulerPlugin):
    """Rebalance and replicate per site."""

    name = "federation-boundary"

    def __init__(self, state: FederationState):
        self.state = state

    async def start(self, scheduler: Scheduler) -> None:
        """Wrap the ``rebalance`` and ``replicate`` RPC handlers."""
        rebalance, replicate = scheduler.handlers["rebalance"], scheduler.handlers["replicate"]

        async def rebalance_per_site(
            keys: Iterable | None = None, workers: Iterable[str] | None = None,
            stimulus_id: str | None = None,
        ) -> dict[str, Any]:
            for site_workers in self._by_site(workers or scheduler.workers).values():
                result = await rebalance(keys=keys, workers=site_workers, stimulus_id=stimulus_id)
                if result.get("status") != "OK":
                    return result
            return {"status": "OK"}

        async def replicate_per_site(
            keys: list, n: int | None = None, workers: Iterable | None = None,
            branching_factor: int = 2, delete: bool = True, stimulus_id: str | None = None,
        ) -> dict | None:
            allowed = self._by_site(workers or scheduler.workers)
            keys_by_site: dict[str | None, list] = defaultdict(list)
            for key in keys:
                ts = scheduler.tasks.get(key)
                holders = {self.state.site_of_worker(ws) for ws in (ts.who_has if ts else ())}
                for site in holders or {None}:
                    keys_by_site[site].append(key)
            for site, site_keys in keys_by_site.items():
                if site in allowed:
                    await replicate(
                        keys=site_keys, n=n, workers=allowed[site],
                        branching_factor=branching_factor, delete=delete, stimulus_id=stimulus_id,
                    )
            return None

        scheduler.handlers["rebalance"] = rebalance_per_site
        scheduler.handlers["replicate"] = replicate_per_site

    def _by_site(self, workers: Iterable[str]) -> dict[str | None, list[str]]:
        out: dict[str | None, list[str]] = defaultdict(list)
        for addr in workers:
            ws = self.state.scheduler.workers.get(addr)
            if ws is not None:
                out[self.state.site_of_worker(ws)].append(addr)
        return out
