"""Data-aware routing: every task runs at the site that holds its data.

Three decisions, all expressed as Dask resource restrictions on ``TaskState`` so that
the scheduler's own placement, work stealing and retries respect them:

1. **Site-bound calls.** A task whose run_spec calls :func:`federation.read.read_chunk`
   (also inside fused subgraphs) may only run on workers labelled
   ``dataset:<site>/<name>``; one calling a shared method or storing a result only on
   workers labelled ``site:<site>`` (see :mod:`federation.graph`).
2. **Downstream tasks.** When a task becomes ready, it is bound to the site holding
   most of its input bytes (``site:<site>``), measured from the real ``nbytes`` of its
   inputs; so per-chunk and per-site reductions stay at the site and only reduced
   results cross borders.
3. **The site queue.** Restricted tasks bypass the scheduler's root-task queuing, so
   a big read would be sent to a site's workers all at once and flood their memory.
   Reads are therefore parked (in ``no-worker``, restricted to a label no worker has)
   and admitted per site, in batches, up to ``saturation`` tasks per thread of the
   site and while the site's memory allows, like distributed's own
   ``worker-saturation`` queuing but per site.

Nothing is ever unrestricted once bound, so a site with no live workers makes its
tasks wait instead of sending them elsewhere.

This module alone writes task restrictions: the other plugins bind, pin, hold or confine
tasks through :class:`RoutingPlugin`'s methods, and ask it which label a task waits for.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from time import time
from typing import TYPE_CHECKING, Any

import dask
from distributed.core import Status
from tornado.ioloop import PeriodicCallback

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
from .state import FederationState

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, TaskState, WorkerState

#: A resource no worker advertises: parks a read in ``no-worker`` until admitted.
HOLD = "federation:held"


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
        if saturation is None:
            saturation = dask.config.get("federation.site-queue.saturation")
        self.saturation = float(saturation)
        if memory_fraction is None:
            memory_fraction = dask.config.get("federation.site-queue.memory-fraction")
        self.memory_fraction = float(memory_fraction)
        if site_queue is None:
            site_queue = dask.config.get("federation.site-queue.enabled")
        self.site_queue = bool(site_queue)
        #: keys of site-bound tasks (reads, method calls, result writes): never re-placed
        self.pinned: set[Any] = set()
        #: key -> the label a parked read needs, until admitted or forgotten
        self.parked: dict[Any, str] = {}
        #: label -> heap of (priority, key) of parked reads waiting in ``no-worker``; a
        #: dataset's label may be served by several sites (replicas)
        self.queues: dict[str, list] = defaultdict(list)
        self._admit_scheduled = False
        #: label -> workers advertising it; built on demand, dropped whenever workers
        #: come or go (and on every poll, in case a worker's resources changed)
        self._label_workers: dict[str, list[WorkerState]] = {}
        self.scheduler: Scheduler | None = None

    async def start(self, scheduler: Scheduler) -> None:
        """Keep a reference and poll the site queues.

        Admission is driven by transitions and new workers, but a worker only becomes
        usable when its status turns ``running``, which plugins are not told about;
        the poll catches that and any other missed wake-up.
        """
        self.scheduler = scheduler
        poll = PeriodicCallback(self._poll, 200)
        scheduler.periodic_callbacks["federation-site-queue"] = poll
        if scheduler.status == Status.running:
            poll.start()

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
            self.parked[ts.key] = label
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
            self._landed(key, start, kwargs.get("worker"))
        elif finish == "no-worker" and (label := self.parked.get(key)) is not None:
            heapq.heappush(self.queues[label], (self.scheduler.tasks[key].priority, key))
            self._schedule_admit()
            return
        elif finish == "forgotten":
            self.parked.pop(key, None)
            self.pinned.discard(key)
        if start == "processing" or start == "memory":
            # a thread slot or memory freed up somewhere: refill the site queues
            self._schedule_admit()

    def _landed(self, key: Any, start: str, worker: str | None) -> None:
        """Count a finished task for its site; bind its dependents that became ready."""
        ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
        if ts is None:
            return
        if start == "processing" and worker and (site := self.state.worker_site.get(worker)):
            self.state.tasks_done[site] += 1
        for dts in ts.dependents:
            if dts.state == "waiting" and not dts.waiting_on and dts.key not in self.pinned:
                self.place(dts)

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """A new worker may open slots at its site."""
        self._forget_workers()
        self._schedule_admit()

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        self._forget_workers()

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

    # -- the site queue ------------------------------------------------------------------

    def _poll(self) -> None:
        self._forget_workers()
        self._schedule_admit()

    def _forget_workers(self) -> None:
        self._label_workers.clear()

    def _workers_with(self, label: str) -> list[WorkerState]:
        workers = self._label_workers.get(label)
        if workers is None:
            workers = self._label_workers[label] = [
                ws for ws in self.scheduler.workers.values() if label in ws.resources
            ]
        return workers

    def _schedule_admit(self) -> None:
        # Transitions may not be started from inside a transition hook; admit on the
        # next tick of the event loop, once for any number of triggers.
        if self._admit_scheduled or self.scheduler is None or not any(self.queues.values()):
            return
        self._admit_scheduled = True
        self.scheduler.loop.add_callback(self._admit)

    def _slots(self, label: str) -> int:
        """Reads that may start now among the workers carrying ``label``."""
        workers = [ws for ws in self._workers_with(label) if ws.status == Status.running]
        if not workers:
            return 0  # site down: its reads wait
        processing = sum(len(ws.processing) - len(ws.long_running) for ws in workers)
        slots = max(math.ceil(self.saturation * sum(ws.nthreads for ws in workers)), 1)
        slots -= processing
        limit = sum(ws.memory_limit or 0 for ws in workers)
        if limit and sum(ws.memory.process for ws in workers) > self.memory_fraction * limit:
            slots = 0
        if processing == 0:
            slots = max(slots, 1)  # never stall a computation
        return slots

    def _admit(self) -> None:
        """Admit the highest-priority parked reads into every site with free slots."""
        self._admit_scheduled = False
        scheduler = self.scheduler
        for label, queue in self.queues.items():
            slots = self._slots(label) if queue else 0
            recommendations: dict[Any, str] = {}
            while queue and slots > 0:
                _, key = heapq.heappop(queue)
                ts = scheduler.tasks.get(key)
                if ts is None or self.parked.get(key) != label or ts.state != "no-worker":
                    continue  # released or forgotten while parked
                del self.parked[key]
                ts.resource_restrictions = {label: 1}
                recommendations[key] = "processing"
                slots -= 1
            if recommendations:
                # per label, so that the next label's slots see these tasks processing
                scheduler.transitions(recommendations, stimulus_id=f"federation-admit-{time()}")
