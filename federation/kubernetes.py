"""A site on Kubernetes with the dask-kubernetes operator, scaled by the hub's demand.

With ``cluster: {type: kubernetes, image: ...}`` the site is a ``DaskCluster`` of the
dask-kubernetes operator (:func:`operator_manifests`, or the site Helm chart with
``operator.enabled``):

* the cluster's **scheduler pod runs the site process** (``dask federation site CONFIG
  --operator-api 8787``). It registers the site with the hub as usual and serves the
  HTTP API the operator asks when it scales (:class:`OperatorAPI`):
  ``/api/v1/adaptive_target`` (workers the hub's demand for the site needs) and
  ``/api/v1/retire_workers`` (retired through the hub, data staying in the site);
* the operator's **worker pods run** ``dask federation site-worker CONFIG HUB --name
  $(DASK_WORKER_NAME)``: the site's labels, read plugin, strict mode, TLS and relay, like
  batch jobs (they join the hub, not the DaskCluster's scheduler service);
* a ``DaskAutoscaler`` with ``adapt:``'s minimum and maximum makes the operator follow
  the target;
* the worker pods get the site's registration secrets (the hub's capability key, the
  site session, the relay token — which change whenever the site registers again) from
  the site process at ``/federation/v1/worker-secrets``, sealed with the **bootstrap
  token**: a random secret both kinds of pod mount from a Kubernetes ``Secret`` as
  ``$FEDERATION_SITE_BOOTSTRAP_TOKEN``. The answer is Fernet-encrypted (AES-128-CBC +
  HMAC-SHA256, from ``cryptography``) with a key derived from that token, so the pod
  network never sees the secrets and nobody without the token can use the answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import secrets
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from dask.utils import parse_bytes
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.httpserver import HTTPServer

from .config import ConfigError, SiteConfig
from .jobs import demand_target
from .protocol import RETIRE_SITE_WORKERS, SITE_DEMAND, call

logger = logging.getLogger("federation.kubernetes")

#: where the site chart and :func:`operator_manifests` mount the site's config
CONFIG_PATH = "/etc/federation/site.yaml"
#: the port the operator expects the scheduler's HTTP API on ("http-dashboard")
API_PORT = 8787
#: the environment variable both kinds of pod read the bootstrap token from
BOOTSTRAP_ENV = "FEDERATION_SITE_BOOTSTRAP_TOKEN"
#: the key of the bootstrap token in the Kubernetes Secret
BOOTSTRAP_KEY = "bootstrap-token"
#: where the site process serves its worker secrets, sealed
SECRETS_PATH = "/federation/v1/worker-secrets"
#: sealed secrets older than this (s) are refused: an answer recorded earlier is useless
SECRETS_TTL = 300


def bootstrap_token() -> str:
    """The bootstrap token of this pod, from ``$FEDERATION_SITE_BOOTSTRAP_TOKEN``.

    Raises :class:`ConfigError` when it is unset (the site chart and
    :func:`operator_manifests` create the Secret it comes from).
    """
    token = os.environ.get(BOOTSTRAP_ENV, "")
    if len(token) < 16:
        raise ConfigError(
            f"cluster: kubernetes needs ${BOOTSTRAP_ENV} (at least 16 characters) in the site "
            "pod and in the worker pods: a random secret from a Kubernetes Secret, with which "
            "the workers fetch the site's registration secrets; the site chart and "
            "'dask federation kubernetes-spec' create it"
        )
    return token


def _fernet(token: str) -> Fernet:
    # HKDF: the token is a password-like string; Fernet needs a 32-byte key
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"dask-federation worker secrets").derive(token.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def seal_secrets(values: dict[str, str], token: str) -> bytes:
    """``values`` encrypted and authenticated with a key derived from ``token``."""
    return _fernet(token).encrypt(json.dumps(values).encode())


def open_secrets(sealed: bytes, token: str) -> dict[str, str]:
    """The values :func:`seal_secrets` sealed with the same ``token``.

    Raises :class:`PermissionError` if ``sealed`` was made with another token, was
    altered, or is older than :data:`SECRETS_TTL` seconds.
    """
    try:
        return json.loads(_fernet(token).decrypt(sealed, ttl=SECRETS_TTL))
    except InvalidToken:
        raise PermissionError(
            f"the site's worker secrets do not open with this pod's ${BOOTSTRAP_ENV}: the "
            "worker pods and the site pod must mount the same Secret (or the answer is "
            f"older than {SECRETS_TTL} s: check the clocks)"
        ) from None


async def fetch_worker_secrets(url: str, token: str, timeout: float) -> dict[str, str]:
    """The site's registration secrets from the site process at ``url`` (its
    :data:`SECRETS_PATH`), waiting up to ``timeout`` s while the site process starts or
    is not registered with the hub yet.

    Raises :class:`ConfigError` when the site process does not answer in time, and
    :class:`PermissionError` from :func:`open_secrets`.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = "no answer"
    while True:
        try:
            reply = await AsyncHTTPClient().fetch(url, request_timeout=10)
        except HTTPClientError as e:  # 503 until the site is registered
            last = f"HTTP {e.code}: {e.message}"
        except OSError as e:
            last = str(e)
        else:
            # outside the try: a PermissionError is an OSError, and another token will
            # not open a later answer either, so it is final, not a reason to wait
            return open_secrets(reply.body, token)
        if loop.time() > deadline:
            raise ConfigError(
                f"no worker secrets from the site process at {url} within {timeout:g} s "
                f"({last}); is the site pod running and registered with the hub?"
            )
        await asyncio.sleep(2)


