"""The site runtime: what ``dask federation site CONFIG`` runs at an institute.

It reads the site's YAML, opens every dataset once with xarray to describe it,
registers the site and its catalog with the hub, and starts the site's workers as
distributed Nannies labelled with the site's resource labels. While it runs it
heartbeats the hub, and re-announces itself if the hub forgot it (a hub restart).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field

import dask
import xarray as xr
from dask.utils import parse_bytes
from distributed import Nanny
from distributed.comm import CommClosedError, connect, get_address_host
from distributed.comm.addressing import unparse_host_port
from distributed.core import rpc
from distributed.security import Security

from .catalog import DatasetInfo
from .config import ConfigError, MethodConfig, SiteConfig
from .describe import describe_source
from .diagnose import tls_refusal
from .direct import refuse_users
from .errors import HubUnavailable
from .labels import worker_resources
from .methods import MethodInfo, describe_function, load_function
from .peers import PeersPlugin
from .quiet import QuietUserMistakes
from .read import SiteWorkerPlugin
from .results import scan_results
from .sources import OptionError, source_for
from .strict import StrictNanny, StrictPolicy

logger = logging.getLogger("federation.site")

HEARTBEAT_INTERVAL = 2.0


def scan_methods(cfg: SiteConfig) -> list[MethodInfo]:
    """Import each shared method and workflow and describe it; an import that fails
    stops the site with a message naming the key."""
    infos = []
    for kind, specs in (("method", cfg.method_specs), ("workflow", cfg.workflows)):
        for name, spec in specs.items():
            try:
                func = load_function(spec)
            except Exception as e:
                raise ConfigError(
                    f"{kind}s.{name}: cannot import {spec!r}: {type(e).__name__}: {e}. "
                    "The module must be importable at the site (it may sit next to the "
                    "config file)"
                ) from None
            info = describe_function(cfg.site, name, kind, func)
            method = cfg.methods.get(name) if kind == "method" else None
            if isinstance(method, MethodConfig) and method.release:
                info = dataclasses.replace(
                    info, release=method.release, max_egress_bytes=method.limit
                )
            infos.append(info)
    return infos


def check_strict_modules(cfg: SiteConfig) -> None:
    """Import each of ``strict_modules``; one that cannot be imported stops the site
    (an allow-list naming a missing module is a typo, not a policy)."""
    for module in cfg.strict_modules:
        try:
            importlib.import_module(module)
        except Exception as e:
            raise ConfigError(
                f"strict_modules: cannot import {module!r}: {type(e).__name__}: {e}. "
                "The module must be importable at the site (it may sit next to the "
                "config file)"
            ) from None


def strict_policy(cfg: SiteConfig) -> StrictPolicy:
    """The allow-list of a strict site: its methods, workflows and ``strict_modules``."""
    specs = [*cfg.method_specs.values(), *cfg.workflows.values()]
    return StrictPolicy(cfg.site, frozenset(specs), tuple(cfg.strict_modules))


def scan_catalog(cfg: SiteConfig) -> list[DatasetInfo]:
    """Open each dataset of the site and describe it; an option the engine does not
    accept, or a source it cannot open, stops the site with a message naming the
    dataset."""
    infos = []
    for name, ds_cfg in cfg.datasets.items():
        source = source_for(ds_cfg)
        engine = source.engine or "guessed"
        try:
            source.check_options()
        except OptionError as e:
            raise ConfigError(
                f"datasets.{name}.open_options.{e.key}: {e}. Remove it or fix its name"
            ) from None
        except ValueError as e:  # no engine recognises it, or an unknown engine
            engines = [e for e in xr.backends.list_engines() if e not in ("federation", "store")]
            first = str(e).split(". ")[0]  # xarray's message goes on with links
            raise ConfigError(
                f"datasets.{name}: cannot open {ds_cfg.path!r}: {first}. Set 'engine:' to "
                f"an installed one ({', '.join(engines)}, icechunk)"
            ) from None
        try:
            info = describe_source(
                cfg.site, name, source, ds_cfg.description, replica_of=ds_cfg.replica_of
            )
        except Exception as e:  # any reader error: corrupt store, wrong engine, bad option
            raise ConfigError(
                f"datasets.{name}: cannot open {ds_cfg.path!r} with the {engine} engine "
                f"and open_options {ds_cfg.open_options}: {type(e).__name__}: {e}. Fix the "
                "path, the file, 'engine:' or 'open_options:'"
            ) from None
        limit = ds_cfg.max_egress_bytes
        if ds_cfg.egress == "aggregated" and limit is None:
            limit = info.nbytes // 100  # the default: 1 % of the raw size
        infos.append(dataclasses.replace(
            info, egress=ds_cfg.egress,
            max_egress_bytes=parse_bytes(limit) if isinstance(limit, str) else limit,
        ))
    return infos


@dataclass
class Site:
    """A running site: registration with the hub plus the worker Nannies.

    Examples
    --------
    >>> site = Site(cfg, hub="tcp://127.0.0.1:8786")  # doctest: +SKIP
    >>> await site.start()  # doctest: +SKIP
    """

    cfg: SiteConfig
    hub: str
    join: bool = False
    timeout: float = 30.0
    config_dir: str | None = None
    security: Security | None = None
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    catalog: list[DatasetInfo] = field(default_factory=list)
    methods: list[MethodInfo] = field(default_factory=list)
    nannies: list[Nanny] = field(default_factory=list)
    _heartbeat: asyncio.Task | None = None
    _session: asyncio.Task | None = None
    connectivity: str = "direct"
    #: the secret the hub gave at registration; the workers check its capabilities
    capability_key: str | None = None
    _closing: bool = False

    async def start(self) -> None:
        if self.config_dir:
            # methods may live in modules next to the config file, for the workers too
            sys.path.insert(0, self.config_dir)
            paths = [self.config_dir, os.environ.get("PYTHONPATH", "")]
            os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        if self.cfg.results_dir:
            try:
                os.makedirs(self.cfg.results_dir, exist_ok=True)
            except OSError as e:
                raise ConfigError(
                    f"results_dir: cannot create {self.cfg.results_dir!r}: {e.strerror}"
                ) from None
        self.catalog = await asyncio.to_thread(scan_catalog, self.cfg)
        self.methods = await asyncio.to_thread(scan_methods, self.cfg)
        await asyncio.to_thread(check_strict_modules, self.cfg)
        await self.register(deadline=self.timeout)
        # beat while the workers start: a slow start must not let the registration lapse
        self._heartbeat = asyncio.create_task(self._beat())
        self._session = asyncio.create_task(self._hold_session())
        await self._start_workers()
        logger.info(
            "Site %s serving %s with %d worker(s) at hub %s",
            self.cfg.site, [d.name for d in self.catalog], len(self.nannies), self.hub,
        )

    async def _start_workers(self) -> None:
        sources = {name: source_for(ds) for name, ds in self.cfg.datasets.items()}
        # a replica is read under its original's reference too
        replicas = {ds.replica_of: name for name, ds in self.cfg.datasets.items() if ds.replica_of}
        prefix = self.cfg.site if not self.join else f"{self.cfg.site}-{self.session[:6]}"
        # a strict site's nannies and workers unpickle and run allow-listed code only
        nanny, strict = (
            (StrictNanny, {"strict_policy": strict_policy(self.cfg)}) if self.cfg.strict
            else (Nanny, {})
        )
        self.nannies = []
        for i in range(self.cfg.workers):
            self.nannies.append(
                nanny(
                    self.hub,
                    name=f"{prefix}-{i}",
                    nthreads=self.cfg.nthreads,
                    memory_limit=self.cfg.memory_limit,
                    resources=worker_resources(
                        self.cfg.site, list(self.cfg.datasets), replicas=replicas
                    ),
                    local_directory=self.cfg.local_directory,
                    security=self.security,
                    protocol="relay" if self.connectivity == "outbound-only" else None,
                    plugins=(
                        SiteWorkerPlugin(
                            self.cfg.site, sources, replicas=replicas,
                            methods={**self.cfg.method_specs, **self.cfg.workflows},
                            results_dir=self.cfg.results_dir,
                            capability_key=self.capability_key, session=self.session,
                        ),
                        PeersPlugin(self.cfg.site),
                        QuietUserMistakes(),
                    ),
                    **strict,
                )
            )
        await asyncio.gather(*self.nannies)
        for nanny in self.nannies:  # the workers gate themselves (SiteWorkerPlugin)
            refuse_users(nanny)

    async def run(self) -> None:
        """Serve until closed. Workers close when the hub goes away; then the site
        announces itself again (retrying with backoff) and starts new workers."""
        while not self._closing:
            await asyncio.gather(*(n.finished() for n in self.nannies))
            if self._closing:
                return
            logger.warning("Site %s lost the hub %s; reconnecting", self.cfg.site, self.hub)
            await self.register(deadline=None)
            await self._start_workers()
            logger.info("Site %s reconnected with %d worker(s)", self.cfg.site, len(self.nannies))

    def _hub(self, timeout: float | None = None) -> rpc:
        args = self.security.get_connection_args("client") if self.security else None
        return rpc(self.hub, timeout=timeout, connection_args=args)

    async def register(self, deadline: float | None = 0.0) -> None:
        """Announce the site and its catalog; fail with a clear message if refused.

        Retries while the hub is unreachable, for ``deadline`` seconds (``None``:
        forever, backing off up to 30 s between tries).
        """
        loop = asyncio.get_running_loop()
        give_up = None if deadline is None else loop.time() + deadline
        delay = 1.0
        while True:
            try:
                async with self._hub() as hub:
                    reply = await hub.federation_register_site(
                        site=self.cfg.site,
                        session=self.session,
                        datasets=[d.to_wire() for d in self.catalog],
                        methods=[m.to_wire() for m in self.methods],
                        results=await asyncio.to_thread(scan_results, self.cfg),
                        accepts_results=self.cfg.results_dir is not None,
                        join=self.join,
                        connectivity=self.cfg.connectivity,
                        strict=self.cfg.strict,
                    )
                self._use_connectivity(reply)
                if not reply.get("capability_key"):
                    raise HubUnavailable(
                        f"the hub at {self.hub} gives no capability key: it runs an older "
                        "dask-federation than this site; upgrade the hub"
                    )
                self.capability_key = reply["capability_key"]
                return
            except PermissionError:
                raise  # the hub refused (e.g. a certificate for another site): not transient
            except OSError as e:
                refused = tls_refusal(e)
                if refused is not None:
                    raise HubUnavailable(
                        f"the TLS handshake with the hub at {self.hub} failed: {refused}. "
                        "Check --tls-ca-file (the federation's CA) and that --tls-cert is a "
                        "site certificate from it: dask federation certs issue CA_DIR --site "
                        f"{self.cfg.site}"
                    ) from None
                if give_up is not None and loop.time() > give_up:
                    raise HubUnavailable(
                        f"cannot reach the hub at {self.hub} ({e}); check 'hub:' in the "
                        "site config or --hub, and that the hub is running"
                    ) from None
                await asyncio.sleep(delay)
                if give_up is None:
                    delay = min(delay * 2, 30.0)

    def _use_connectivity(self, reply: dict) -> None:
        """Outbound-only: workers and nannies listen on ``relay://`` (see federation.relay).

        The relay settings travel to the worker processes with the dask config that
        each Nanny hands its worker.
        """
        self.connectivity = reply.get("connectivity", "direct")
        # every site's workers may connect to relayed ones: with a ticket from the hub
        dask.config.set({
            "federation.relay.hub": self.hub,
            "federation.relay.site": self.cfg.site,
            "federation.relay.token": reply["relay"]["token"],
        })
        if self.connectivity != "outbound-only":
            return
        hub_host = get_address_host(self.hub)
        dask.config.set({
            "federation.relay.address": unparse_host_port(hub_host, reply["relay"]["port"]),
            "federation.relay.listen-host": self.cfg.listen_host or "127.0.0.1",
        })
        if self.security is not None and self.security.tls_ca_file:
            dask.config.set({"federation.relay.tls": {
                "ca": self.security.tls_ca_file, "cert": self.security.tls_worker_cert,
                "key": self.security.tls_worker_key,
            }})

    async def _beat(self) -> None:
        delay = HEARTBEAT_INTERVAL
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._hub() as hub:
                    reply = await hub.federation_heartbeat(
                        site=self.cfg.site, session=self.session
                    )
                if reply["status"] == "unknown":
                    logger.warning("Hub forgot site %s; announcing again", self.cfg.site)
                    await self.register(deadline=self.timeout)
                delay = HEARTBEAT_INTERVAL
            except Exception as e:  # keep serving; back off while the hub is away
                logger.warning("Heartbeat to hub %s failed: %s", self.hub, e)
                delay = min(delay * 2, 30.0)

    async def _hold_session(self) -> None:
        """Hold one connection to the hub open while this process lives.

        The hub ends the session when it closes (see ``scheduler_plugins.sessions``), so
        a site killed with ``kill -9`` and restarted at once is not refused its own name.
        While the hub is away or does not know the session yet, try again every beat.
        """
        args = self.security.get_connection_args("client") if self.security else {}
        while not self._closing:
            try:
                comm = await connect(self.hub, timeout=10, **args)
                try:
                    await comm.write({
                        "op": "federation_site_session", "site": self.cfg.site,
                        "session": self.session,
                    })
                    if (await comm.read()).get("status") == "OK":
                        await comm.read()  # the hub sends nothing more: returns on close
                finally:
                    await comm.close()
            except (OSError, CommClosedError):
                pass
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    async def close(self) -> None:
        self._closing = True
        for task in (self._heartbeat, self._session):
            if task is not None:
                task.cancel()
        try:
            async with self._hub(timeout=2) as hub:
                await asyncio.wait_for(
                    hub.federation_unregister_site(site=self.cfg.site, session=self.session), 5
                )
        except Exception:  # the hub may already be gone
            pass
        await asyncio.gather(*(n.close(timeout=10) for n in self.nannies), return_exceptions=True)
