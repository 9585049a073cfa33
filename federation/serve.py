"""Running the hub and a site until a signal arrives (used by the CLI and the demo)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import dask
from distributed import Scheduler
from distributed._signals import wait_for_signals
from distributed.security import Security
from distributed.utils import get_ip, get_ip_interface

from .config import ConfigError, SiteConfig
from .protocol import API_PATH
from .site import Site, site_nannies, use_config_dir

logger = logging.getLogger("federation")


async def _until_signal(done: Awaitable[object], close: Callable[[], Awaitable[object]]) -> None:
    signals = asyncio.ensure_future(wait_for_signals())
    finished = asyncio.ensure_future(done)
    await asyncio.wait([signals, finished], return_when=asyncio.FIRST_COMPLETED)
    signals.cancel()
    await close()


ANY_HOST = ("", "0.0.0.0", "::")


def hub_addresses(scheduler: Scheduler, host: str | None, pages: bool = True) -> list[str]:
    """Where users reach the hub and its federation page (``pages=False``, a hub without
    dashboard pages: its HTTP API), as the log should say.

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
        url = f"{web}://{shown}:{dashboard.port}"
        lines.append(f"Federation page at {url}/federation{where}" if pages else
                     f"Federation HTTP API at {url}/{API_PATH} (no dashboard pages){where}")
    return lines


async def run_hub(
    host: str | None = None,
    port: int = 8786,
    dashboard_address: str = ":8787",
    preload: tuple[str, ...] = (),
    security: Security | None = None,
    dashboard: bool = True,
) -> None:
    """A distributed Scheduler with the federation plugins, until SIGINT/SIGTERM.
    ``dashboard=False``: no Bokeh pages (and no Bokeh import); the HTTP server with the
    federation's API still listens at ``dashboard_address``."""
    scheduler = Scheduler(
        host=host,
        port=port,
        dashboard=dashboard,
        dashboard_address=dashboard_address,
        preload=["scheduler_plugins", *preload],
        security=security,
        protocol="tls" if security else None,
    )
    await scheduler
    for line in hub_addresses(scheduler, host, pages=dashboard):
        logger.info("%s", line)
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
    """A site (registration + workers), until SIGINT/SIGTERM; SIGHUP checks its datasets
    for changes at once."""
    site = Site(
        cfg, hub=hub, join=join, timeout=timeout, config_dir=config_dir, security=security,
        config_file=config_file, operator_port=operator_port,
    )
    try:
        await site.start()
    except BaseException:
        await site.close()
        raise
    if site.watcher is not None:  # SIGHUP: check the datasets for changes now
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, site.watcher.wake)
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
    secrets_from: str | None = None,
) -> None:
    """Workers of a site in a batch job (``dask federation site-worker``), until they stop
    (the hub went away for ``death_timeout`` s) or SIGINT/SIGTERM (e.g. ``scancel``).

    The site's registration secrets come from the environment the job script exports:
    ``$FEDERATION_CAPABILITY_KEY`` (the hub's key the workers check capabilities with),
    ``$FEDERATION_SITE_SESSION`` and ``$FEDERATION_RELAY_TOKEN``; in Kubernetes worker
    pods, from the site process at ``secrets_from`` (see :mod:`federation.kubernetes`).

    Raises :class:`ConfigError` if the capability key or the relay token is missing.
    """
    use_config_dir(config_dir)
    env = dict(os.environ)
    if secrets_from:
        from .kubernetes import bootstrap_token, fetch_worker_secrets

        env.update(await fetch_worker_secrets(secrets_from, bootstrap_token(), death_timeout))
    # outbound-only Kubernetes pods learn the hub's relay port with the secrets
    relay = relay or env.get("FEDERATION_RELAY_ADDRESS")
    key = env.get("FEDERATION_CAPABILITY_KEY")
    token = env.get("FEDERATION_RELAY_TOKEN")
    if not key or not token:
        raise ConfigError(
            "site-worker needs the site's registration secrets in $FEDERATION_CAPABILITY_KEY "
            "and $FEDERATION_RELAY_TOKEN (the job scripts 'dask federation site' submits "
            "export them), or --secrets-from the site process (Kubernetes worker pods)"
        )
    # with a relay token the workers get tickets to reach other sites' relayed workers
    dask.config.set({
        "federation.relay.hub": hub, "federation.relay.site": cfg.site,
        "federation.relay.token": token,
    })
    if relay:
        # peers of the site on other nodes reach these workers at this node's address
        host = listen_host or cfg.listen_host or (
            get_ip_interface(interface) if interface else get_ip()
        )
        dask.config.set({
            "federation.relay.address": relay, "federation.relay.listen-host": host,
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
        capability_key=key, session=env.get("FEDERATION_SITE_SESSION"),
    )
    await asyncio.gather(*nannies)
    logger.info("Site %s: workers %s joined the hub %s", cfg.site, names, hub)

    async def close() -> None:
        await asyncio.gather(*(n.close(timeout=10) for n in nannies), return_exceptions=True)

    await _until_signal(asyncio.gather(*(n.finished() for n in nannies)), close)
