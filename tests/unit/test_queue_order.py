"""The one place a hub orders plain Dask tasks differently from Dask (found by running
distributed's test_scheduler.py against a hub: ``test_queued_release_multiple_workers``):
fair shares interleave two users' graphs in the scheduler's queue, where Dask runs the older
graph first. Without TLS each client is its own user. ``federation.fair-share.enabled:
false`` gives Dask's order back."""

from __future__ import annotations

from distributed import Client, Event

from ..wait import async_wait
from .hub import hub_cluster

SATURATION = {"distributed.scheduler.worker-saturation": 1.0}


async def _queued(c, s) -> list[str]:
    """Five blocked tasks from ``c``, then five from a second client: the queue's order."""
    async with Client(s.address, asynchronous=True) as c2:
        event = Event("go", client=c2)
        first = c.map(lambda i: event.wait(), range(5), key=[f"first-{i}" for i in range(5)])
        await async_wait(lambda: s.queued, 10, "the first graph queued")
        second = c2.map(lambda i: event.wait(), range(5), key=[f"second-{i}" for i in range(5)])
        await async_wait(lambda: second[0].key in s.tasks, 10, "the second graph at the hub")
        order = [ts.key for ts in s.queued.sorted()]
        await event.set()
        await c2.gather(second)
        await c.gather(first)
        return order


@hub_cluster(None, config=SATURATION)
async def test_two_clients_graphs_interleave_in_the_queue(c, s, w):
    """One for one, from where the first graph stands (its first task is running)."""
    assert await _queued(c, s) == ["second-0", "first-1", "second-1", "first-2", "second-2",
                                   "first-3", "second-3", "first-4", "second-4"]


@hub_cluster(None, config={**SATURATION, "federation.fair-share.enabled": False})
async def test_without_fair_shares_the_older_graph_goes_first_as_in_dask(c, s, w):
    assert await _queued(c, s) == [f"first-{i}" for i in range(1, 5)] + [
        f"second-{i}" for i in range(5)]
