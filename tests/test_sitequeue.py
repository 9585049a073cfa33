"""The site queue admits reads per user: another user's tasks filling a site's slots do not
hold a user's reads back (issue 19), and prefetches a round trip's worth of reads into a
distant site (issue 17). A real in-process hub (all plugins) and worker."""

from __future__ import annotations

import asyncio
import time

import dask
from distributed import Client, Event, Scheduler, SchedulerPlugin, Worker

from federation.labels import LABEL_CAPACITY
from federation.protocol import site_label
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


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def _admitted_beside_busy_tasks(prefetch: float, read_s: float = 0.02, busy: int = 1,
                                      small: int = 0, max_saturation: float = 6) -> int:
    """The hub answers heartbeats 300 ms late (the worker, of site ``lab``, measures a
    ≥ 300 ms round trip); 4 reads of ``read_s`` run (the queue learns their duration),
    then ``small`` tiny tasks (the site's average task time falls); then, while ``busy``
    tasks are processing at the worker's one thread (blocked: like tasks in flight to or
    from a distant hub, they hold slots but no thread), 12 more reads arrive: how many
    the queue admits."""
    config = {"federation.site-queue.saturation": 2, "federation.site-queue.prefetch": prefetch,
              "federation.site-queue.max-saturation": max_saturation}
    with dask.config.set(config):
        async with Scheduler(port=0, dashboard_address=":0",
                             preload=["scheduler_plugins"]) as s:
            s.plugins["federation-catalog"].state.register("lab", "test-lab", "inproc://test", [])
            reads = _ReadsOfLab(s)
            s.add_plugin(reads, name="test-reads")
            answer = s.handlers["heartbeat_worker"]

            async def late(**msg):
                await asyncio.sleep(0.3)
                return answer(**msg)

            s.handlers["heartbeat_worker"] = late
            resources = {LABEL: LABEL_CAPACITY, site_label("lab"): LABEL_CAPACITY}
            async with Worker(s.address, nthreads=1, resources=resources), \
                    Client(s.address, asynchronous=True) as c:
                [ws] = s.workers.values()
                while ws.metrics.get("digests_total_since_heartbeat", {}).get(
                        "latency", 0) < 0.3:
                    await asyncio.sleep(0.05)
                warm = c.map(_sleep, [read_s] * 4, key=[f"read-warm-{i}" for i in range(4)])
                assert await c.gather(warm) == [read_s] * 4
                tiny = c.map(_sleep, [0] * small, key=[f"tiny-{i}" for i in range(small)],
                             resources={LABEL: 1})
                assert await c.gather(tiny) == [0] * small
                blocked = c.map(_blocked, ["release"] * busy,
                                key=[f"busy-{i}" for i in range(busy)], resources={LABEL: 1})
                while len(ws.processing) < busy:
                    await asyncio.sleep(0.02)
                later = c.map(_slow, range(12), key=[f"read-{i}" for i in range(12)])
                while not all(f.key in s.tasks for f in later):
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)  # admission is on the next tick: let it settle
                admitted = sum(s.tasks[f.key].state == "processing" for f in later)
                await Event("release", client=c).set()
                assert await c.gather(later) == list(range(1, 13))
                assert await c.gather(blocked) == [0] * busy
                return admitted


def test_a_distant_site_gets_a_round_trip_of_reads_ahead():
    """1 + 2 × RTT/read ≥ 1 + 2 × 300/20 = 31 tasks per thread (7 even if a loaded machine
    stretched the reads to 100 ms), capped at 6: five reads go to the worker beside the
    busy task; without prefetch (saturation 2) one."""
    assert asyncio.run(_admitted_beside_busy_tasks(prefetch=2)) == 5
    assert asyncio.run(_admitted_beside_busy_tasks(prefetch=0)) == 1


def test_a_distant_site_running_many_small_tasks_still_gets_reads():
    """Reads of 200 ms at 300 ms RTT: 1 + 2 × 300/200 = 4 (at most 5) tasks per thread, so
    with 6 tasks processing no read is admitted. Once the site has run 100 tiny tasks,
    its average task is short (~0.2 s × (31/32)^100 ≈ 8 ms): every task it runs holds a
    slot for a round trip, so it keeps up to max-saturation (16) per thread, and 10 reads
    go to the worker beside the 6 (issue 17: a correlation's many small pieces left a
    site idle at 80 ms, its slots full of tasks in flight)."""
    assert asyncio.run(_admitted_beside_busy_tasks(2, read_s=0.2, busy=6, max_saturation=16)) == 0
    assert asyncio.run(_admitted_beside_busy_tasks(
        2, read_s=0.2, busy=6, small=100, max_saturation=16)) == 10
