"""A federation site whose workers do not check capabilities — only for measuring what
signing them costs the hub (``python -m benchmarks.capabilities``). Never run it as a
real site: its workers would read for any task.

``python -m benchmarks.unchecked_site CONFIG --hub ADDRESS``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os

from federation.config import load_site_config
from federation.site import Site


class UncheckedSite(Site):
    """Registers like a site (the hub accepts only registered sites' workers) but gives
    its workers no capability key."""

    async def _start_workers(self) -> None:
        self.capability_key = None
        await super()._start_workers()


async def main(config: str, hub: str) -> None:
    site = UncheckedSite(load_site_config(config), hub,
                         config_dir=os.path.dirname(os.path.abspath(config)))
    await site.start()
    await site.run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--hub", required=True)
    a = p.parse_args()
    asyncio.run(main(a.config, a.hub))
