"""``dask federation …`` (distributed's ``dask_cli`` entry point) and ``dask-federation``."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import click

from .config import ConfigError, load_site_config
from .errors import FederationError


def _site_process() -> None:
    """What every process serving a site's data sets first: HDF5 without file locks
    (providers may rewrite files any time, see federation.sources) and logging."""
    from .sources import read_without_locks

    read_without_locks()
    _setup_logging()


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(message)s")


@click.group(name="federation", context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Analyse datasets held at several institutes together, without moving them."""


def tls_options(func):
    """--tls-ca-file/--tls-cert/--tls-key, as distributed's own CLI names them."""
    for name, text in (
        ("--tls-key", "private key of this party's certificate"),
        ("--tls-cert", "this party's certificate (dask federation certs issue)"),
        ("--tls-ca-file", "the federation's CA certificate; enables mutual TLS"),
    ):
        func = click.option(name, default=None, type=click.Path(dir_okay=False), help=text)(func)
    return func


def _security(tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None):
    given = [tls_ca_file, tls_cert, tls_key]
    if not any(given):
        return None
    if not all(given):
        raise click.UsageError("mutual TLS needs all of --tls-ca-file, --tls-cert and --tls-key")
    from .security import security

    return security(tls_ca_file, tls_cert, tls_key)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: all interfaces)")