def operator_manifests(
    cfg: SiteConfig, hub: str, *, config_path: str = CONFIG_PATH, name: str | None = None,
) -> list[dict[str, Any]]:
    """The ``DaskCluster`` (and, with ``adapt:``, ``DaskAutoscaler``) of a site.

    Built with dask-kubernetes' own ``make_cluster_spec``; then the scheduler container
    runs the site process and the worker containers run ``site-worker``. Volumes for the
    config and the datasets are the deployer's (the site Helm chart adds them).
    """
    from dask_kubernetes.operator import make_cluster_spec

    c = cfg.cluster
    name = name or f"fed-{cfg.site}"
    threads = c.cores // c.processes
    per_worker = parse_bytes(c.memory) // c.processes
    memory = f"{math.ceil(parse_bytes(c.memory) / 2**20)}Mi"  # a Kubernetes quantity
    resources = {
        "requests": {"cpu": str(c.cores), "memory": memory},
        "limits": {"cpu": str(c.cores), "memory": memory},
    }
    fixed = cfg.adapt.minimum if cfg.adapt else math.ceil(cfg.workers / c.processes)
    spec = make_cluster_spec(
        name=name, image=c.image, n_workers=fixed, resources=resources,
        worker_command=(
            f"dask federation site-worker {config_path} {hub} --nworkers {c.processes} "
            f"--nthreads {threads} --memory-limit {per_worker}"
        ),
    )
    if c.namespace:
        spec["metadata"]["namespace"] = c.namespace
    worker = spec["spec"]["worker"]["spec"]["containers"][0]
    # make_cluster_spec appends the worker dashboard options, which site-worker has not;
    # the operator names the scheduler pod's Service <cluster>-scheduler
    worker["args"] = worker["args"][: worker["args"].index("--dashboard")] + [
        "--secrets-from", f"http://{name}-scheduler:{API_PORT}{SECRETS_PATH}"]
    worker.pop("ports")
    bootstrap = {"name": BOOTSTRAP_ENV, "valueFrom": {"secretKeyRef": {
        "name": f"{name}-bootstrap", "key": BOOTSTRAP_KEY}}}
    worker["env"] = [bootstrap]
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["args"] = ["dask", "federation", "site", config_path, "--hub", hub,
                         "--operator-api", str(API_PORT)]
    # the site process itself is small: its workers run in the worker pods
    scheduler["resources"] = {"requests": {"cpu": "100m", "memory": "512Mi"},
                              "limits": {"memory": "1Gi"}}
    scheduler["env"] = [bootstrap]
    secret = {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": f"{name}-bootstrap",
                     **({"namespace": c.namespace} if c.namespace else {})},
        "stringData": {BOOTSTRAP_KEY: secrets.token_urlsafe(32)},
    }
    manifests = [secret, spec]
    if cfg.adapt is not None:
        autoscaler = {
            "apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler",
            "metadata": {"name": name, **({"namespace": c.namespace} if c.namespace else {})},
            # the operator counts worker pods; each runs `processes` workers
            "spec": {"cluster": name, "minimum": math.ceil(cfg.adapt.minimum / c.processes),
                     "maximum": math.ceil(cfg.adapt.maximum / c.processes)},
        }
        manifests.append(autoscaler)
    return manifests


