"""The wire contract between clients, the hub, site processes and site workers.

Both sides of every call import their names and payloads from here; nothing else spells
an RPC name, a resource label, a ``site/name`` reference or a relay message.

**RPC handlers of the hub** (installed by :mod:`scheduler_plugins`; who may call which is
:data:`scheduler_plugins.handlers.TABLE`). Arguments and answers are msgpack-plain: the
hub never unpickles what a site sends.

======================== ============= ========================== ===============================
name (constant)          caller        arguments                  answer
======================== ============= ========================== ===============================
``REGISTER_SITE``        site process  site, session, datasets,   :class:`RegisterReply`
                                       methods, results,
                                       accepts_results, join,
                                       connectivity, strict
``HEARTBEAT``            site process  site, session, jobs        ``{"status": "OK"}``, or
                                                                  ``"unknown"``: register again
``UNREGISTER_SITE``      site process  site, session              ``{"status": "OK"}``
``SITE_SESSION``         site process  site, session              nothing; held open while the
                                                                  site lives
``SITE_DEMAND``          site process  site                       :class:`Demand`
``RETIRE_SITE_WORKERS``  site process  site, names                the names retired
``RELAY_RESET``          site, hub     site                       ``{"cut": n}``
``MEMBERS``              site worker   –                          :class:`Members`
``RELAY_TICKET``         anyone        target, site, token        a one-time ticket (str)
``RESULT_PUBLISHER``     site worker   site, session, ref, key    :class:`Publisher`
``ADD_RESULT``           site worker   site, session, result      ``{"status": "OK"}``
``UPDATE_DATASETS``      site process  site, session, datasets    ``{"status": "OK"}``; new
                                       (changed versions)         versions of its datasets
``CATALOG``              client        –                          ``[DatasetInfo.summary()]``
``DATASET``              client        name                       ``DatasetInfo.to_wire()``
``METHODS``              client        –                          ``[MethodInfo.to_wire()]``
``METHOD``               client        name                       ``MethodInfo.to_wire()``
``PROVENANCE``           client        name (a result)            the result's provenance
``SITES``                client        –                          ``{site: SiteStatus}``
``TRAFFIC``              client        –                          :class:`TrafficReport`
======================== ============= ========================== ===============================

**RPC handler of site workers** (installed by the site's worker plugin; only the hub
calls it, by ``broadcast``):

======================== ============= ========================== ===============================
``WORKER_TRAFFIC``       hub           –                          requester -> ``[wire bytes,
                                                                  nbytes, transfers]``
======================== ============= ========================== ===============================

Site processes serve no RPC handlers: they only call the hub.

**Resource labels.** Every worker of site ``awi`` holding dataset ``sst`` advertises
``site:awi`` and ``dataset:awi/sst`` (:func:`site_label`, :func:`dataset_label`); the
routing plugin restricts a task to a site by requiring ``1`` of a label.

**References.** Datasets and methods are ``site/name`` (:func:`ref`, :func:`split_ref`),
published results ``site/results/name`` (:func:`result_ref`, :func:`result_name`).

**Site-bound calls.** Five functions run only at the site their first argument names
(:data:`SITE_CALLS`, all in :mod:`federation.sitecalls`); the hub recognises them in task
specs by :func:`site_call_kind`; neither it nor a client imports the worker-side modules
doing their work.

**Relay messages.** One JSON object per line (:func:`relay_line`, :func:`read_relay_line`),
at most :data:`RELAY_MAX_LINE` bytes, opening a connection to the relay beside the hub:

======================== ======================== ==========================================
opening ``{"op": …}``    sent by                  fields; the relay's answer
======================== ======================== ==========================================
``RELAY_STARTTLS``       a site's control conn.   –; ``{"ok": true}``, then TLS
``RELAY_REGISTER``       a site's control conn.   endpoint, token; ``{"ok": true}``, then
                                                  dial-back requests ``{"token", "from"}``
``RELAY_CONNECT``        a peer                   ticket; ``{"ok": true}``, then raw bytes
``RELAY_ACCEPT``         the endpoint dialling    token; raw bytes
                         back
======================== ======================== ==========================================

Refusals answer ``{"ok": false, "error": "…"}`` (:func:`relay_reply`).
"""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel

