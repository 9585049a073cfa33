"""A site's workers for *plain* Dask (baselines): no registration with a hub.

``python -m benchmarks.plain_site CONFIG --scheduler ADDR [--shared OTHER.yaml ...]``

Starts the same Nannies as ``dask federation site`` (same labels, threads, memory
limit and :class:`~federation.sitecontext.SiteWorkerPlugin`, so reads and traffic
counters are identical) but connects them to any scheduler, e.g. a plain ``dask scheduler`` without
the federation plugins, which would refuse ``federation_register_site``. With
``--shared`` every worker can also read the other configs' datasets: the
"shared filesystem" assumption of plain Dask placement.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from distributed import Nanny
from distributed._signals import wait_for_signals

from federation.config import load_site_config
from federation.labels import worker_resources
from federation.protocol import ref
from federation.sitecontext import SiteContext, SiteWorkerPlugin
from federation.sources import source_for


async def main(config: str, scheduler: str, shared: list[str]) -> None:
    cfg = load_site_config(config)
    context = SiteContext.for_site(
        cfg.site, {name: source_for(ds) for name, ds in cfg.datasets.items()}
    )
    for path in shared:  # the other sites' datasets, readable here too
        other = load_site_config(path)
        context.sources.update(
            {ref(other.site, n): source_for(ds) for n, ds in other.datasets.items()}
        )
    nannies = [
        Nanny(
            scheduler,
            name=f"{cfg.site}-{i}",
            nthreads=cfg.nthreads,
            memory_limit=cfg.memory_limit,
            resources=worker_resources(cfg.site, list(cfg.datasets)),
            local_directory=cfg.local_directory,
            plugins=(SiteWorkerPlugin(context),),
        )
        for i in range(cfg.workers)
    ]
    await asyncio.gather(*nannies)
    print(f"plain site {cfg.site} serving with {len(nannies)} worker(s)", flush=True)
    signals = asyncio.ensure_future(wait_for_signals())
    finished = asyncio.ensure_future(asyncio.gather(*(n.finished() for n in nannies)))
    await asyncio.wait([signals, finished], return_when=asyncio.FIRST_COMPLETED)
    signals.cancel()
    await asyncio.gather(*(n.close(timeout=10) for n in nannies), return_exceptions=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--scheduler", required=True)
    p.add_argument("--shared", nargs="*", default=[])
    a = p.parse_args()
    asyncio.run(main(a.config, a.scheduler, a.shared))
