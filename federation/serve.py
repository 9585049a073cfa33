"""Running the hub and a site until a signal arrives (used by the CLI and the demo)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from distributed import Scheduler
from distributed._signals import wait_for_signals
from distributed.security import Security

from .config import SiteConfig
from .site import Site

logger = logging.getLogger("federation")


async def _until_signal(done: Awaitable[object], close: Callable[[], Awaitable[object]]) -> None:
    signals = asyncio.ensure_future(wait_for_signals())
    finished = asyncio.ensure_future(done)
    await asyncio.wait([signals, finished], return_when=asyncio.FIRST_COMPLETED)
    signals.cancel()
    await close()


async def run_hub(
    host: str | None = None,
    port: int = 8786,
    dashboard_address: str = ":8787",
    preload: tuple[str, ...] = (),
    security: Security | None = None,
) -> None:
    """A distributed Scheduler with the federation plugins, until SIGINT/SIGTERM."""
    scheduler = Scheduler(
        host=host,
        port=port,
        dashboard_address=dashboard_address,
        preload=["scheduler_plugins", *preload],
        security=security,
        protocol="tls" if security else None,
    )
    await scheduler
    logger.info("Federation hub at %s", scheduler.address)
    dashboard = scheduler.services.get("dashboard")
    if dashboard is not None:
        logger.info("Dashboard at http://%s:%d/status", scheduler.ip, dashboard.port)
    await _until_signal(scheduler.finished(), lambda: scheduler.close(reason="signal"))


async def run_site(
    cfg: SiteConfig,
    hub: str,
    join: bool = False,
    timeout: float = 30,
    config_dir: str | None = None,
    security: Security | None = None,
) -> None:
    """A site (registration + workers), until SIGINT/SIGTERM."""
    site = Site(
        cfg, hub=hub, join=join, timeout=timeout, config_dir=config_dir, security=security
    )
    try:
        await site.start()
    except BaseException:
        await site.close()
        raise
    await _until_signal(site.run(), site.close)