# -- the hub's HTTP API -----------------------------------------------------------------------

#: the HTTP API's root below the dashboard prefix (routes: scheduler_plugins/http/routes/)
API_PATH = "federation/api/v1"

# -- RPC handlers of the hub ----------------------------------------------------------------

#: every handler the federation adds starts with this (undeclared ones are refused)
PREFIX = "federation_"

REGISTER_SITE = "federation_register_site"
HEARTBEAT = "federation_heartbeat"
UNREGISTER_SITE = "federation_unregister_site"
SITE_SESSION = "federation_site_session"
SITE_DEMAND = "federation_site_demand"
RETIRE_SITE_WORKERS = "federation_retire_site_workers"
RELAY_RESET = "federation_relay_reset"
RELAY_TICKET = "federation_relay_ticket"
MEMBERS = "federation_members"
RESULT_PUBLISHER = "federation_result_publisher"
ADD_RESULT = "federation_add_result"
UPDATE_DATASETS = "federation_update_datasets"
CATALOG = "federation_catalog"
DATASET = "federation_dataset"
METHODS = "federation_methods"
METHOD = "federation_method"
PROVENANCE = "federation_provenance"
SITES = "federation_sites"
TRAFFIC = "federation_traffic"

# -- RPC handler of site workers ------------------------------------------------------------

WORKER_TRAFFIC = "federation_worker_traffic"


async def call(rpc: Any, name: str, **kwargs: Any) -> Any:
    """Call handler ``name`` through a distributed ``rpc``/``PooledRPCCall``."""
    return await getattr(rpc, name)(**kwargs)


# -- payloads -------------------------------------------------------------------------------


class RelayAccess(BaseModel):
    """Where and how a site's listeners reach the relay beside the hub."""

    #: the relay's port on the hub's host (``None``: the hub runs no relay)
    port: int | None
    #: the site's relay token (registers its endpoints, names it to the relay)
    token: str


class RegisterReply(BaseModel):
    """The hub's answer to ``REGISTER_SITE``."""

    status: Literal["OK"] = "OK"
    #: ``direct`` or ``outbound-only``: the site's or the hub's default
    connectivity: str
    #: hex secret the site's workers check the hub's capabilities with
    capability_key: str
    relay: RelayAccess


class Members(BaseModel):
    """The federation's worker list, for workers choosing whom to dial (``MEMBERS``)."""

    #: addresses of the site workers
    workers: list[str]
    #: revoked certificate serial numbers, hexadecimal
    revoked: list[str]


class WorkerLoad(BaseModel):
    processing: int
    keys: int


class Demand(BaseModel):
    """A site's demand for workers (``SITE_DEMAND``), for adaptive scaling."""

    #: tasks waiting for the site or processing there
    tasks: int
    #: keys held in memory by its workers
    held: int
    #: worker name -> its load
    workers: dict[str, WorkerLoad]


class Publisher(BaseModel):
    """Who stores a result, and from what (``RESULT_PUBLISHER``); a dataset's version is
    the one its reads were pinned to, else the catalog's at the time of asking (``None``:
    no longer in the catalog)."""

    published_by: str
    #: ``[{"dataset": "site/name", "version": ..., "versions": [...] if several}]``
    datasets: list[dict[str, Any]]
    #: ``[{"method": "site/name", "version": ...}]``
    methods: list[dict[str, str | None]]


class SiteStatus(BaseModel):
    """One site as ``fed.sites()`` shows it (``SITES``)."""

    #: ``connected``, ``no workers`` or ``offline``
    status: str
    #: worker names
    workers: list[str | int]
    nthreads: int
    #: bytes, summed over the workers
    memory_limit: int
    memory_used: int
    datasets: list[str]
    methods: list[str]
    #: result names (``results/NAME``)
    results: list[str]
    accepts_results: bool
    tasks_done: int
    #: POSIX time of the registration (``None``: known from workers only)
    registered: float | None
    connectivity: str
    #: bytes carried through the relay to and from the site
    relayed_bytes: int
    #: batch jobs: requested/pending/running/failed (``None``: the site starts workers)
    jobs: dict[str, Any] | None


