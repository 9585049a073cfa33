"""In-process hubs for unit tests: a scheduler with the federation plugins, registered
sites and labelled workers in one process (distributed's ``gen_cluster``)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from distributed import Worker
from distributed.utils_test import gen_cluster

from federation.catalog import DatasetInfo
from federation.labels import worker_resources
from federation.protocol import site_of_ref
from federation.sitecontext import SiteContext, SiteWorkerPlugin
from federation.sources import Source
from scheduler_plugins import CatalogPlugin


def dataset(ref: str, **fields: Any) -> DatasetInfo:
    """A catalog entry for ``site/name`` without variables (``fields``: egress …)."""
    site, name = ref.split("/", 1)
    return DatasetInfo(site=site, name=name, description="", variables={}, attrs={},
                       version="test", **fields)


def hub_cluster(*workers: str | None, catalog: list[DatasetInfo] = (),
                config: dict[str, Any] | None = None, timeout: int = 30,
                sources: dict[str, Source] | None = None,
                results_dirs: dict[str, str] | None = None,
                zarr: bool = False) -> Callable:
    """Decorate ``async def test(c, s, *workers)``: one worker (1 thread) per entry of
    ``workers``: ``"site"`` (labelled with that site), ``"site/name"`` (also holding
    dataset ``name``) or ``None`` (an unlabelled worker). Each site is registered with the
    hub, with its entries of ``catalog`` (plain entries for datasets its workers hold
    that ``catalog`` lacks), before its workers join, as ``dask federation
    site`` does. ``config``: dask config for the hub (e.g. ``federation.*`` keys).

    Each labelled worker gets its own site context (a ``SiteWorkerPlugin``, as a site's
    workers do) with the hub's capability key for its site, session ``test-<site>``,
    the ``sources`` (``site/name`` -> Source) of its site and ``results_dirs[site]``;
    without sources, a read fails where it runs (``DatasetNotHere``). ``zarr``: the test
    reads or writes zarr stores, whose process-wide I/O thread pool grows on first use;
    those threads are not the test's leak, so distributed's thread check is off."""

    def decorate(fn: Callable[..., Awaitable[None]]) -> Callable:
        @gen_cluster(client=True, nthreads=[], timeout=timeout, config=config or {},
                     scheduler_kwargs={"preload": ["scheduler_plugins"]},
                     clean_kwargs={"threads": not zarr})
        async def test(c, s):  # named after fn below; not wrapped, so pytest sees no fixtures
            state = s.plugins[CatalogPlugin.name].state
            held: dict[str, list[str]] = {}
            for entry in workers:
                if entry is not None:
                    site, _, name = entry.partition("/")
                    held.setdefault(site, []).extend([name] if name else [])
            for site, names in held.items():
                listed = [d for d in catalog if d.site == site]
                listed += [dataset(f"{site}/{n}") for n in names
                           if n not in {d.name for d in listed}]
                state.register(site, f"test-{site}", "inproc://test", listed,
                               accepts_results=site in (results_dirs or {}))
            async with contextlib.AsyncExitStack() as stack:
                started = []
                for entry in workers:
                    site, _, name = (entry or "").partition("/")
                    context = SiteContext(
                        site, session=f"test-{site}", capability_key=state.site_secret(site),
                        sources={r: src for r, src in (sources or {}).items()
                                 if site_of_ref(r) == site},
                        results_dir=(results_dirs or {}).get(site),
                    )
                    started.append(await stack.enter_async_context(Worker(
                        s.address, nthreads=1,
                        resources=worker_resources(site, [name] if name else [])
                        if site else None,
                        plugins=[SiteWorkerPlugin(context)] if site else [],
                    )))
                await c.wait_for_workers(len(started))
                await fn(c, s, *started)

        test.__name__, test.__doc__ = fn.__name__, fn.__doc__
        return test

    return decorate
