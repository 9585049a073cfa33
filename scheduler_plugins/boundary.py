"""Keeping the scheduler's data-moving operations inside site borders.

Restrictions keep *tasks* at their site; ``Client.rebalance`` and
``Client.replicate`` move *data* between workers, and plain Dask would happily send a
site's raw chunks to another institute. :class:`BoundaryPlugin` wraps the two
scheduler handlers so each runs once per site, among that site's workers only.

The wrappers keep Dask's argument semantics and errors (``workers=`` takes addresses or
host names, an unknown address raises ``KeyError``, ``replicate`` onto no worker raises
``ValueError``); when no site-labelled worker is involved they call Dask's handler
unchanged, so a hub is exactly a Dask scheduler for unlabelled workers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from distributed.core import Status

from .plugin import FederationPlugin
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, WorkerState


class BoundaryPlugin(FederationPlugin):
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
            # Dask: explicit addresses, KeyError for an unknown one; None means all workers
            wss = (
                [scheduler.workers[w] for w in workers] if workers is not None
                else list(scheduler.workers.values())
            )
            groups = self._by_site(wss)
            if set(groups) <= {None}:
                return await rebalance(keys=keys, workers=workers, stimulus_id=stimulus_id)
            failed: list = []
            for site_workers in groups.values():
                result = await rebalance(keys=keys, workers=site_workers, stimulus_id=stimulus_id)
                if result.get("status") != "OK":
                    failed.extend(result.get("keys", ()))
            return {"status": "partial-fail", "keys": failed} if failed else {"status": "OK"}

        async def replicate_per_site(
            keys: list, n: int | None = None, workers: Iterable | None = None,
            branching_factor: int = 2, delete: bool = True, stimulus_id: str | None = None,
        ) -> dict | None:
            # Dask: host names expand to their workers, unknown addresses raise KeyError
            wss = (
                [scheduler.workers[w] for w in scheduler.workers_list(workers)]
                if workers is not None else list(scheduler.workers.values())
            )
            tasks = [scheduler.tasks[k] for k in keys]
            holders = {ws for ts in tasks for ws in (ts.who_has or ())}
            if set(self._by_site([*wss, *holders])) <= {None}:
                return await replicate(
                    keys=keys, n=n, workers=workers, branching_factor=branching_factor,
                    delete=delete, stimulus_id=stimulus_id,
                )
            running = [ws for ws in wss if ws.status == Status.running]
            if not running or n == 0:
                raise ValueError("Can not use replicate to delete data")
            missing = [ts.key for ts in tasks if not ts.who_has]
            if missing:
                return {"status": "partial-fail", "keys": missing}
            allowed = self._by_site(running)
            keys_by_site: dict[str | None, list] = defaultdict(list)
            for ts in tasks:
                for site in {self.state.site_of_worker(ws) for ws in ts.who_has}:
                    keys_by_site[site].append(ts.key)
            # a key is copied only among the allowed workers of a site already holding it
            for site, site_keys in keys_by_site.items():
                if site in allowed:
                    await replicate(
                        keys=site_keys, n=n, workers=allowed[site],
                        branching_factor=branching_factor, delete=delete, stimulus_id=stimulus_id,
                    )
            return None

        scheduler.handlers["rebalance"] = rebalance_per_site
        scheduler.handlers["replicate"] = replicate_per_site

    def _by_site(self, wss: Iterable[WorkerState]) -> dict[str | None, list[str]]:
        out: dict[str | None, list[str]] = defaultdict(list)
        for ws in wss:
            out[self.state.site_of_worker(ws)].append(ws.address)
        return out