class TrafficReport(BaseModel):
    """Cumulative traffic since the hub started (``TRAFFIC``)."""

    #: ``[source, destination, wire bytes, nbytes, transfers]``; source and destination are
    #: site names, a worker address the hub cannot place, or ``client``
    rows: list[tuple[str, str, int, int, int]]
    #: site -> tasks finished there
    tasks: dict[str, int]
    #: ``"site/name (policy)"`` -> computations refused by egress policies
    refusals: dict[str, int]


class _Hint(str):
    """A type hint known only by name; shows unquoted in signatures, like the real one."""

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    kind: str  # inspect.Parameter kind name, e.g. "POSITIONAL_OR_KEYWORD"
    annotation: str
    schema: dict[str, Any]
    has_default: bool = False
    default: Any = None


@dataclass(frozen=True)
class MethodInfo:
    """What a site announces about a shared method or workflow."""

    site: str
    name: str
    kind: str  # "method" or "workflow"
    doc: str
    parameters: list[ParameterInfo]
    returns: dict[str, Any]
    return_annotation: str
    version: str
    #: egress class of the output (site config ``release:``); ``None``: its inputs' class
    release: str | None = None
    #: with release "aggregated": the largest output that may leave the site
    max_egress_bytes: int | None = None

    @property
    def ref(self) -> str:
        return ref(self.site, self.name)

    @property
    def summary(self) -> str:
        return self.doc.strip().splitlines()[0] if self.doc.strip() else ""

    @property
    def signature(self) -> str:
        return str(self.python_signature())

    def __repr__(self) -> str:
        from .display import method_text  # the client's; imported only to show one

        return method_text(self)

    def _repr_html_(self) -> str:
        from .display import method_html

        return method_html(self)

    def python_signature(self) -> inspect.Signature:
        params = [
            inspect.Parameter(
                p.name,
                getattr(inspect.Parameter, p.kind),
                default=p.default if p.has_default else inspect.Parameter.empty,
                annotation=_Hint(p.annotation) if p.annotation else inspect.Parameter.empty,
            )
            for p in self.parameters
        ]
        ret = _Hint(self.return_annotation) if self.return_annotation else inspect.Signature.empty
        return inspect.Signature(params, return_annotation=ret)

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        d["signature"] = self.signature
        d["summary"] = self.summary
        return d

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> MethodInfo:
        fields = {k: v for k, v in d.items() if k not in ("signature", "summary")}
        fields["parameters"] = [ParameterInfo(**p) for p in d["parameters"]]
        return cls(**fields)

    def __str__(self) -> str:
        return f"{self.kind} {self.ref}{self.signature}\n\n{self.doc}"


# -- resource labels ------------------------------------------------------------------------

SITE_PREFIX = "site:"
DATASET_PREFIX = "dataset:"
#: Dask resources are consumed while a task runs, so labels carry a capacity far above any
#: thread count: labels decide where a task may run, never how many run at once
LABEL_CAPACITY = 1_000_000


def site_label(site: str) -> str:
    """``site:<site>``, the label every worker of ``site`` carries."""
    return f"{SITE_PREFIX}{site}"


def dataset_label(ref: str) -> str:
    """``dataset:<site>/<name>``, the label of the workers that can read ``ref``."""
    return f"{DATASET_PREFIX}{ref}"


def label_site(label: str) -> str | None:
    """The site a ``site:`` or ``dataset:`` label points to (``None``: another label)."""
    if label.startswith(SITE_PREFIX):
        return label[len(SITE_PREFIX):]
    if label.startswith(DATASET_PREFIX):
        return site_of_ref(label[len(DATASET_PREFIX):])
    return None


def bound_site(restrictions: Mapping[str, float] | None) -> str | None:
    """The site a task's resource restrictions (or a worker's resources) bind it to."""
    for label in restrictions or ():
        if (site := label_site(label)) is not None:
            return site
    return None


def site_of(resources: Mapping[str, float] | None) -> str | None:
    """The site a worker belongs to, from its advertised resources (its ``site:`` label)."""
    for label in resources or ():
        if label.startswith(SITE_PREFIX):
            return label[len(SITE_PREFIX):]
    return None


