"""The rebalance/replicate wrappers: Dask's semantics where no site is involved, site
borders where one is. In-process scheduler and workers (``gen_cluster``), milliseconds each."""

from __future__ import annotations

import pytest

from .hub import hub_cluster


@hub_cluster(None, None)
async def test_plain_workers_follow_dask(c, s, a, b):
    [x] = await c.scatter([b"x" * 1000], workers=[a.address])
    await c.replicate([x], workers=[b.address])  # as Dask: copies onto b
    assert s.tasks[x.key].who_has == {s.workers[a.address], s.workers[b.address]}
    with pytest.raises(ValueError, match="delete data"):
        await c.replicate([x], workers=[])
    with pytest.raises(KeyError):
        await c.rebalance(workers=["tcp://127.0.0.1:1"])
    # a host name (no port) names every worker on that host, as in Dask
    [y] = await c.scatter([b"y" * 1000], workers=[a.address])
    await c.replicate([y], workers=["127.0.0.1"])
    assert len(s.tasks[y.key].who_has) == 2
    # rebalance(workers=[]) considers no worker: nothing moves, no error
    assert (await s.handlers["rebalance"](workers=[])) == {"status": "OK"}


@hub_cluster("awi", "awi", "geomar")
async def test_replicate_stays_inside_the_site(c, s, a1, a2, g):
    [x] = await c.scatter([b"raw" * 1000], workers=[a1.address])
    await c.replicate([x])  # all workers asked for: only awi's may hold awi's data
    assert {ws.address for ws in s.tasks[x.key].who_has} == {a1.address, a2.address}
    assert x.key not in g.data
    with pytest.raises(ValueError, match="delete data"):
        await c.replicate([x], workers=[])
    with pytest.raises(KeyError):
        await c.replicate([x], workers=["tcp://127.0.0.1:1"])


@hub_cluster("awi", "awi", "geomar")
async def test_rebalance_stays_inside_the_site(c, s, a1, a2, g):
    futures = await c.scatter([bytes(100_000) + bytes([i]) for i in range(20)],
                              workers=[a1.address])
    await c.rebalance(futures)
    assert all(f.key not in g.data for f in futures)
    with pytest.raises(KeyError):
        await c.rebalance(workers=["tcp://127.0.0.1:1"])
    assert (await s.handlers["rebalance"](workers=[])) == {"status": "OK"}
