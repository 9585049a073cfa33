"""A site worker's peer check (``federation.peers``) against a real in-process hub: a
worker that joined after the member list was last read is a peer at once; a stranger is
still refused."""

from __future__ import annotations

from distributed import Worker

from federation.labels import worker_resources
from federation.peers import PeersPlugin

from .hub import hub_cluster


@hub_cluster("awi", "geomar")
async def test_a_worker_that_just_joined_is_a_peer_a_stranger_is_not(c, s, awi, geomar):
    peers = PeersPlugin("awi")
    await awi.plugin_add(peers)
    await peers.refresh()  # the periodic refresh, just before the new worker joins
    assert geomar.address in peers.members

    async with Worker(s.address, nthreads=1, resources=worker_resources("geomar", [])) as new:
        await c.wait_for_workers(3)
        # the scheduler names it (a compute-task's who_has) right after it joined: the
        # list read a moment ago lacks it, so the check asks the hub again before refusing
        assert new.address not in peers.members
        assert await peers.check({new.address, geomar.address}) is None
        assert new.address in peers.members

        refusal = await peers.check({"tcp://127.0.0.1:1"})
        assert isinstance(refusal, PermissionError)
        assert "tcp://127.0.0.1:1 is not one (federation.peers-only)" in str(refusal)
