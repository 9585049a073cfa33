"""The site queue admits reads per user: another user's tasks filling a site's slots do not
hold a user's reads back (issue 19). A real in-process hub (all plugins) and worker."""

from __future__ import annotations

import asyncio
import time

from distributed import Client, Scheduler, SchedulerPlugin, Worker

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
