"""Routing, the site queue, outages and egress refusals on an in-process hub: a real
scheduler with the federation plugins and labelled workers in one process (milliseconds
each, instead of subprocess federations). Read tasks call the real ``read_chunk``; no
worker holds data, so a read fails where it runs (``DatasetNotHere``) — the tests check
where that is, and what the hub decided before."""

from __future__ import annotations

import asyncio
from time import monotonic

import numpy as np
import pytest
from dask import delayed
from distributed import Event, wait

from federation import PolicyError, SiteUnavailable
from federation.sitecalls import read_chunk

from ..wait import async_wait
from .hub import dataset, hub_cluster

INDEX = (slice(0, 1),)


def _read(c, ref: str, key: str, **kwargs):
    return c.submit(read_chunk, ref, "v", INDEX, key=key, **kwargs)


def _blocked(x, event_name: str):
    Event(event_name).wait()
    return x


@hub_cluster("awi", "geomar")
async def test_a_task_runs_at_the_site_holding_most_of_its_input_bytes(c, s, a, g):
    for big_at, small_at, site in ((a, g, "awi"), (g, a, "geomar")):
        [big] = await c.scatter([np.zeros(100_000)], workers=[big_at.address], hash=False)
        [small] = await c.scatter([np.zeros(10)], workers=[small_at.address], hash=False)
        total = c.submit(lambda x, y: float(x.sum() + y.sum()), small, big)
        assert await total == 0.0
        ts = s.tasks[total.key]
        assert ts.resource_restrictions == {f"site:{site}": 1}
        assert {ws.address for ws in ts.who_has} == {big_at.address}


@hub_cluster("awi/sst", "awi", "geomar", None)
async def test_reads_run_only_on_workers_holding_the_dataset(c, s, a_sst, a, g, plain):
    # the user pins reads elsewhere: the hub overrides it
    reads = [_read(c, "awi/sst", f"read-{i}", workers=[g.address], allow_other_workers=False)
             for i in range(4)]
    await wait(reads)
    for future in reads:
        assert future.status == "error"
        ts = s.tasks[future.key]
        assert ts.resource_restrictions == {"dataset:awi/sst": 1}
        assert ts.erred_on == {a_sst.address}  # the one worker labelled with the dataset
    with pytest.raises(Exception, match="dataset 'awi/sst' is not held"):
        await reads[0]


@hub_cluster("awi/sst", config={"federation.site-queue.saturation": 2})
async def test_the_site_queue_admits_reads_only_while_the_site_has_slots(c, s, a):
    """One thread, saturation 2: with one task running, one read is admitted; the others
    wait at the hub (in plain Dask all would be sent to the worker at once)."""
    event = Event("release")
    [x] = await c.scatter([1], workers=[a.address])
    busy = c.submit(_blocked, x, "release", key="busy")
    await async_wait(lambda: s.tasks.get("busy") and s.tasks["busy"].state == "processing",
                     10, "the busy task running")
    reads = [_read(c, "awi/sst", f"read-{i}") for i in range(5)]
    await async_wait(lambda: all(f.key in s.tasks for f in reads), 10, "the reads at the hub")

    def states() -> list[str]:
        return sorted(s.tasks[f.key].state for f in reads)

    await async_wait(lambda: states() == ["no-worker"] * 4 + ["processing"], 10,
                     "one read admitted")
    await event.set()
    await wait([busy, *reads])
    assert all(s.tasks[f.key].erred_on == {a.address} for f in reads)  # all ran, at awi


@hub_cluster("awi/sst", "awi/sst", config={"federation.site-queue.memory-fraction": 1e-9,
                                           "federation.site-queue.saturation": 2})