class OperatorAPI:
    """The scheduler HTTP API the dask-kubernetes operator calls, answered for one site.

    ``GET /health``; ``GET /api/v1/adaptive_target`` → ``{"workers": n}`` (pods the
    site's demand at the hub needs, within ``adapt:``); ``POST /api/v1/retire_workers``
    with ``{"n": k}`` → ``{address: {"name": pod}}`` of the pods retired through the hub;
    ``GET /federation/v1/worker-secrets`` → the site's registration secrets sealed with
    the bootstrap token (:func:`seal_secrets`; 503 until the site is registered).

    Parameters
    ----------
    cfg:
        The site's configuration.
    hub:
        ``rpc`` factory to the hub (the site's, with its TLS).
    worker_secrets:
        The site's current registration secrets (``None`` while it is not registered).
    token:
        The bootstrap token (:func:`bootstrap_token`).
    """

    def __init__(self, cfg: SiteConfig, hub: Any,
                 worker_secrets: Callable[[], dict[str, str] | None], token: str):
        self.cfg = cfg
        self.hub = hub
        self.worker_secrets = worker_secrets
        self.token = token
        self.target = 0
        self.running = 0
        self.server: HTTPServer | None = None

    async def adaptive_target(self) -> int:
        """Pods the site needs now: workers for its demand, in pods of ``processes``."""
        async with self.hub() as hub:
            demand = await call(hub, SITE_DEMAND, site=self.cfg.site)
        self.running = len(demand["workers"])
        c = self.cfg.cluster
        workers = demand_target(demand, c.cores // c.processes)
        if self.cfg.adapt is not None:
            workers = min(max(workers, self.cfg.adapt.minimum), self.cfg.adapt.maximum)
        self.target = math.ceil(workers / c.processes)
        return self.target

    async def retire(self, n: int) -> dict[str, dict[str, str]]:
        """Retire ``n`` pods' workers (least busy first) through the hub."""
        async with self.hub() as hub:
            demand = await call(hub, SITE_DEMAND, site=self.cfg.site)
            workers = demand["workers"]
            pods: dict[str, list[str]] = {}
            for name in workers:  # site-worker names its processes POD-0, POD-1, ...
                pod = name.rsplit("-", 1)[0] if self.cfg.cluster.processes > 1 else name
                pods.setdefault(pod, []).append(name)
            busy = {p: sum(workers[w]["processing"] + workers[w]["keys"] for w in ws)
                    for p, ws in pods.items()}
            chosen = sorted(pods, key=lambda p: (busy[p], p))[:n]
            retired = await call(
                hub, RETIRE_SITE_WORKERS, site=self.cfg.site,
                names=[w for p in chosen for w in pods[p]],
            )
        gone = {p for p in chosen if all(w in retired for w in pods[p])}
        return {p: {"name": p} for p in sorted(gone)}

    def routes(self) -> list[tuple[str, type, dict]]:
        return [
            (r"/health", _Health, {}),
            (r"/api/v1/adaptive_target", _Target, {"api": self}),
            (r"/api/v1/retire_workers", _Retire, {"api": self}),
            (SECRETS_PATH, _Secrets, {"api": self}),
        ]

    def start(self, port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - in a pod
        self.server = HTTPServer(web.Application(self.routes()))
        self.server.listen(port, address)
        logger.info("Site %s: operator API on port %d", self.cfg.site, port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def status(self) -> dict[str, Any]:
        """Requested/pending/running workers, for the heartbeat (like batch jobs), as of
        the operator's last question."""
        requested = self.target * self.cfg.cluster.processes
        return {
            "type": "kubernetes", "requested": requested, "running": self.running,
            "pending": max(requested - self.running, 0), "failed": 0, "ended": 0,
            "halted": False, "pending_reason": None, "error": None,
            "minimum": self.cfg.adapt.minimum if self.cfg.adapt else self.cfg.workers,
            "maximum": self.cfg.adapt.maximum if self.cfg.adapt else self.cfg.workers,
            "adaptive": self.cfg.adapt is not None,
        }


class _Health(web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


class _Target(web.RequestHandler):
    def initialize(self, api: OperatorAPI) -> None:
        self.api = api

    async def get(self) -> None:
        self.write({"workers": await self.api.adaptive_target()})


class _Retire(web.RequestHandler):
    def initialize(self, api: OperatorAPI) -> None:
        self.api = api

    async def post(self) -> None:
        try:
            n = int(json.loads(self.request.body or b"{}").get("n", 0))
        except (ValueError, TypeError, AttributeError):
            raise web.HTTPError(400, "expected a JSON body {\"n\": number of workers}") from None
        self.write(await self.api.retire(n))


class _Secrets(web.RequestHandler):
    def initialize(self, api: OperatorAPI) -> None:
        self.api = api

    def get(self) -> None:
        values = self.api.worker_secrets()
        if values is None:
            raise web.HTTPError(503, "the site is not registered with the hub yet")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Cache-Control", "no-store")
        self.write(seal_secrets(values, self.api.token))
