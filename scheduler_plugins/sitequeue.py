"""The site queue: reads are admitted into each site in slots, fairly between users.

Restricted tasks bypass distributed's root-task queuing, so a big read would be sent to a
site's workers all at once and flood their memory. Reads are therefore parked (in
``no-worker``, restricted to :data:`HOLD`, a resource no worker has) and admitted per
label (a dataset's label: the sites holding it or a replica) in batches: up to
``saturation`` tasks per thread of the label's workers (while their memory is above
``memory-fraction``: one per thread and a round trip's worth of tasks), like
distributed's ``worker-saturation`` queuing but per site.

**Prefetch.** A slot that frees up is refilled one hub round trip later (the worker's
report travels to the hub, the admitted read back). Where that is longer than a read, a
thread with only ``saturation`` tasks would wait for the hub, once per refill — latency
would cost a round trip per admission. So each thread is given enough reads to run
``prefetch`` round trips' worth of them: ``1 + prefetch × RTT / task duration`` tasks per
thread (at least ``saturation``, at most ``max-saturation``), from the RTT the site's
workers measure on their heartbeats. On a LAN this is ``saturation``; at 80 ms and 20 ms
tasks, 9 per thread. The task duration is the shorter of two averages: the label's
admitted reads, and every task the site finished. The second counts because every task,
however short, is ``processing`` (holds a slot) for a round trip beyond its compute time
— sent to the worker, reported back — so a site running many small tasks per read (an
area mean, a correlation's pieces) holds ``threads × (1 + RTT / mean task time)`` tasks
just to keep its threads busy (Little's law); counted against the reads' depth alone,
they would fill every slot and the site would wait for the hub.

**Per user.** The slots are shared by the users who have reads parked at the label or
tasks processing on its workers (a task's user: :attr:`FederationState.task_owner`, kept
by the fair-share plugin). Each of them may fill ``slots / users`` (at least one) with its
own tasks even while others' tasks fill the rest, so another user's big graph — reads or
any other tasks it runs at the site — cannot hold a user's reads back; free slots beyond
that go to the waiting user with the fewest tasks there, one at a time. With one user this
is exactly the plain slot count; with several the site briefly runs up to twice its slots.

**When.** Admission runs on the next event-loop tick after anything that may free a slot
(a task leaving ``processing`` or ``memory``, a worker arriving or turning ``running``,
a read being parked), once per tick however many triggers; a slow poll
(``federation.site-queue.poll``) catches what no event reports (a worker's resources
changed, its memory fell).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, defaultdict
from time import time
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import parse_timedelta
from distributed.core import Status
from tornado.ioloop import PeriodicCallback

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler, WorkerState

    from .state import FederationState

#: A resource no worker advertises: parks a read in ``no-worker`` until admitted.
HOLD = "federation:held"

#: the user of a task whose owner the hub does not know (e.g. refused before recorded)
UNKNOWN = ""

#: weight of the newest task in a site's moving average of task time (an average over
#: roughly the last 1 / weight tasks: many small tasks and a few reads mix)
TASK_AVERAGE_WEIGHT = 1 / 32


def setting(key: str, given: Any = None) -> Any:
    """``given``, unless ``None``: then ``federation.site-queue.<key>`` from the hub's
    dask config (defaults: federation.yaml)."""
    return dask.config.get(f"federation.site-queue.{key}") if given is None else given


class SiteQueue:
    """Parked reads per label and user; admits them into their sites' free slots.

    Parameters
    ----------
    state:
        The hub's shared state (its ``task_owner`` says whose a task is).
    saturation:
        Tasks a label's workers may be processing per thread before no more reads are
        admitted (reads and other tasks alike). Above 1 so that a thread finds its next
        read already at the worker instead of waiting for the hub.
    memory_fraction:
        While the label's workers' process memory exceeds this fraction of their
        combined memory limit, each thread gets one task and a round trip's worth of
        reads (see :meth:`per_thread`), so the site reads no faster than it reduces.
    prefetch:
        Hub round trips of reads each thread keeps queued (see the module docstring);
        0: always ``saturation``. Default: ``federation.site-queue.prefetch``.
    max_saturation:
        Most tasks per thread, however long the round trip (bounds what a site holds
        queued when its reads are far shorter than the RTT).
        Default: ``federation.site-queue.max-saturation``.
    """

    def __init__(
        self,
        state: FederationState,
        saturation: float,
        memory_fraction: float,
        prefetch: float | None = None,
        max_saturation: float | None = None,
    ):
        self.state = state
        self.saturation = saturation
        self.memory_fraction = memory_fraction
        self.prefetch = float(setting("prefetch", prefetch))
        self.max_saturation = float(setting("max-saturation", max_saturation))
        #: key -> the label a parked read needs, until admitted or forgotten
        self.parked: dict[Any, str] = {}
        #: label -> user -> heap of (priority, key) of that user's parked reads
        self.queues: dict[str, dict[str, list]] = defaultdict(dict)
        #: key -> label of an admitted read, until it finishes or is forgotten
        self.admitted: dict[Any, str] = {}
        #: label -> moving average of its reads' compute time (seconds): the scheduler's
        #: per-prefix average is reset whenever a task runs long (heartbeats), which
        #: under load is most of the time
        self.read_seconds: dict[str, float] = {}
        #: site -> moving average of the compute time of every task it finished (seconds)
        self.task_seconds: dict[str, float] = {}
        self._scheduled = False
        #: label -> workers advertising it; built on demand, dropped whenever workers
        #: come, go or change status, and on every poll
        self._label_workers: dict[str, list[WorkerState]] = {}
        self.scheduler: Scheduler | None = None

    def start(self, scheduler: Scheduler) -> None:
        """Start the safety poll; admit when a worker's status changes."""
        self.scheduler = scheduler
        interval = parse_timedelta(setting("poll"))
        poll = PeriodicCallback(self.wake, interval * 1000)
        scheduler.periodic_callbacks["federation-site-queue"] = poll
        if scheduler.status == Status.running:
            poll.start()
        # a worker becomes usable when it turns ``running``, which plugins are not told
        status_changed = scheduler.stream_handlers["worker-status-change"]

        def on_status_change(*args: Any, **kwargs: Any) -> None:
            status_changed(*args, **kwargs)
            self.wake()

        scheduler.stream_handlers["worker-status-change"] = on_status_change

    # -- events ----------------------------------------------------------------------------

    def park(self, key: Any, label: str) -> None:
        """Hold ``key`` until a slot of ``label`` is free (its restriction: HOLD)."""
        self.parked[key] = label

    def parked_in_no_worker(self, key: Any) -> bool:
        """A parked read reached ``no-worker``: queue it under its user. False if not one."""
        label = self.parked.get(key)
        if label is None:
            return False
        user = self.state.task_owner.get(key, UNKNOWN)
        heapq.heappush(self.queues[label].setdefault(user, []),
                       (self.scheduler.tasks[key].priority, key))
        self.schedule()
        return True

    def forget(self, key: Any) -> None:
        self.parked.pop(key, None)
        self.admitted.pop(key, None)

    def finished(self, key: Any, startstops: list[dict] | None, site: str | None = None) -> None:
        """A task reached memory from ``processing`` at ``site``: fold its compute time
        (from the worker's ``startstops``) into the site's average; if it was an admitted
        read, into its label's average too."""
        seconds = sum(ss["stop"] - ss["start"] for ss in startstops or ()
                      if ss.get("action") == "compute")
        if site is not None and seconds > 0:
            old = self.task_seconds.get(site)
            self.task_seconds[site] = (
                seconds if old is None else old + TASK_AVERAGE_WEIGHT * (seconds - old)
            )
        label = self.admitted.pop(key, None)
        if label is None:
            return
        if seconds > 0:
            old = self.read_seconds.get(label)
            self.read_seconds[label] = seconds if old is None else (old + seconds) / 2

    def wake(self) -> None:
        """Workers may have changed: look again on the next tick."""
        self._label_workers.clear()
        self.schedule()

    def schedule(self) -> None:
        """Admit on the next tick (once for any number of calls before it)."""
        # transitions may not be started from inside a transition hook
        if self._scheduled or self.scheduler is None or not self.queues:
            return
        self._scheduled = True
        self.scheduler.loop.add_callback(self.admit)

    # -- admission -------------------------------------------------------------------------

    def _workers_with(self, label: str) -> list[WorkerState]:
        workers = self._label_workers.get(label)
        if workers is None:
            workers = self._label_workers[label] = [
                ws for ws in self.scheduler.workers.values() if label in ws.resources
            ]
        return workers

    def per_thread(self, label: str, workers: list[WorkerState], memory_ok: bool = True) -> float:
        """Tasks per thread to keep at ``workers`` (``label``'s): ``saturation``, or
        enough tasks to last ``prefetch`` round trips to the hub when those are longer
        than a task. Above the memory fraction (``memory_ok`` false): one per thread, plus
        one round trip's worth of tasks, so that a thread that finishes finds its next
        read at the worker (a queued read holds no memory until it runs) but no more.

        The RTT (seconds) is the longest of the workers' last heartbeat round trip (the
        hub's own delay in answering included, as it delays admissions too); a task's
        duration (seconds) the shorter of the moving averages of the label's admitted
        reads and of every task its workers' sites finished (see the module docstring).
        Until one has finished: ``saturation``, or 1 above the memory fraction.
        """
        floor = self.saturation if memory_ok else 1.0
        round_trips = self.prefetch if memory_ok else min(self.prefetch, 1.0)
        site_of = self.state.worker_site
        tasks = [self.task_seconds.get(site_of.get(ws.address, UNKNOWN)) for ws in workers]
        seconds = min(filter(None, [self.read_seconds.get(label), *tasks]), default=None)
        if not round_trips or not seconds:
            return floor
        rtt = max(
            ws.metrics.get("digests_total_since_heartbeat", {}).get("latency", 0.0)
            for ws in workers
        )
        depth = 1 + round_trips * rtt / seconds
        return max(floor, min(depth, self.max_saturation))

    def memory_ok(self, workers: list[WorkerState]) -> bool:
        """Whether ``workers``' process memory is within ``memory_fraction`` of their
        combined memory limit (true without a limit)."""
        limit = sum(ws.memory_limit or 0 for ws in workers)
        return not limit or (
            sum(ws.memory.process for ws in workers) <= self.memory_fraction * limit
        )

    def slots(self, label: str) -> tuple[int, Counter[str], bool]:
        """Among the running workers carrying ``label``: how many more tasks may start
        (see :meth:`per_thread`), the tasks each user is processing there (long-running
        ones, e.g. secede, not), and whether their memory allows more."""
        workers = [ws for ws in self._workers_with(label) if ws.status == Status.running]
        if not workers:
            return 0, Counter(), False  # site down: its reads wait
        owner = self.state.task_owner
        running: Counter[str] = Counter()
        for ws in workers:
            for ts in ws.processing:
                if ts not in ws.long_running:
                    running[owner.get(ts.key, UNKNOWN)] += 1
        processing = sum(running.values())
        threads = sum(ws.nthreads for ws in workers)
        memory_ok = self.memory_ok(workers)
        # above the memory fraction a thread keeps only what it runs and what covers a
        # round trip to the hub: reads then start as fast as threads free up, no faster
        free = max(math.ceil(self.per_thread(label, workers, memory_ok) * threads), 1)
        free -= processing
        if processing == 0:
            free = max(free, 1)  # never stall a computation
        return free, running, memory_ok

    def _pop(self, label: str, heap: list) -> Any:
        """The highest-priority read of ``heap`` still parked for ``label``, or None."""
        tasks = self.scheduler.tasks
        while heap:
            _, key = heapq.heappop(heap)
            ts = tasks.get(key)
            if ts is not None and self.parked.get(key) == label and ts.state == "no-worker":
                del self.parked[key]
                self.admitted[key] = label
                ts.resource_restrictions = {label: 1}
                return key
        return None  # the rest were released or forgotten while parked

    def _choose(self, label: str, users: dict[str, list]) -> dict[Any, str]:
        """Reads of ``label`` to admit now (emptied heaps are removed from ``users``).

        Each user with reads waiting may have ``share`` = slots / users-active-here
        tasks running there even if others fill every slot; free slots go one at a time
        to the waiting user with the fewest tasks there.
        """
        free, running, memory_ok = self.slots(label)
        active = len(running.keys() | users.keys())
        share = max((free + sum(running.values())) // active, 1) if memory_ok else 0
        admit: dict[Any, str] = {}
        while users:
            user = min(users, key=lambda u: (running[u], u))
            if free <= 0 and running[user] >= share:
                break  # every waiting user has its share (the others have more)
            key = self._pop(label, users[user])
            if not users[user]:
                del users[user]
            if key is not None:
                admit[key] = "processing"
                running[user] += 1
                free -= 1
        return admit

    def admit(self) -> None:
        """Admit parked reads into every label's free slots (and fair parts)."""
        self._scheduled = False
        for label in list(self.queues):
            users = self.queues[label]
            recommendations = self._choose(label, users) if users else {}
            if not users:
                del self.queues[label]
            if recommendations:
                # per label, so that the next label's slots see these tasks processing
                self.scheduler.transitions(
                    recommendations, stimulus_id=f"federation-admit-{time()}"
                )
