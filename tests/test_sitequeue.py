"""The site queue admits reads per user: another user's tasks filling a site's slots do not
hold a user's reads back (issue 19), and prefetches a round trip's worth of reads into a
distant site (issue 17). A real in-process hub (all plugins) and worker."""

from __future__ import annotations

import asyncio
import time

import dask
from distributed import Client, Event, Scheduler, SchedulerPlugin, Worker

from federation.labels import LABEL_CAPACITY
from scheduler_plugins.sitequeue import HOLD

#: a label the site's worker advertises (not a site label: no site registers here)
LABEL = "lab-data"


def _slow(x: int) -> int:
    time.sleep(0.02)
    return x + 1


class _ReadsOfLab(SchedulerPlugin):
    """Parks tasks named ``read-*`` in the site queue for ``LABEL``, as the routing plugin
    parks reads, and records the order tasks finish in."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.queue = scheduler.plugins["federation-routing"].queue
        self.order: list[str] = []

    def update_graph(self, scheduler: Scheduler, *, tasks: list, **kwargs) -> None:
        for key in tasks:
            if key.startswith("read-"):
                self.queue.park(key, LABEL)
                scheduler.tasks[key].resource_restrictions = {HOLD: 1}

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "memory":
            self.order.append(key)


async def _reads_behind_a_big_graph(big: int) -> tuple[int, list[int]]:
    """User A fills the site with ``big`` tasks, then user B reads 3 chunks there;
    returns how many of A's tasks finished before B's reads were done, and B's results."""
    async with Scheduler(port=0, dashboard_address=":0", preload=["scheduler_plugins"]) as s:
        reads = _ReadsOfLab(s)
        s.add_plugin(reads, name="test-reads")
        async with Worker(s.address, nthreads=1, resources={LABEL: LABEL_CAPACITY}), \
                Client(s.address, asynchronous=True) as a, \
                Client(s.address, asynchronous=True) as b:
            futures = a.map(_slow, range(big), key=[f"big-{i}" for i in range(big)],
                            resources={LABEL: 1})
            while not any(k.startswith("big") for k in reads.order):
                await asyncio.sleep(0.05)
            small = b.map(_slow, range(3), key=[f"read-{i}" for i in range(3)])
            results = await b.gather(small)
            done = sum(1 for k in reads.order if k.startswith("big"))
            assert await a.gather(futures) == list(range(1, big + 1))
            return done, results


def test_a_users_reads_are_admitted_while_another_user_fills_the_site():
    done, results = asyncio.run(_reads_behind_a_big_graph(150))
    assert results == [1, 2, 3]
    # counting all tasks in flight, the reads waited for (nearly) all 150
    assert done < 60, done


def _blocked(event_name: str) -> int:
    Event(event_name).wait()
    return 0


async def _admitted_beside_a_busy_task(prefetch: float) -> int:
    """The hub answers heartbeats 300 ms late (the worker measures a ≥ 300 ms round
    trip); 4 reads of 20 ms run (the queue learns their duration); then, while a task
    holds the worker's one thread, 8 more reads arrive: how many the queue admits."""
    config = {"federation.site-queue.saturation": 2, "federation.site-queue.prefetch": prefetch,
              "federation.site-queue.max-saturation": 6}
    with dask.config.set(config):
        async with Scheduler(port=0, dashboard_address=":0",
                             preload=["scheduler_plugins"]) as s:
            reads = _ReadsOfLab(s)
            s.add_plugin(reads, name="test-reads")
            answer = s.handlers["heartbeat_worker"]

            async def late(**msg):
                await asyncio.sleep(0.3)
                return answer(**msg)

            s.handlers["heartbeat_worker"] = late
            async with Worker(s.address, nthreads=1, resources={LABEL: LABEL_CAPACITY}), \
                    Client(s.address, asynchronous=True) as c:
                [ws] = s.workers.values()
                while ws.metrics.get("digests_total_since_heartbeat", {}).get(
                        "latency", 0) < 0.3:
                    await asyncio.sleep(0.05)
                warm = c.map(_slow, range(4), key=[f"read-warm-{i}" for i in range(4)])
                assert await c.gather(warm) == [1, 2, 3, 4]
                busy = c.submit(_blocked, "release", key="busy", resources={LABEL: 1})
                while "busy" not in {ts.key for ts in ws.processing}:
                    await asyncio.sleep(0.02)
                later = c.map(_slow, range(8), key=[f"read-{i}" for i in range(8)])
                while not all(f.key in s.tasks for f in later):
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)  # admission is on the next tick: let it settle
                admitted = sum(s.tasks[f.key].state == "processing" for f in later)
                await Event("release", client=c).set()
                assert await c.gather(later) == list(range(1, 9)) and await busy == 0
                return admitted


def test_a_distant_site_gets_a_round_trip_of_reads_ahead():
    """1 + 2 × RTT/read ≥ 1 + 2 × 300/20 = 31 tasks per thread (7 even if a loaded machine
    stretched the reads to 100 ms), capped at 6: five reads go to the worker beside the
    busy task; without prefetch (saturation 2) one."""
    assert asyncio.run(_admitted_beside_a_busy_task(prefetch=2)) == 5
    assert asyncio.run(_admitted_beside_a_busy_task(prefetch=0)) == 1