async def test_above_its_memory_fraction_a_site_gets_a_read_per_idle_thread(c, s, a, b):
    """Site memory above ``memory-fraction`` (here always): a task per thread, plus a
    round trip's worth of tasks once a task's duration is known (here none finishes, so
    none). With a's thread busy, b's thread runs every read, one at a time; with both
    busy, reads wait at the hub (saturation 2 would queue two at the workers)."""
    busy = []

    async def block(worker, name: str) -> None:
        [x] = await c.scatter([1], workers=[worker.address])
        busy.append(c.submit(_blocked, x, name, key=name, workers=[worker.address]))
        await async_wait(lambda: s.tasks.get(name) and s.tasks[name].state == "processing",
                         10, f"{name} running")

    await block(a, "busy-a")
    reads = [_read(c, "awi/sst", f"read-{i}") for i in range(4)]
    await wait(reads)  # all ran at b's free thread (the reads fail where they run)
    assert all(s.tasks[f.key].erred_on == {b.address} for f in reads)
    assert s.tasks["busy-a"].state == "processing"

    await block(b, "busy-b")
    later = [_read(c, "awi/sst", f"later-{i}") for i in range(3)]
    await async_wait(lambda: all(f.key in s.tasks for f in later), 10, "the reads at the hub")
    await asyncio.sleep(0.5)  # a negative check: no thread is free, so none is admitted
    assert {s.tasks[f.key].state for f in later} == {"no-worker"}
    await Event("busy-a").set()
    await Event("busy-b").set()
    await wait([*busy, *later])
    assert all(f.status == "error" for f in later)  # they ran (at the site) once freed


@hub_cluster("awi/sst", "geomar", config={"federation.site-outage-timeout": "2s"})
async def test_reads_of_a_site_without_workers_wait_then_fail_naming_it(c, s, a, g):
    """awi's last worker leaves: its reads wait (never run elsewhere), the hub keeps
    serving and shows the site without workers, and after the outage timeout the reads
    fail naming the site."""
    await a.close()
    await async_wait(lambda: a.address not in s.workers, 10, "awi's worker gone")
    read = _read(c, "awi/sst", "read-lonely")
    started = monotonic()
    await async_wait(lambda: read.key in s.tasks and s.tasks[read.key].state == "no-worker",
                     10, "the read waiting")
    await asyncio.sleep(0.5)  # a negative check: still waiting a while later
    assert read.status == "pending"
    assert {ts.state for ts in s.tasks.values()} >= {"no-worker"}
    assert "processing" not in {ts.state for ts in s.tasks.values()}
    assert (await c.scheduler.federation_sites())["awi"]["status"] in ("offline", "no workers")
    with pytest.raises(SiteUnavailable, match="site 'awi' .* unavailable for more than 2 s"):
        await read
    assert 1.5 < monotonic() - started < 30
    assert not s.tasks[read.key].erred_on  # it never ran anywhere
    assert (await c.scheduler.federation_sites())["geomar"]["status"] == "connected"


@hub_cluster("awi/sst", "geomar/chl",
             catalog=[dataset("awi/sst", egress="none"), dataset("geomar/chl", egress="none")])
async def test_egress_none_binds_derived_tasks_and_refuses_mixing_two_sites(c, s, a, g):
    """A task derived from awi's 'none' data is bound to awi, however many bytes wait at
    geomar; a graph combining two sites' 'none' data is refused on arrival, nothing runs."""
    [big] = await c.scatter([np.zeros(100_000)], workers=[g.address])
    sst = delayed(read_chunk)("awi/sst", "v", INDEX, dask_key_name="sst-0")
    derived = c.compute(delayed(lambda x, y: x)(sst, big, dask_key_name="derived"))
    await wait([derived])
    assert s.tasks["derived"].resource_restrictions == {"site:awi": 1}
    assert s.tasks["sst-0"].erred_on == {a.address}

    sst = delayed(read_chunk)("awi/sst", "v", INDEX, dask_key_name="sst-1")
    chl = delayed(read_chunk)("geomar/chl", "v", INDEX, dask_key_name="chl-1")
    mixed = c.compute(delayed(lambda x, y: x + y)(sst, chl, dask_key_name="mixed"))
    with pytest.raises(PolicyError, match=r"egress policy 'none'.*'mixed' combines"):
        await mixed
    assert not any(s.tasks[k].erred_on for k in ("sst-1", "chl-1", "mixed"))
