"""Running the hub and a site until a signal arrives (used by the CLI and the demo)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import dask
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


ANY_HOST = ("", "0.0.0.0", "::")


def hub_addresses(scheduler: Scheduler, host: str | None) -> list[str]:
    """Where users reach the hub and its federation page, as the log should say.

    distributed names a hub listening on all interfaces by one external address; users
    on the hub's own machine connect to 127.0.0.1, so both are given. The page's address
    is the one the HTTP server really bound (``--dashboard-address 127.0.0.1:8787``
    is not reachable as ``0.0.0.0``).
    """
    address = scheduler.address
    lines = [f"Federation hub at {address}"]
    if host in (None, *ANY_HOST):
        protocol, port = address.split("://", 1)[0], scheduler.port
        lines[0] += f" (all interfaces; on this machine {protocol}://127.0.0.1:{port})"
    dashboard = scheduler.services.get("dashboard")
    if dashboard is not None:
        web = "https" if dask.config.get("distributed.scheduler.dashboard.tls.cert") else "http"
        bound = dashboard.address
        shown = "127.0.0.1" if bound in ANY_HOST else bound
        shown = f"[{shown}]" if ":" in shown else shown
        where = " (all interfaces)" if bound in ANY_HOST else ""
        lines.append(f"Federation page at {web}://{shown}:{dashboard.port}/federation{where}")
    return lines


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
    for line in hub_addresses(scheduler, host):
        logger.info("%s", line)
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
