"""In-process hubs for unit tests: a scheduler with the federation plugins, registered
sites and labelled workers in one process (distributed's ``gen_cluster``)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from distributed import Worker
from distributed.utils_test import gen_cluster

from federation.labels import worker_resources
from scheduler_plugins import CatalogPlugin


def hub_cluster(*workers: str | None, timeout: int = 30) -> Callable:
    """Decorate ``async def test(c, s, *workers)``: one worker per entry of ``workers``,
    labelled with that site (``None``: an unlabelled worker); each site is registered
    with the hub before its workers join, as ``dask federation site`` does."""

    def decorate(fn: Callable[..., Awaitable[None]]) -> Callable:
        @gen_cluster(client=True, nthreads=[], timeout=timeout,
                     scheduler_kwargs={"preload": ["scheduler_plugins"]})
        async def test(c, s):  # named after fn below; not wrapped, so pytest sees no fixtures
            state = s.plugins[CatalogPlugin.name].state
            for site in {w for w in workers if w is not None}:
                state.register(site, f"test-{site}", "inproc://test", [])
            async with contextlib.AsyncExitStack() as stack:
                started = [
                    await stack.enter_async_context(Worker(
                        s.address, nthreads=1,
                        resources=worker_resources(site, []) if site else None,
                    ))
                    for site in workers
                ]
                await c.wait_for_workers(len(started))
                await fn(c, s, *started)

        test.__name__, test.__doc__ = fn.__name__, fn.__doc__
        return test

    return decorate
