"""Data-aware routing: every task runs at the site that holds its data.

Three decisions, all expressed as Dask resource restrictions on ``TaskState`` so that
the scheduler's own placement, work stealing and retries respect them:

1. **Site-bound calls.** A task whose run_spec calls :func:`federation.sitecalls.read_chunk`
   (also inside fused subgraphs) may only run on workers labelled
   ``dataset:<site>/<name>``; one calling a shared method or storing a result only on
   workers labelled ``site:<site>`` (see :mod:`federation.graph`).
2. **Downstream tasks.** When a task becomes ready, it is bound to the site holding
   most of its input bytes (``site:<site>``), measured from the real ``nbytes`` of its
   inputs; so per-chunk and per-site reductions stay at the site and only reduced
   results cross borders.
3. **The site queue.** Reads are parked and admitted into their site in slots, fairly
   between users (:mod:`.sitequeue`).

Nothing is ever unrestricted once bound, so a site with no live workers makes its
tasks wait instead of sending them elsewhere.

This module alone writes task restrictions: the other plugins bind, pin, hold or confine
tasks through :class:`RoutingPlugin`'s methods, and ask it which label a task waits for.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from federation.protocol import (
    SITE_PREFIX,
    dataset_label,
    label_site,
    result_name,
    site_label,
    site_of_ref,
)

from .plugin import FederationPlugin
from .scan import ScanPlugin
from .sitequeue import HOLD, SiteQueue, setting
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState

__all__ = ["HOLD", "RoutingPlugin"]


class RoutingPlugin(FederationPlugin):
    """Binds tasks to sites and meters reads into each site.

    Parameters
    ----------
    state:
        The hub's shared :class:`~scheduler_plugins.state.FederationState`.
    saturation:
        Tasks a site may be processing per worker thread before no more reads are
        admitted into it (reads and other tasks alike). Above 1 so that a thread
        finds its next read already at the worker instead of waiting for the hub to
        admit one. Default: ``federation.site-queue.saturation`` in dask config, else 2.
    memory_fraction:
        Stop admitting reads into a site while its workers' process memory exceeds
        this fraction of their combined memory limit (one task is always admitted
        when nothing runs at the site, so a computation cannot stall).
        Default: ``federation.site-queue.memory-fraction`` in dask config, else 0.6.
    site_queue:
        Meter reads into sites (default: ``federation.site-queue.enabled``, else on).
        Off, reads are sent to their site at once, like plain restricted tasks; only
        useful to measure what the queue is for.
    """

    name = "federation-routing"
    requires = (ScanPlugin,)

    def __init__(
        self,
        state: FederationState,
        saturation: float | None = None,
        memory_fraction: float | None = None,
        site_queue: bool | None = None,
    ):
        self.state = state
        self.saturation = float(setting("saturation", saturation))
        self.memory_fraction = float(setting("memory-fraction", memory_fraction))
        self.site_queue = bool(setting("enabled", site_queue))
        #: keys of site-bound tasks (reads, method calls, result writes): never re-placed
        self.pinned: set[Any] = set()
        self.queue = SiteQueue(state, self.saturation, self.memory_fraction)
        #: key -> the label a parked read needs, until admitted or forgotten
        self.parked: dict[Any, str] = self.queue.parked
        self.scheduler: Scheduler | None = None

    async def start(self, scheduler: Scheduler) -> None:
        """Keep a reference; start the site queue."""
        self.scheduler = scheduler
        self.queue.start(scheduler)

    # -- hooks ---------------------------------------------------------------------------

    def update_graph(
        self, scheduler: Scheduler, *, client: str, tasks: list, stimulus_id: str, **kwargs
    ) -> None:
        """Bind new site-bound tasks to their site before they are transitioned.

        Runs before the scheduler transitions the new tasks, so restrictions set here
        decide their first placement.
        """
        self.scheduler = scheduler
        graph = self.state.graph
        new = graph.tasks
        bound_per_site: dict[str, int] = defaultdict(int)
        for ts in new:
            bound = sorted(set(graph.bound.get(ts.key, ())))
            if bound:
                # A task bound to two sites cannot run anywhere; it goes to the first,
                # where read_chunk/run_method name what they cannot find.
                self.bind(ts, *bound[0])
                bound_per_site[site_of_ref(bound[0][1])] += 1
            elif ts.dependencies and all(dts.who_has for dts in ts.dependencies):
                self.place(ts)
        self.place_free_roots(new)
        if bound_per_site:
            scheduler.log_event(
                "federation",
                {"action": "route-graph", "client": client, "bound": dict(bound_per_site),
                 "stimulus_id": stimulus_id},
            )

    def bind(self, ts: TaskState, kind: str, ref: str) -> None:
        """Restrict a site-bound task: reads to their dataset's label (parked in the site
        queue), method calls and result writes to their site."""
        site = site_of_ref(ref)
        # where site-bound work runs is the federation's decision, not the user's
        ts.worker_restrictions = ts.host_restrictions = None
        ts.loose_restrictions = False
        self.pinned.add(ts.key)
        label = site_label(site)
        if kind == "dataset" and result_name(ref) is None:
            label = dataset_label(ref)  # replicas of a dataset may live elsewhere
        if kind == "dataset" and self.site_queue:
            self.queue.park(ts.key, label)
            ts.resource_restrictions = {HOLD: 1}
        else:
            ts.resource_restrictions = {label: 1}

    def pin(self, ts: TaskState, site: str) -> None:
        """Bind a task to ``site`` for good: it is never re-placed (the policy plugin's
        binding of what derives from an ``egress: none`` dataset)."""
        self.pinned.add(ts.key)
        ts.resource_restrictions = {site_label(site): 1}
        ts.loose_restrictions = False

    def hold(self, ts: TaskState, resource: str) -> None:
        """Hold a task on ``resource``, which no worker has, for good: it waits in
        ``no-worker`` and never runs (refused tasks wait there to be failed)."""
        self.parked.pop(ts.key, None)
        self.pinned.add(ts.key)  # never placed again
        ts.worker_restrictions = ts.host_restrictions = None
        ts.resource_restrictions = {resource: 1}
        ts.loose_restrictions = False

    def confine(self, ts: TaskState, workers: set[str]) -> None:
        """Keep a task that may run at any site to ``workers`` (the sites where its
        submitter holds a grant)."""
        ts.worker_restrictions = workers
        ts.loose_restrictions = False

    def waiting_label(self, ts: TaskState) -> str | None:
        """The ``site:`` or ``dataset:`` label a task needs a worker with (a parked
        read's, else its restriction's); ``None``: it is bound to no site."""
        if ts.key in self.parked:
            return self.parked[ts.key]
        for label in ts.resource_restrictions or ():
            if label_site(label) is not None:
                return label
        return None

    def transition(
        self, key: Any, start: str, finish: str, *args: Any, stimulus_id: str, **kwargs: Any
    ) -> None:
        """Place tasks that just became ready; feed and drain the site queues.

        Runs after each transition, before the recommendations it produced are
        processed: when a task lands in memory, its newly ready dependents are
        bound here, before the scheduler picks their worker. Called for every
        transition of every task, so it does the least it can for the rest.
        """
        if finish == "memory":
            computed = start == "processing"  # not scattered or fetched
            site = self.state.worker_site.get(kwargs.get("worker") or "") if computed else None
            self._landed(key, site)
            if computed:
                self.queue.finished(key, kwargs.get("startstops"), site)
        elif finish == "no-worker" and self.queue.parked_in_no_worker(key):
            return
        elif finish == "forgotten":
            self.queue.forget(key)
            self.pinned.discard(key)
        if start == "processing" or start == "memory":
            # a thread slot or memory freed up somewhere: refill the site queues
            self.queue.schedule()

    def _landed(self, key: Any, site: str | None) -> None:
        """Count a task ``site`` computed; bind its dependents that became ready."""
        ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
        if ts is None:
            return
        if site:
            self.state.tasks_done[site] += 1
        for dts in ts.dependents:
            if dts.state == "waiting" and not dts.waiting_on and dts.key not in self.pinned:
                self.place(dts)

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """A new worker may open slots at its site."""
        self.queue.wake()

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        self.queue.wake()

    # -- placement -----------------------------------------------------------------------

    def place(self, ts: TaskState) -> None:
        """Bind a ready task to the site holding most of its input bytes."""
        by_site: dict[str, int] = defaultdict(int)
        for dts in ts.dependencies:
            size = max(dts.nbytes, 0) + 1  # empty results still vote
            for site in {self.state.worker_site.get(ws.address) for ws in dts.who_has or ()}:
                if site:
                    by_site[site] += size
        if not by_site:
            return
        # most bytes wins; ties go to the alphabetically first site, so that placement
        # is deterministic
        site = min(by_site, key=lambda s: (-by_site[s], s))
        restrictions = {
            r: v for r, v in (ts.resource_restrictions or {}).items()
            if not r.startswith(SITE_PREFIX)
        }
        restrictions[site_label(site)] = 1
        ts.resource_restrictions = restrictions
        ts.loose_restrictions = False

    def place_free_roots(self, new: list[TaskState]) -> None:
        """Send tasks without inputs (e.g. coordinates xarray embeds in a graph) to the
        site their dependents will most likely run at, instead of to any worker.

        Each new task's likely site is the majority of its inputs' sites, walking the
        graph in dask's order (inputs before the tasks that use them); a free root
        then follows the majority of its dependents.
        """
        free = [ts for ts in new if not ts.dependencies and not ts.resource_restrictions]
        if not free:
            return  # most graphs: skip the walk over every new task
        likely: dict[Any, str | None] = {}
        for ts in sorted(new, key=lambda ts: ts.priority):
            if (label := self.waiting_label(ts)) is not None:
                likely[ts.key] = label_site(label)
                continue
            if not ts.dependencies:
                continue
            votes: dict[str, int] = defaultdict(int)
            for dts in ts.dependencies:
                if site := likely.get(dts.key):
                    votes[site] += 1
                for ws in dts.who_has or ():
                    if site := self.state.worker_site.get(ws.address):
                        votes[site] += 1
            likely[ts.key] = min(votes, key=lambda s: (-votes[s], s)) if votes else None
        for ts in free:
            votes = defaultdict(int)
            for dependent in ts.dependents:
                if site := likely.get(dependent.key):
                    votes[site] += 1
            if votes:
                ts.resource_restrictions = {site_label(min(votes, key=lambda s: (-votes[s], s))): 1}
                ts.loose_restrictions = False
