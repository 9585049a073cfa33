"""Running the hub and a site until a signal arrives (used by the CLI and the demo)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

import dask
from distributed import Scheduler
from distributed._signals import wait_for_signals
from distributed.security import Security
from distributed.utils import get_ip, get_ip_interface

from .config import ConfigError, SiteConfig
from .site import Site, site_nannies, use_config_dir

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
    config_file: str | None = None,
    operator_port: int = 8787,
) -> None:
    """A site (registration + workers), until SIGINT/SIGTERM."""
    site = Site(
        cfg, hub=hub, join=join, timeout=timeout, config_dir=config_dir, security=security,
        config_file=config_file, operator_port=operator_port,
    )
    try:
        await site.start()
    except BaseException:
        await site.close()
        raise
    await _until_signal(site.run(), site.close)


async def run_site_worker(
    cfg: SiteConfig,
    hub: str,
    *,
    name: str,
    nworkers: int = 1,
    nthreads: int | None = None,
    memory_limit: str | None = None,
    death_timeout: float = 60,
    local_directory: str | None = None,
    interface: str | None = None,
    relay: str | None = None,
    listen_host: str | None = None,
    config_dir: str | None = None,
    security: Security | None = None,
) -> None:
    """Workers of a site in a batch job (``dask federation site-worker``), until they stop
    (the hub went away for ``death_timeout`` s) or SIGINT/SIGTERM (e.g. ``scancel``).

    Raises :class:`ConfigError` if ``relay`` is given without the relay token in
    ``$FEDERATION_RELAY_TOKEN`` (the job script the site submits sets it).
    """
    use_config_dir(config_dir)
    if relay:
        token = os.environ.get("FEDERATION_RELAY_TOKEN")
        if not token:
            raise ConfigError(
                "--relay needs the relay token in $FEDERATION_RELAY_TOKEN; the job script "
                "the site submits sets it"
            )
        # peers of the site on other nodes reach these workers at this node's address
        host = listen_host or cfg.listen_host or (
            get_ip_interface(interface) if interface else get_ip()
        )
        dask.config.set({
            "federation.relay.address": relay, "federation.relay.site": cfg.site,
            "federation.relay.token": token, "federation.relay.listen-host": host,
        })
        if security is not None and security.tls_ca_file:
            dask.config.set({"federation.relay.tls": {
                "ca": security.tls_ca_file, "cert": security.tls_worker_cert,
                "key": security.tls_worker_key,
            }})
    names = [f"{name}-{i}" for i in range(nworkers)] if nworkers > 1 else [name]
    nannies = site_nannies(
        cfg, hub, names, security=security, relay=bool(relay), nthreads=nthreads,
        memory_limit=memory_limit, local_directory=local_directory,
        death_timeout=death_timeout, interface=None if relay else interface,
    )
    await asyncio.gather(*nannies)
    logger.info("Site %s: workers %s joined the hub %s", cfg.site, names, hub)

    async def close() -> None:
        await asyncio.gather(*(n.close(timeout=10) for n in nannies), return_exceptions=True)

    await _until_signal(asyncio.gather(*(n.finished() for n in nannies)), close)