def label_dataset(label: str) -> str | None:
    """The ``site/name`` of a ``dataset:`` label (``None``: another label)."""
    return label[len(DATASET_PREFIX):] if label.startswith(DATASET_PREFIX) else None


def describe_label(label: str) -> str:
    """A label as users read it: ``site 'awi'``, or ``site 'awi' (dataset 'awi/sst' …)``."""
    ref = label_dataset(label)
    if ref is None:
        return f"site {label_site(label)!r}"
    return f"site {site_of_ref(ref)!r} (dataset {ref!r} and its replicas)"


# -- references -----------------------------------------------------------------------------

#: Published results are datasets named ``results/<name>`` (see federation.results).
RESULTS = "results/"


def ref(site: str, name: str) -> str:
    """``site/name``."""
    return f"{site}/{name}"


def split_ref(reference: str) -> tuple[str, str]:
    """``site/name`` -> ``(site, name)``; the name may contain ``/`` (``results/x``).

    Raises
    ------
    ValueError
        For a reference without ``/``.
    """
    site, sep, name = reference.partition("/")
    if not sep:
        raise ValueError(f"{reference!r} is not a reference of the form 'site/name'")
    return site, name


def site_of_ref(reference: str) -> str:
    """The site of ``site/name`` (all of it when there is no ``/``)."""
    return reference.partition("/")[0]


def result_ref(site: str, name: str) -> str:
    """``site/results/name``: the reference of a published result."""
    return f"{site}/{RESULTS}{name}"


def result_name(reference: str) -> str | None:
    """The bare name of a result reference ``site/results/name`` (``None``: not one)."""
    rest = reference.partition("/")[2]
    return rest[len(RESULTS):] if rest.startswith(RESULTS) else None


# -- site-bound calls -----------------------------------------------------------------------

Kind = Literal["dataset", "method", "result"]

#: function name -> (module, kind of reference its first argument is)
SITE_CALLS: dict[str, tuple[str, Kind]] = {
    "read_chunk": ("federation.sitecalls", "dataset"),
    "describe_snapshot": ("federation.sitecalls", "dataset"),
    "run_method": ("federation.sitecalls", "method"),
    "write_result": ("federation.sitecalls", "result"),
    "standing_task": ("federation.sitecalls", "result"),
}


def site_call_kind(func: Callable | Any) -> Kind | None:
    """The kind of site-bound call ``func`` is (``None``: not one of :data:`SITE_CALLS`).

    Recognised by name, then confirmed to be the very function (a look-alike defined
    elsewhere is not); a module nobody imported cannot have provided ``func``, so the
    hub needs no worker module for this.
    """
    entry = SITE_CALLS.get(getattr(func, "__name__", None))  # type: ignore[arg-type]
    if entry is None:
        return None
    module = sys.modules.get(entry[0])
    return entry[1] if getattr(module, func.__name__, None) is func else None


# -- relay messages -------------------------------------------------------------------------

RELAY_STARTTLS = "starttls"
RELAY_REGISTER = "register"
RELAY_CONNECT = "connect"
RELAY_ACCEPT = "accept"
#: the longest opening line (JSON) a peer may send the relay
RELAY_MAX_LINE = 2**14


def relay_line(op: str | None = None, **fields: Any) -> bytes:
    """One relay message as a line: ``{"op": op, **fields}`` (no ``op``: a reply or a
    dial-back request)."""
    msg = {"op": op, **fields} if op is not None else fields
    return json.dumps(msg).encode() + b"\n"


def relay_reply(error: str | None = None) -> bytes:
    """The relay's answer to an opening: ``{"ok": true}`` or ``{"ok": false, "error"}``."""
    return relay_line(ok=True) if error is None else relay_line(ok=False, error=error)


def read_relay_line(line: bytes) -> dict[str, Any]:
    """Parse one relay line.

    Raises
    ------
    ValueError
        For anything but a JSON object.
    """
    msg = json.loads(line)
    if not isinstance(msg, dict):
        raise ValueError("a relay message is a JSON object")
    return msg
