"""The Dask handlers the hub wraps (scatter, gather, the admin operations, client and worker
registration) keep Dask's arguments, results and errors where no site label is involved.
distributed's own test modules check the same at scale: benchmarks/dask_conformance.py."""

from __future__ import annotations

import pytest
from distributed import Client
from distributed.utils import has_keyword

from .hub import hub_cluster


@hub_cluster(None, None)
async def test_scatter_and_gather_follow_dask(c, s, a, b):
    [x] = await c.scatter([1], workers=[a.address])
    assert {ws.address for ws in s.tasks[x.key].who_has} == {a.address}
    [y] = await c.scatter([2], broadcast=True)
    assert {ws.address for ws in s.tasks[y.key].who_has} == {a.address, b.address}
    assert await c.gather([x, y]) == [1, 2]
    # a key the scheduler does not know: Dask's answer, not a federation error
    reply = await s.handlers["gather"](keys=["no-such-key"])
    assert reply["status"] == "error" and "no-such-key" in reply["keys"]
    with pytest.raises(TypeError):  # an argument Dask's gather does not take
        await s.handlers["gather"](keys=[x.key], no_such_argument=1)


@hub_cluster(None, None)
async def test_admin_operations_follow_dask_on_a_hub_without_identities(c, s, a, b):
    """Without TLS nobody has an identity, so the admin guard lets Dask answer."""
    assert await c.run_on_scheduler(lambda: 42) == 42
    assert await c.run(lambda: 1) == {a.address: 1, b.address: 1}
    retired = await c.retire_workers([b.address], close_workers=False)
    assert set(retired) == {b.address} and b.address not in s.workers
    with pytest.raises(KeyError):  # as Dask: unknown worker in set_restrictions
        await c.scheduler.set_restrictions(worker={"no-such-key": [a.address]})


def _inc(x: int) -> int:
    return x + 1


@hub_cluster(None, None)
async def test_wrapped_handlers_keep_the_callers_serializers(c, s, a, b):
    """Found by distributed's test_turn_off_pickle: the admin and dialling guards around
    ``broadcast`` hid its ``serializers`` parameter, so a client without pickle got pickled
    replies to ``client.run``."""
    assert has_keyword(s.handlers["broadcast"], "serializers")
    async with Client(s.address, asynchronous=True, serializers=["dask", "msgpack"]) as c2:
        assert await c2.run(lambda: 1) == {a.address: 1, b.address: 1}
        with pytest.raises(TypeError):  # as in Dask: a pickled-only result cannot come back
            await c2.run(lambda: _inc)
