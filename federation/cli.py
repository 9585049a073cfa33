"""``dask federation …`` (distributed's ``dask_cli`` entry point) and ``dask-federation``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from .config import ConfigError, load_site_config
from .errors import FederationError


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")


@click.group(name="federation", context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Analyse datasets held at several institutes together, without moving them."""


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: all interfaces)")
@click.option(
    "--port", default=8786, show_default=True, help="Scheduler port sites and users connect to"
)
@click.option(
    "--dashboard-address", default=":8787", show_default=True,
    help="Dashboard / HTTP address",
)
@click.option("--preload", multiple=True, help="Extra scheduler preload modules")
def hub(host: str | None, port: int, dashboard_address: str, preload: tuple[str, ...]) -> None:
    """Run the federation hub: a Dask scheduler with the federation plugins."""
    from .serve import run_hub

    _setup_logging()
    asyncio.run(run_hub(host, port, dashboard_address, preload))


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--hub", "hub_address", default=None, help="Hub address; overrides 'hub:' in CONFIG")
@click.option("--workers", type=int, default=None, help="Override 'workers:' from CONFIG")
@click.option(
    "--join", is_flag=True,
    help="Add workers to a site of this name that is already running (same config)",
)
@click.option(
    "--timeout", default=30.0, show_default=True, help="Seconds to keep trying to reach the hub"
)
def site(
    config: str, hub_address: str | None, workers: int | None, join: bool, timeout: float
) -> None:
    """Run a site: register CONFIG's datasets with the hub and start its workers."""
    from .serve import run_site

    _setup_logging()
    try:
        cfg = load_site_config(config)
        if workers is not None:
            cfg.workers = workers
        address = hub_address or cfg.hub
        if not address:
            raise ConfigError(f"{config}: no hub address; add 'hub: tcp://HOST:8786' or pass --hub")
        config_dir = os.path.dirname(os.path.abspath(config))
        asyncio.run(run_site(cfg, address, join=join, timeout=timeout, config_dir=config_dir))
    except (ConfigError, FederationError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command()
@click.argument("address")
def catalog(address: str) -> None:
    """Print the federated catalog of the hub at ADDRESS."""
    import pandas as pd

    from .client import connect

    with connect(address, timeout="10s") as fed:
        with pd.option_context("display.max_colwidth", 40, "display.width", 160):
            click.echo(fed.catalog().drop(columns=["chunks"]).to_string(index=False))


@main.command()
@click.option("--size", default="200MB", show_default=True, help="Data per site, e.g. 50MB, 1GB")
@click.option("--keep", is_flag=True, help="Keep the federation running until Ctrl-C")
@click.option("--directory", default=None, help="Folder for the sites' data (default: temporary)")
def demo(size: str, keep: bool, directory: str | None) -> None:
    """Start a hub and three sites on this machine and run a cross-site analysis."""
    from .demo import run_demo

    run_demo(size=size, keep=keep, directory=directory)


if __name__ == "__main__":
    main()
