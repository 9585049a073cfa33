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
import tempfile
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dask
import xarray as xr
from dask.utils import parse_bytes
from distributed import Client, Nanny
from distributed.comm import CommClosedError, connect, get_address_host
from distributed.comm.addressing import unparse_host_port
from distributed.core import rpc
from distributed.security import Security

from . import protocol, standing
from .catalog import DatasetInfo
from .config import ConfigError, MethodConfig, SiteConfig
from .describe import describe_source
from .diagnose import tls_refusal
from .direct import refuse_users
from .errors import HubUnavailable
from .labels import worker_resources
from .methods import describe_function, load_function
from .peers import PeersPlugin
from .protocol import RESULTS, MethodInfo
from .quiet import QuietUserMistakes
from .results import scan_results
from .sitecalls import standing_task
from .sitecontext import SiteContext, SiteWorkerPlugin
from .sources import UNLOCKED_HDF5, OptionError, Source, source_for
from .strict import StrictNanny, StrictPolicy
from .versions import VersionLog, describe_version
from .watch import Watcher

if TYPE_CHECKING:
    from .jobs import SiteJobs
    from .kubernetes import OperatorAPI

logger = logging.getLogger("federation.site")

HEARTBEAT_INTERVAL = 2.0
#: the dask config of a site's relay listeners (see federation.relay)
RELAY_KEYS = (
    "federation.relay.address", "federation.relay.site", "federation.relay.token",
    "federation.relay.listen-host",
)


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


def versions_dir(cfg: SiteConfig) -> str:
    """Where the site's version log lives (see :mod:`federation.versions`)."""
    return cfg.local_directory or tempfile.gettempdir()


def check_source(cfg: SiteConfig, name: str) -> Source:
    """The source of dataset ``name``; options the engine does not accept, or a path no
    engine recognises, stop the site with a message naming the key."""
    ds_cfg = cfg.datasets[name]
    source = source_for(ds_cfg)
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
    return source


def describe_config(cfg: SiteConfig, name: str, source: Source, log: VersionLog) -> DatasetInfo:
    """Describe dataset ``name`` as its files are now, record its version in ``log``
    and apply its egress policy.

    Raises
    ------
    Exception
        Whatever xarray or the engine raises for a source it cannot open
        (:class:`~federation.errors.DatasetChanged` while a provider keeps writing).
    """
    ds_cfg = cfg.datasets[name]
    _, info = describe_version(
        log, f"{cfg.site}/{name}", source,
        lambda: describe_source(
            cfg.site, name, source, ds_cfg.description, replica_of=ds_cfg.replica_of
        ),
    )
    limit = ds_cfg.max_egress_bytes
    if ds_cfg.egress == "aggregated" and limit is None:
        limit = info.nbytes // 100  # the default: 1 % of the raw size
    return dataclasses.replace(
        info, egress=ds_cfg.egress,
        max_egress_bytes=parse_bytes(limit) if isinstance(limit, str) else limit,
    )


def scan_catalog(cfg: SiteConfig) -> list[DatasetInfo]:
    """Open each dataset of the site and describe it; an option the engine does not
    accept, or a source it cannot open, stops the site with a message naming the
    dataset."""
    infos = []
    log = VersionLog(cfg.site, versions_dir(cfg))
    with log.batch():  # one write of the version log for the whole catalog
        for name, ds_cfg in cfg.datasets.items():
            source = check_source(cfg, name)
            try:
                infos.append(describe_config(cfg, name, source, log))
            except Exception as e:  # any reader error: corrupt store, wrong engine, bad option
                engine = source.engine or "guessed"
                raise ConfigError(
                    f"datasets.{name}: cannot open {ds_cfg.path!r} with the {engine} engine "
                    f"and open_options {ds_cfg.open_options}: {type(e).__name__}: {e}. Fix "
                    "the path, the file, 'engine:' or 'open_options:'"
                ) from None
    return infos