@click.option(
    "--port", default=8786, show_default=True, help="Scheduler port sites and users connect to"
)
@click.option(
    "--dashboard-address", default=":8787", show_default=True,
    help="Dashboard / HTTP address",
)
@click.option(
    "--dashboard/--no-dashboard", default=True, show_default=True,
    help="Serve the dashboard pages (Bokeh), as 'dask scheduler --no-dashboard'; the "
    "HTTP API stays at --dashboard-address either way",
)
@click.option(
    "--relay-port", default=8789, show_default=True,
    help="Port of the relay that outbound-only sites connect to (0: any free port)",
)
@click.option("--preload", multiple=True, help="Extra scheduler preload modules")
@click.option(
    "--config", "config_file", default=None, type=click.Path(exists=True, dir_okay=False),
    help="Hub settings (YAML): the federation.* dask config, e.g. grants",
)
@click.option(
    "--tls-crl", default=None, type=click.Path(dir_okay=False),
    help="Revocation list (certs revoke), reloaded on change; default: crl.pem beside "
    "--tls-ca-file",
)
@tls_options
def hub(
    host: str | None, port: int, dashboard_address: str, dashboard: bool, relay_port: int,
    preload: tuple[str, ...], config_file: str | None, tls_crl: str | None,
    tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None,
) -> None:
    """Run the federation hub: a Dask scheduler with the federation plugins."""
    import dask
    import yaml

    from .serve import run_hub

    _setup_logging()
    if config_file:
        with open(config_file) as f:
            settings = yaml.safe_load(f) or {}
        if not isinstance(settings, dict):
            raise click.UsageError(f"{config_file}: expected a mapping of federation settings")
        dask.config.update(dask.config.config, {"federation": settings}, priority="new")
        # the hub re-reads its grants from here when the file changes
        dask.config.set({"federation.settings-file": os.path.abspath(config_file)})
    if tls_crl:
        dask.config.set({"federation.tls.crl": os.path.abspath(tls_crl)})
    dask.config.set({"federation.relay.port": relay_port})
    security = _security(tls_ca_file, tls_cert, tls_key)
    asyncio.run(run_hub(host, port, dashboard_address, preload, security=security,
                        dashboard=dashboard))


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
@click.option(
    "--listen-host", default=None,
    help="Outbound-only sites: address workers listen on for same-site peers (overrides "
    "'listen_host:')",
)
@click.option(
    "--operator-api", "operator_port", type=int, default=8787, show_default=True,
    help="cluster: kubernetes: port of the API the dask-kubernetes operator scales by",
)
@click.option(
    "--refresh", type=click.FloatRange(min=0), default=None,
    help="Seconds between checks of the datasets for changes; overrides 'refresh:' "
    "(default 60; SIGHUP checks at once)",
)
@tls_options
def site(
    config: str, hub_address: str | None, workers: int | None, join: bool, timeout: float,
    listen_host: str | None, operator_port: int, refresh: float | None,
    tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None,
) -> None:
    """Run a site: register CONFIG's datasets with the hub and start its workers."""
    from .serve import run_site

    _site_process()
    try:
        cfg = load_site_config(config)
        if workers is not None:
            cfg.workers = workers
        if listen_host:
            cfg.listen_host = listen_host
        if refresh is not None:
            cfg.refresh = refresh
        address = hub_address or cfg.hub
        if not address:
            raise ConfigError(f"{config}: no hub address; add 'hub: tcp://HOST:8786' or pass --hub")
        config_dir = os.path.dirname(os.path.abspath(config))
        tls = cfg.tls
        security = _security(
            tls_ca_file or (tls and tls.ca_file), tls_cert or (tls and tls.cert),
            tls_key or (tls and tls.key),
        )
        asyncio.run(
            run_site(
                cfg, address, join=join, timeout=timeout, config_dir=config_dir,
                security=security, config_file=config, operator_port=operator_port,
            )
        )
    except (ConfigError, FederationError, PermissionError, FileNotFoundError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command("site-worker")
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("hub_address")
@click.option("--name", required=True, help="Worker name (with --nworkers: NAME-0, NAME-1, ...)")
@click.option("--nthreads", type=int, default=None, help="Threads per worker")
@click.option("--memory-limit", default=None, help="Memory per worker, e.g. 4GiB")
@click.option("--nworkers", type=int, default=1, show_default=True, help="Worker processes")
@click.option("--death-timeout", type=float, default=60, show_default=True,
              help="Seconds to wait for the hub before giving up")
@click.option("--local-directory", default=None, help="Scratch/spill directory")
@click.option("--interface", default=None, help="Network interface to listen on, e.g. ib0")
@click.option("--relay", default=None,
              help="Outbound-only sites: the hub's relay HOST:PORT (token in "
              "$FEDERATION_RELAY_TOKEN)")
@click.option("--listen-host", default=None,
              help="Outbound-only sites: address peers of the site reach these workers at "
              "(default: this node's address)")
@click.option("--secrets-from", default=None, metavar="URL",
              help="Kubernetes worker pods: fetch the site's registration secrets from the "
              "site process at URL (sealed with $FEDERATION_SITE_BOOTSTRAP_TOKEN)")
@tls_options
def site_worker(
    config: str, hub_address: str, name: str, nthreads: int | None, memory_limit: str | None,
    nworkers: int, death_timeout: float, local_directory: str | None, interface: str | None,
    relay: str | None, listen_host: str | None, secrets_from: str | None,
    tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None,
) -> None:
    """Run workers of the site CONFIG in a batch job (what ``cluster:`` sites submit)."""
    from .serve import run_site_worker

    _site_process()
    try:
        cfg = load_site_config(config)
        asyncio.run(run_site_worker(
            cfg, hub_address, name=name, nworkers=nworkers, nthreads=nthreads,
            memory_limit=memory_limit, death_timeout=death_timeout,
            local_directory=local_directory, interface=interface, relay=relay,
            listen_host=listen_host, config_dir=os.path.dirname(os.path.abspath(config)),
            security=_security(tls_ca_file, tls_cert, tls_key), secrets_from=secrets_from,
        ))
    except (ConfigError, FederationError, PermissionError, FileNotFoundError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


@main.command("kubernetes-spec")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--hub", "hub_address", default=None, help="Hub address; overrides 'hub:' in CONFIG")
@click.option("--config-path", default="/etc/federation/site.yaml", show_default=True,
              help="Where the pods find CONFIG (mount it there)")
def kubernetes_spec(config: str, hub_address: str | None, config_path: str) -> None:
    """Print the dask-kubernetes operator manifests (DaskCluster, DaskAutoscaler) of the
    site CONFIG (cluster: {type: kubernetes})."""
    import yaml

    from .kubernetes import operator_manifests

    try:
        cfg = load_site_config(config)
        if cfg.cluster.type != "kubernetes":
            raise ConfigError(f"{config}: cluster.type is {cfg.cluster.type!r}; the operator "
                              "manifests are for 'cluster: {type: kubernetes, image: ...}'")
        address = hub_address or cfg.hub
        if not address:
            raise ConfigError(f"{config}: no hub address; add 'hub: tcp://HOST:8786' or pass --hub")
    except ConfigError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    manifests = operator_manifests(cfg, address, config_path=config_path)
    click.echo(yaml.safe_dump_all(manifests, sort_keys=False))


@main.command()
@click.argument("address")
@tls_options
def catalog(
    address: str, tls_ca_file: str | None, tls_cert: str | None, tls_key: str | None
) -> None:
    """Print the federated catalog of the hub at ADDRESS."""
    import pandas as pd

    from .client import connect

    security = _security(tls_ca_file, tls_cert, tls_key)
    with connect(address, timeout="10s", security=security) as fed:
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


@main.group()
def certs() -> None:
    """Make the federation's certificate authority and issue certificates."""


@certs.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", default="dask-federation", show_default=True, help="Federation name")
def certs_init(directory: str, name: str) -> None:
    """Create the federation CA (ca.pem, ca-key.pem) in DIRECTORY."""
    from .security import init_ca

    try:
        click.echo(f"CA certificate: {init_ca(directory, name)}")
    except FileExistsError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)


def identity_options(func):
    """--hub / --site NAME / --user NAME: whose certificate."""
    func = click.option("--user", "user_name", default=None, help="User NAME")(func)
    func = click.option("--site", "site_name", default=None, help="Site NAME")(func)
    return click.option("--hub", "hub_cert", is_flag=True, help="The hub")(func)


def _chosen(hub_cert: bool, site_name: str | None, user_name: str | None) -> tuple[str, str]:
    chosen = [(r, n) for r, n in (("hub", "hub" if hub_cert else None), ("site", site_name),
                                  ("user", user_name)) if n]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --hub, --site NAME, --user NAME")
    return chosen[0]


@certs.command("issue")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@identity_options
@click.option("--host", "hosts", multiple=True, help="Host name or IP this party serves on")
@click.option("--days", type=int, default=None,
              help="Lifetime (default: 90 days for users, 825 for sites and the hub)")
def certs_issue(
    directory: str, hub_cert: bool, site_name: str | None, user_name: str | None,
    hosts: tuple[str, ...], days: int | None,
) -> None:
    """Issue a key and certificate signed by the CA in DIRECTORY."""
    from .security import issue

    role, name = _chosen(hub_cert, site_name, user_name)
    cert, key = issue(directory, role, name, hosts=hosts or ("localhost", "127.0.0.1"),
                      days=days)
    click.echo(f"certificate: {cert}\nkey:         {key}")


@certs.command("renew")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@identity_options
@click.option("--host", "hosts", multiple=True, help="Host name or IP this party serves on")
@click.option("--days", type=int, default=None, help="Lifetime (default as for issue)")
@click.option("--revoke-old", is_flag=True,
              help="Revoke the identity's earlier certificates (e.g. a lost key)")
def certs_renew(
    directory: str, hub_cert: bool, site_name: str | None, user_name: str | None,
    hosts: tuple[str, ...], days: int | None, revoke_old: bool,
) -> None:
    """Issue a fresh key and certificate for an identity that already has one."""
    from .security import issue, issued, revoke

    role, name = _chosen(hub_cert, site_name, user_name)
    old = issued(directory, role, name)
    if not old:
        click.echo(f"error: no certificate was issued for {role} {name!r} in {directory}; "
                   "use 'certs issue'", err=True)
        sys.exit(2)
    cert, key = issue(directory, role, name, hosts=hosts or ("localhost", "127.0.0.1"),
                      days=days)
    click.echo(f"certificate: {cert}\nkey:         {key}")
    if revoke_old:
        click.echo(f"revocation list: {revoke(directory, old)} ({len(old)} revoked)")


@certs.command("revoke")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@identity_options
def certs_revoke(
    directory: str, hub_cert: bool, site_name: str | None, user_name: str | None
) -> None:
    """Revoke every certificate issued for an identity (adds them to DIRECTORY/crl.pem).

    The hub reloads the list within seconds of a change (--tls-crl, by default crl.pem
    beside its --tls-ca-file) and disconnects the identity; sites learn it from the hub.
    """
    from .security import issued, revoke

    role, name = _chosen(hub_cert, site_name, user_name)
    serials = issued(directory, role, name)
    if not serials:
        click.echo(f"error: no certificate was issued for {role} {name!r} in {directory}",
                   err=True)
        sys.exit(2)
    click.echo(f"revocation list: {revoke(directory, serials)} "
               f"({role} {name!r}: {len(serials)} certificate(s) revoked)")


if __name__ == "__main__":
    main()