def use_config_dir(config_dir: str | None) -> None:
    """Methods may live in modules next to the config file: importable here and in the
    worker processes this process starts."""
    if config_dir:
        sys.path.insert(0, config_dir)
        paths = [config_dir, os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def site_nannies(
    cfg: SiteConfig,
    hub: str,
    names: list[str],
    *,
    security: Security | None = None,
    relay: bool = False,
    nthreads: int | None = None,
    memory_limit: str | int | None = None,
    local_directory: str | None = None,
    death_timeout: float | None = None,
    interface: str | None = None,
    capability_key: str | None = None,
    session: str | None = None,
) -> list[Nanny]:
    """Unstarted Nannies (one per name) for the site's workers: its labels, its read
    plugin (with the hub's capability key and the site's session), the peers check,
    strict mode if configured, ``relay://`` listeners if outbound-only.

    Used by the site process and by ``dask federation site-worker`` in batch jobs, so
    that workers in jobs are the same as those the site starts itself.
    """
    sources = {name: source_for(ds) for name, ds in cfg.datasets.items()}
    # a replica is read under its original's reference too
    replicas = {ds.replica_of: name for name, ds in cfg.datasets.items() if ds.replica_of}
    # a strict site's nannies and workers unpickle and run allow-listed code only
    nanny, strict = (
        (StrictNanny, {"strict_policy": strict_policy(cfg)}) if cfg.strict else (Nanny, {})
    )
    return [
        nanny(
            hub,
            name=name,
            nthreads=nthreads or cfg.nthreads,
            memory_limit=memory_limit or cfg.memory_limit,
            resources=worker_resources(cfg.site, list(cfg.datasets), replicas=replicas),
            local_directory=local_directory or cfg.local_directory,
            security=security,
            protocol="relay" if relay else None,
            death_timeout=death_timeout,
            interface=interface,
            env=dict(UNLOCKED_HDF5),
            plugins=(
                SiteWorkerPlugin(SiteContext.for_site(
                    cfg.site, sources, replicas=replicas,
                    methods={**cfg.method_specs, **cfg.workflows},
                    results_dir=cfg.results_dir,
                    capability_key=capability_key, session=session,
                    versions_dir=versions_dir(cfg),
                )),
                PeersPlugin(cfg.site),
                QuietUserMistakes(),
            ),
            **strict,
        )
        for name in names
    ]


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
    #: the config file, which batch jobs read too (``dask federation site-worker``)
    config_file: str | None = None
    #: workers started as batch jobs (``cluster:`` slurm, pbs, lsf, sge)
    jobs: SiteJobs | None = None
    #: with ``cluster: kubernetes``: the API the dask-kubernetes operator scales by
    operator: OperatorAPI | None = None
    operator_port: int = 8787
    _heartbeat: asyncio.Task | None = None
    _session: asyncio.Task | None = None
    #: checks the datasets for changes (``refresh:``, SIGHUP)
    watcher: Watcher | None = None
    _watch: asyncio.Task | None = None
    _standing: asyncio.Task | None = None
    _standing_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    connectivity: str = "direct"
    #: the secret the hub gave at registration; the workers check its capabilities
    capability_key: str | None = None
    _closing: bool = False

    async def start(self) -> None:
        use_config_dir(self.config_dir)
        if self.cfg.results_dir:
            try:
                os.makedirs(self.cfg.results_dir, exist_ok=True)
            except OSError as e:
                raise ConfigError(
                    f"results_dir: cannot create {self.cfg.results_dir!r}: {e.strerror}"
                ) from None
        if self.cfg.cluster.type == "kubernetes":
            from .kubernetes import bootstrap_token

            bootstrap_token()  # before registering: a pod without it cannot serve its workers
        self.catalog = await asyncio.to_thread(scan_catalog, self.cfg)
        self.methods = await asyncio.to_thread(scan_methods, self.cfg)
        await asyncio.to_thread(check_strict_modules, self.cfg)
        await self.register(deadline=self.timeout)
        # beat while the workers start: a slow start must not let the registration lapse
        self._heartbeat = asyncio.create_task(self._beat())
        self._session = asyncio.create_task(self._hold_session())
        self.watcher = Watcher(
            self.cfg, VersionLog(self.cfg.site, versions_dir(self.cfg)), self.catalog,
            lambda name, source, log: describe_config(self.cfg, name, source, log),
            self._announce_changes,
        )
        self._watch = asyncio.create_task(self.watcher.run())
        # standing results stored here catch up with what changed while the site was down
        self._standing = asyncio.create_task(self._update_standing(None))
        await self._start_workers()
        logger.info(
            "Site %s serving %s with %s at hub %s",
            self.cfg.site, [d.name for d in self.catalog],
            self.jobs.describe() if self.jobs is not None
            else "workers from the dask-kubernetes operator" if self.operator is not None
            else f"{len(self.nannies)} worker(s)",
            self.hub,
        )

    async def _start_workers(self) -> None:
        if self.cfg.cluster.type == "kubernetes":
            # the dask-kubernetes operator starts the workers; it asks this process how many
            if self.operator is None:
                from .kubernetes import OperatorAPI, bootstrap_token

                self.operator = OperatorAPI(self.cfg, self._hub, self._worker_secrets,
                                            bootstrap_token())
                self.operator.start(self.operator_port)
            return
        if self.cfg.cluster.type != "local":
            from .jobs import SiteJobs  # dask-jobqueue, only for batch sites

            self.jobs = SiteJobs(
                self.cfg, hub=self.hub, config_file=self.config_file, session=self.session,
                security=self.security, relay=self._relay_settings(),
                worker_env=self._worker_secrets() or {},
            )
            await self.jobs.start()
            return
        prefix = self.cfg.site if not self.join else f"{self.cfg.site}-{self.session[:6]}"
        self.nannies = site_nannies(
            self.cfg, self.hub, [f"{prefix}-{i}" for i in range(self.cfg.workers)],
            security=self.security, relay=self.connectivity == "outbound-only",
            capability_key=self.capability_key, session=self.session,
        )
        await asyncio.gather(*self.nannies)
        for nanny in self.nannies:  # the workers gate themselves (SiteWorkerPlugin)
            refuse_users(nanny)

    async def run(self) -> None:
        """Serve until closed. Workers close when the hub goes away; then the site
        announces itself again (retrying with backoff) and starts new workers."""
        while not self._closing:
            if self.operator is not None:
                # workers are the operator's pods; they reconnect by restarting
                await asyncio.Event().wait()
            elif self.jobs is not None:
                await self.jobs.finished()
            else:
                await asyncio.gather(*(n.finished() for n in self.nannies))
            if self._closing:
                return
            logger.warning("Site %s lost the hub %s; reconnecting", self.cfg.site, self.hub)
            if self.jobs is not None:
                await self.jobs.close()  # its jobs' workers lost the hub too
            await self.register(deadline=None)
            await self._start_workers()
            logger.info("Site %s reconnected", self.cfg.site)
            # changes the hub missed while it was away
            self._standing = asyncio.create_task(self._update_standing(None))

    def _worker_secrets(self) -> dict[str, str] | None:
        """What workers started outside this process (batch jobs, Kubernetes pods) need
        from the registration, as the environment of ``site-worker``; ``None`` while
        the site is not registered."""
        if not self.capability_key:
            return None
        values = {
            "FEDERATION_CAPABILITY_KEY": self.capability_key,
            "FEDERATION_SITE_SESSION": self.session,
            "FEDERATION_RELAY_TOKEN": dask.config.get("federation.relay.token"),
        }
        relay = self._relay_settings()
        if relay is not None:  # the hub's relay port comes with the registration
            values["FEDERATION_RELAY_ADDRESS"] = relay["federation.relay.address"]
        return values

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
            # each try's connect gives up with the deadline (distributed's default is 30 s)
            left = None if give_up is None else max(give_up - loop.time(), 1.0)
            sent = list(self.catalog)
            try:
                async with self._hub(timeout=left) as hub:
                    reply = await protocol.call(
                        hub, protocol.REGISTER_SITE,
                        site=self.cfg.site,
                        session=self.session,
                        datasets=[d.to_wire() for d in sent],
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
                if self.catalog != sent:
                    # a dataset changed while the call waited for the hub: send it too
                    continue
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
                # no try that could only start after the deadline (distributed's connect
                # retried until its timeout, which is the time left)
                if give_up is not None and loop.time() + delay > give_up:
                    raise HubUnavailable(
                        f"cannot reach the hub at {self.hub} ({e}); check 'hub:' in the "
                        "site config or --hub, and that the hub is running"
                    ) from None
                await asyncio.sleep(delay)
                if give_up is None:
                    delay = min(delay * 2, 30.0)

    async def _announce_changes(self, infos: list[DatasetInfo]) -> None:
        """Send new versions of datasets to the hub (a later registration sends the
        whole catalog, with them, if this fails)."""
        new = {info.name: info for info in infos}
        self.catalog = [new.get(info.name, info) for info in self.catalog]
        async with self._hub(timeout=30) as hub:
            await protocol.call(
                hub, protocol.UPDATE_DATASETS, site=self.cfg.site, session=self.session,
                datasets=[i.to_wire() for i in infos],
            )
        await self._update_standing({info.ref for info in infos})

    async def _update_standing(self, refs: set[str] | None) -> None:
        """Extend the standing results stored here whose dataset is in ``refs`` (all
        when ``None``), each by a site-bound task submitted through the hub (so reads
        are signed, routed and counted like every other)."""
        names = [
            name for name, entry in standing.active(self.cfg.results_dir).items()
            if refs is None or entry["dataset"] in refs
        ]
        if not names:
            return
        async with self._standing_lock:  # the watcher and a reconnect may both call
            await self._update_standing_now(names)

    async def _update_standing_now(self, names: list[str]) -> None:
        try:  # a client per batch: one kept open would outlive a hub restart half-broken
            client = await Client(
                self.hub, security=self.security, asynchronous=True, timeout=30,
                name=f"site {self.cfg.site}",
            )
        except Exception as e:
            logger.warning("Standing results %s were not updated: %s", names, e)
            return
        async with client:
            for name in names:
                ref = f"{self.cfg.site}/{RESULTS}{name}"
                try:
                    task = dask.delayed(standing_task, pure=False)(ref, "update")
                    done = await client.compute(task)
                    logger.info("Standing result %s now has %s steps", ref, done["steps"])
                except Exception as e:  # the next change tries again; the registry says why
                    logger.warning("Standing result %s was not updated: %s: %s", ref,
                                   type(e).__name__, e)

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
        dask.config.set(self._relay_settings(reply))
        if self.security is not None and self.security.tls_ca_file:
            dask.config.set({"federation.relay.tls": {
                "ca": self.security.tls_ca_file, "cert": self.security.tls_worker_cert,
                "key": self.security.tls_worker_key,
            }})

    def _relay_settings(self, reply: dict | None = None) -> dict[str, str] | None:
        """The dask config of this site's relay listeners (``None`` for direct sites),
        from the hub's reply to the registration (or the config already set by it)."""
        if self.connectivity != "outbound-only":
            return None
        if reply is None:
            return {k: dask.config.get(k) for k in RELAY_KEYS}
        return {
            "federation.relay.address": unparse_host_port(
                get_address_host(self.hub), reply["relay"]["port"]
            ),
            "federation.relay.site": self.cfg.site,
            "federation.relay.token": reply["relay"]["token"],
            "federation.relay.listen-host": self.cfg.listen_host or "127.0.0.1",
        }

    def _workers_status(self) -> dict | None:
        """Requested/pending/running workers of a batch or Kubernetes site."""
        for source in (self.jobs, self.operator):
            if source is not None:
                return source.status()
        return None

    async def _beat(self) -> None:
        delay = HEARTBEAT_INTERVAL
        while True:
            await asyncio.sleep(delay)
            try:
                async with self._hub() as hub:
                    reply = await protocol.call(
                        hub, protocol.HEARTBEAT,
                        site=self.cfg.site, session=self.session,
                        jobs=self._workers_status(),
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
                        "op": protocol.SITE_SESSION, "site": self.cfg.site,
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
        for task in (self._heartbeat, self._session, self._watch, self._standing):
            if task is not None:
                task.cancel()
        try:
            async with self._hub(timeout=2) as hub:
                await asyncio.wait_for(
                    protocol.call(
                        hub, protocol.UNREGISTER_SITE, site=self.cfg.site,
                        session=self.session,
                    ),
                    5,
                )
        except Exception:  # the hub may already be gone
            pass
        if self.jobs is not None:
            await self.jobs.close()
        if self.operator is not None:
            self.operator.stop()
        await asyncio.gather(*(n.close(timeout=10) for n in self.nannies), return_exceptions=True)
