"""The hub's JSON HTTP API, the JavaScript client and the explorer page.

Tornado handlers added to the scheduler's own HTTP server (the dashboard port), all
under ``<dashboard prefix>/federation/``:

====================================  ======================================================
``GET  api/v1/sites``                 sites: status, workers, threads, memory, datasets, methods
``GET  api/v1/catalog``               datasets and published results, one row each
``GET  api/v1/datasets/{site}/{name}`` metadata of one dataset (variables, coordinates, attrs)
``GET  api/v1/methods``               shared methods and workflows
``GET  api/v1/methods/{site}/{name}`` one method: signature, docstring, JSON schema of arguments
``POST api/v1/methods/{site}/{name}`` call it with a JSON object of arguments (see below)
``GET  api/v1/jobs/{id}``             status, progress and result of a call; ``DELETE`` cancels
``GET  api/v1/traffic``               bytes across site borders; ``?window=60``: last minute
``GET  api/v1/openapi.json``          OpenAPI 3.1 description (no token needed)
``GET  client.js``, ``client.d.ts``    the JavaScript client (ES module) and its types
``GET  explorer``                     example page built on the JavaScript client
====================================  ======================================================

**Calls.** ``POST methods/{site}/{name}?wait=5`` validates the arguments against the
method's schema (400 naming the parameter), submits :func:`federation.methods.run_method`
through a client of the hub's own scheduler — the routing plugin runs it at the owning
site — and encodes the result to JSON next to it (:mod:`.http_json`). If it finishes
within ``wait`` seconds (default 5, at most 60; ``0`` or ``Prefer: respond-async``
never waits) and its JSON is small (``federation.http.inline-bytes``, 1 MiB) the answer
is ``200`` with the job and its ``result``; otherwise ``202`` with the job's ``id`` and
``Location``, to poll with ``GET jobs/{id}``. Parameters of type ``xarray.Dataset`` /
``DataArray`` also take ``{"dataset": "site/name", "variable": "..."}``: the federated
dataset, lazily, so the method reads it where it lives.

**Errors** are ``{"error": {"status": 404, "code": "not_found", "message": "..."}}``.

**Access tokens** (dask config; none configured means the API is open)::

    federation:
      http:
        tokens: ["s3cret", ...]            # or DASK_FEDERATION__HTTP__TOKENS='["s3cret"]'
        tokens-file: /etc/federation/tokens # one token per line, '#' comments; re-read on change

With tokens, every API request needs ``Authorization: Bearer <token>`` (401 without
one, 403 with a wrong one); a job is only visible with the token that started it.
``tokens`` may also map token -> user name (file lines ``TOKEN USER``): with
``federation.grants`` configured, a call needs a grant for the method and for every
dataset passed by reference, as that user (403 ``no_grant``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
from dask.utils import parse_bytes
from distributed import SchedulerPlugin
from tornado import web

import federation
from federation.catalog import DatasetInfo
from federation.errors import UnknownDatasetError

from .http_json import to_jsonable
from .http_openapi import openapi_document
from .state import FederationState

if TYPE_CHECKING:
    from distributed import Client
    from distributed.scheduler import Scheduler

logger = logging.getLogger(__name__)

API_PATH = "federation/api/v1"
JS_DIR = Path(federation.__file__).parent / "js"
NAME = r"([A-Za-z0-9_.-]+)"

try:  # shared methods (issue 3)
    from federation.errors import ArgumentError, UnknownMethodError
    from federation.methods import run_method, validate_arguments
except ImportError:  # pragma: no cover - an older federation package
    ArgumentError = UnknownMethodError = None  # type: ignore[assignment,misc]
    run_method = validate_arguments = None  # type: ignore[assignment]


def _config(key: str) -> Any:
    return dask.config.get(f"federation.http.{key}")


def http_prefix(scheduler: Scheduler) -> str:
    """The dashboard's URL prefix ("" or e.g. "/dask"), as distributed mounted it."""
    for app in getattr(scheduler.http_application, "applications", ()):
        prefix = getattr(app, "prefix", None)
        if isinstance(prefix, str) and hasattr(app, "app_paths"):  # a BokehTornado
            return prefix.rstrip("/")
    return ""


# -- errors ------------------------------------------------------------------------------


class ApiError(web.HTTPError):
    """An error answered as JSON: ``{"error": {"status", "code", "message", ...}}``."""

    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(status, reason=None)
        self.code = code
        self.message = message
        self.extra = extra


def _domain_error(e: BaseException) -> ApiError | None:
    if isinstance(e, ApiError):
        return e
    if isinstance(e, UnknownDatasetError) or (
        UnknownMethodError is not None and isinstance(e, UnknownMethodError)
    ):
        return ApiError(404, "not_found", str(e))
    if ArgumentError is not None and isinstance(e, ArgumentError):
        return ApiError(400, "bad_arguments", str(e))
    return None


# -- access tokens -------------------------------------------------------------------------


class Tokens:
    """Tokens from ``federation.http.tokens`` and ``federation.http.tokens-file``.

    ``tokens`` is a list of tokens, or a mapping token -> user name; a file line is
    ``TOKEN`` or ``TOKEN USER``. The user name is who the caller is for
    ``federation.grants`` (a token without one is anonymous).
    """

    def __init__(self) -> None:
        self._file: tuple[str, float, dict[str, str | None]] | None = None

    def _from_file(self, path: str) -> dict[str, str | None]:
        path = os.path.expanduser(str(path))
        try:
            mtime = os.stat(path).st_mtime
            if self._file is None or self._file[:2] != (path, mtime):
                tokens: dict[str, str | None] = {}
                for line in Path(path).read_text().splitlines():
                    fields = line.split("#", 1)[0].split()
                    if fields:
                        tokens[fields[0]] = fields[1] if len(fields) > 1 else None
                self._file = (path, mtime, tokens)
        except OSError as e:
            logger.error("Cannot read federation.http.tokens-file %s: %s", path, e)
            return {}  # configured but unreadable: nobody gets in
        return self._file[2]

    def get(self) -> dict[str, str | None] | None:
        """Valid token -> user name, or ``None`` if no tokens are configured (open API)."""
        listed = _config("tokens")
        path = _config("tokens-file")
        if not listed and not path:
            return None
        if isinstance(listed, str):
            listed = listed.replace(",", " ").split()
        if isinstance(listed, dict):
            tokens = {str(t): (str(u) if u else None) for t, u in listed.items() if t}
        else:
            tokens = {str(t): None for t in listed or () if str(t)}
        if path:
            tokens.update(self._from_file(path))
        return tokens


# -- jobs ------------------------------------------------------------------------------------


@dataclass
class Job:
    id: str
    method: str
    owner: str | None
    keys: set = field(default_factory=set)
    done: int = 0
    submitted: float = field(default_factory=time.time)
    finished: float | None = None
    status: str = "pending"  # pending, running, finished, error, cancelled
    result: str | None = None  # JSON text
    error: dict[str, Any] | None = None
    future: Any = None
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def to_json(self, prefix: str, result: bool = True) -> str:
        total = max(len(self.keys), 1)
        done = total if self.status == "finished" else min(self.done, total)
        meta: dict[str, Any] = {
            "id": self.id,
            "method": self.method,
            "status": self.status,
            "progress": {"done": done, "total": total, "fraction": done / total},
            "submitted": self.submitted,
            "finished": self.finished,
            "href": f"{prefix}/{API_PATH}/jobs/{self.id}",
        }
        if self.error is not None:
            meta["error"] = self.error
        text = json.dumps(meta)
        if result and self.result is not None:
            return f'{text[:-1]}, "result": {self.result}}}'
        return text


# -- the plugin --------------------------------------------------------------------------------


class HttpApiPlugin(SchedulerPlugin):
    """Adds the HTTP API, ``client.js`` and the explorer page to the dashboard server."""

    name = "federation-http"

    def __init__(self, state: FederationState):
        self.state = state
        self.tokens = Tokens()
        self.jobs: dict[str, Job] = {}
        self._job_of_key: dict[Any, Job] = {}
        self._client: Client | None = None
        self._client_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self.prefix = ""

    @property
    def scheduler(self) -> Scheduler:
        return self.state.scheduler

    async def start(self, scheduler: Scheduler) -> None:
        app = getattr(scheduler, "http_application", None)
        if app is None:
            return
        self.prefix = http_prefix(scheduler)
        app.add_handlers(r".*$", self.routes(self.prefix))

    def routes(self, prefix: str) -> list[tuple]:
        api = f"{prefix}/{API_PATH}"
        kw = {"api": self}
        return [
            (rf"{api}/?", IndexHandler, kw),
            (rf"{api}/openapi.json", OpenApiHandler, kw),
            (rf"{api}/sites", SitesHandler, kw),
            (rf"{api}/catalog", CatalogHandler, kw),
            (rf"{api}/datasets/{NAME}/(.+)", DatasetHandler, kw),
            (rf"{api}/methods", MethodsHandler, kw),
            (rf"{api}/methods/{NAME}/{NAME}", MethodHandler, kw),
            (rf"{api}/jobs/([A-Za-z0-9_-]+)", JobHandler, kw),
            (rf"{api}/traffic", TrafficHandler, kw),
            (rf"{api}/.*", NotFoundHandler, kw),
            (rf"{prefix}/federation/(client\.js|client\.d\.ts)", StaticHandler, kw),
            (rf"{prefix}/federation/(explorer)(?:\.html)?", StaticHandler, kw),
        ]

    # -- jobs ------------------------------------------------------------------------------

    async def client(self) -> Client:
        async with self._client_lock:
            if self._client is None:
                from distributed import Client

                # the hub's own security: with TLS, calls are submitted as the hub, after
                # BaseHandler.check_grant checked the caller's grants
                self._client = await Client(
                    self.scheduler.address, asynchronous=True, name="federation-http",
                    timeout="20s", security=self.scheduler.security,
                )
                identities = getattr(self.state, "client_identity", None)
                if isinstance(identities, dict):  # also over plain TCP, it is the hub
                    identities[self._client.id] = ("hub", "http-api")
            return self._client

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and self._job_of_key:
            job = self._job_of_key.get(key)
            if job is not None:
                job.done += 1
                if job.status == "pending":
                    job.status = "running"
        elif finish == "processing" and self._job_of_key:
            job = self._job_of_key.get(key)
            if job is not None and job.status == "pending":
                job.status = "running"

    def prune(self) -> None:
        ttl = float(_config("job-ttl"))
        now = time.time()
        for job_id, job in list(self.jobs.items()):
            if job.finished is not None and now - job.finished > ttl:
                del self.jobs[job_id]

    async def submit(self, ref: str, kwargs: dict[str, Any], owner: str | None) -> Job:
        from .http_json import encode_result

        client = await self.client()
        job = Job(id=secrets.token_urlsafe(12), method=ref, owner=owner)
        call = dask.delayed(run_method, pure=False)(ref, **kwargs)
        encoded = dask.delayed(encode_result, pure=False)(
            call, dask_key_name=f"federation-http-result-{job.id}"
        )
        job.keys = set(dict(encoded.__dask_graph__()))
        for key in job.keys:
            self._job_of_key[key] = job
        self.jobs[job.id] = job
        job.future = client.compute(encoded)
        task = asyncio.create_task(self._watch(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _watch(self, job: Job) -> None:
        limit = int(_config("max-result-bytes"))
        try:
            text = await job.future
            if len(text) > limit:
                job.status = "error"
                job.error = {
                    "code": "result_too_large",
                    "message": f"the result's JSON form has {len(text)} bytes, more than "
                    f"federation.http.max-result-bytes ({limit}); reduce it in the method, "
                    "or publish it as a result and read it with the Python client",
                }
            else:
                job.result = text
                job.status = "finished"
        except asyncio.CancelledError:
            job.status = "cancelled"
        except Exception as e:
            job.status = "error"
            api = _domain_error(e)
            job.error = {
                "code": api.code if api else "method_failed",
                "type": type(e).__name__,
                "message": api.message if api else str(e),
            }
        finally:
            job.finished = time.time()
            for key in job.keys:
                self._job_of_key.pop(key, None)
            job.future = None  # the scheduler may forget the tasks
            job.event.set()
            self.prune()

    async def cancel(self, job: Job) -> None:
        if job.future is not None and not job.event.is_set():
            await job.future.cancel()
            job.status = "cancelled"

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.close()
            self._client = None


# -- handlers -----------------------------------------------------------------------------------


class BaseHandler(web.RequestHandler):
    """JSON responses, CORS, bearer-token checks and JSON errors."""

    public = False

    def initialize(self, api: HttpApiPlugin) -> None:
        self.api = api
        self.state = api.state
        self.owner: str | None = None
        self.user: str | None = None

    def set_default_headers(self) -> None:
        origin = _config("allow-origin")
        if origin:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Prefer")
            self.set_header("Access-Control-Allow-Methods", "GET, POST, DELETE, OPTIONS")
            self.set_header("Access-Control-Expose-Headers", "Location")
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def options(self, *args: Any) -> None:  # CORS preflight
        self.set_status(204)
        self.finish()

    def prepare(self) -> None:
        if self.request.method == "OPTIONS" or self.public:
            return
        tokens = self.api.tokens.get()
        if tokens is None:
            return
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401, "unauthorized",
                "this hub requires an access token: send 'Authorization: Bearer <token>'",
            )
        for known, user in tokens.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                self.user = user
                break
        else:
            raise ApiError(403, "forbidden", "the access token is not valid for this hub")
        self.owner = hashlib.sha256(token.encode()).hexdigest()[:16]

    def check_grant(self, ref: str) -> None:
        """``federation.grants``, for the token's user, as the trust plugin checks graphs
        (the hub submits the call itself, so it must check here)."""
        grants = getattr(self.state, "grants", None)
        if grants is not None and grants.enabled and not grants.allows(self.user, ref):
            who = f"user {self.user!r}" if self.user else "an anonymous caller"
            raise ApiError(
                403, "no_grant",
                f"{who} has no grant for {ref!r}; ask the federation's operators to add it "
                "to federation.grants",
            )

    def granted(self, ref: str) -> bool:
        """Whether the token's user may see and use ``ref`` (as the Python API filters)."""
        grants = getattr(self.state, "grants", None)
        return grants is None or not grants.enabled or grants.allows(self.user, ref)

    def granted_site(self, site: str) -> bool:
        grants = getattr(self.state, "grants", None)
        return grants is None or not grants.enabled or grants.allows_site(self.user, site)

    def send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(value if isinstance(value, str) else json.dumps(to_jsonable(value)))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        api = _domain_error(exc) if exc is not None else None
        if api is None:
            code = "internal_error" if status_code >= 500 else "http_error"
            message = self._reason
            if exc is not None and not isinstance(exc, web.HTTPError):
                message = f"{type(exc).__name__}: {exc}"
            api = ApiError(status_code, code, message)
        self.set_status(api.status_code)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        if api.status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="dask-federation"')
        body = {"status": api.status_code, "code": api.code, "message": api.message, **api.extra}
        self.finish(json.dumps({"error": to_jsonable(body)}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if _domain_error(value) is not None:
            return  # an answer, not a server fault
        super().log_exception(typ, value, tb)

    def json_body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        limit = parse_bytes(_config("max-body-bytes"))
        if len(self.request.body) > limit:
            raise ApiError(
                413, "body_too_large",
                f"the request body has {len(self.request.body):,} bytes, more than "
                f"federation.http.max-body-bytes ({limit:,}); pass large data as a dataset "
                "reference ({\"dataset\": \"site/name\"}) instead",
            )
        try:
            body = json.loads(self.request.body)
        except ValueError as e:
            raise ApiError(400, "bad_json", f"the request body is not valid JSON: {e}") from None
        except RecursionError:
            raise ApiError(
                400, "bad_json", "the request body nests JSON arrays/objects too deeply"
            ) from None
        if not isinstance(body, dict):
            raise ApiError(
                400, "bad_arguments",
                f"the request body must be a JSON object of arguments, not {type(body).__name__}",
            )
        return body

    def require_methods(self) -> None:
        if run_method is None or not hasattr(self.state, "methods"):
            raise ApiError(404, "no_methods_support", "this hub does not support shared methods")


class NotFoundHandler(BaseHandler):
    def get(self, *args: Any) -> None:
        raise ApiError(
            404, "not_found",
            f"no API route {self.request.path!r}; see {self.api.prefix}/{API_PATH}/openapi.json",
        )

    post = delete = get


class IndexHandler(BaseHandler):
    def get(self) -> None:
        base = f"{self.api.prefix}/{API_PATH}"
        self.send_json({
            "version": "v1",
            "dask_federation": getattr(federation, "__version__", None),
            "openapi": f"{base}/openapi.json",
            "routes": [f"{base}/{r}" for r in (
                "sites", "catalog", "datasets/{site}/{name}", "methods",
                "methods/{site}/{name}", "jobs/{id}", "traffic",
            )],
        })


class OpenApiHandler(BaseHandler):
    public = True

    def get(self) -> None:
        self.send_json(openapi_document(self.api.prefix))


class SitesHandler(BaseHandler):
    def get(self) -> None:
        grants = getattr(self.state, "grants", None)
        sites = [
            {"name": name, **(grants.site_view(self.user, name, info) if grants else info)}
            for name, info in self.state.sites_info().items()
        ]
        self.send_json({"sites": sites})


def _result_names(state: FederationState) -> set[str]:
    return {
        f"{record.name}/{name}"
        for record in state.sites.values()
        for name in getattr(record, "results", {})
    }


class CatalogHandler(BaseHandler):
    def get(self) -> None:
        results = _result_names(self.state)
        rows = []
        for ref, info in sorted(self.state.datasets().items()):
            if self.granted(ref):
                rows.append({**info.summary(), "kind": "result" if ref in results else "dataset"})
        self.send_json({"datasets": rows})


def dataset_json(info: DatasetInfo) -> dict[str, Any]:
    """A dataset's metadata as xarray shows it at its site: real dtypes, calendars,
    attrs, encodings, and the values of the coordinates the catalog carries."""
    from federation.lazy import catalog_coordinates

    coords = catalog_coordinates(info)
    variables = []
    for v in info.variables.values():
        d: dict[str, Any] = {
            "name": v.name, "dims": list(v.dims), "shape": list(v.shape), "dtype": v.dtype,
            "calendar": v.calendar, "chunks": list(v.chunks), "nbytes": v.nbytes,
            "attrs": to_jsonable(v.attrs), "encoding": to_jsonable(v.encoding),
            "is_coord": v.is_coord,
        }
        if v.name in coords.variables:
            d["values"] = to_jsonable(coords.variables[v.name].values)["data"]
        variables.append(d)
    return {
        "dataset": info.ref, "site": info.site, "name": info.name,
        "description": info.description, "version": info.version, "dims": info.dims,
        "nbytes": info.nbytes, "data_vars": info.data_vars, "attrs": to_jsonable(info.attrs),
        "variables": variables,
    }


class DatasetHandler(BaseHandler):
    def get(self, site: str, name: str) -> None:
        ref = f"{site}/{name}"
        info = self.state.dataset(ref)  # raises with close matches
        self.check_grant(info.ref)
        out = dataset_json(info)
        out["kind"] = "dataset"
        if info.ref in _result_names(self.state):
            out["kind"] = "result"
            out["provenance"] = self.state.sites[info.site].results[info.name][1]
        self.send_json(out)


def method_json(info: Any) -> dict[str, Any]:
    """A method's description plus the JSON schema of its keyword arguments."""
    d = info.to_wire()
    properties: dict[str, Any] = {}
    required = []
    extra = False
    for p in d["parameters"]:
        if p["kind"] == "VAR_KEYWORD":
            extra = True
            continue
        if p["kind"] in ("VAR_POSITIONAL", "POSITIONAL_ONLY"):
            continue
        schema = dict(p["schema"] or {})
        if p.get("annotation") and "title" not in schema:
            schema["title"] = p["name"]
        if p.get("has_default"):
            schema.setdefault("default", p["default"])
        else:
            required.append(p["name"])
        properties[p["name"]] = schema
    d["ref"] = info.ref
    d["schema"] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": info.ref,
        "description": d.get("summary", ""),
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": extra,
    }
    return d


class MethodsHandler(BaseHandler):
    def get(self) -> None:
        if run_method is None or not hasattr(self.state, "methods"):
            self.send_json({"methods": [], "supported": False})
            return
        methods = [
            method_json(m) for ref, m in sorted(self.state.methods().items()) if self.granted(ref)
        ]
        for m in methods:
            m.pop("schema", None)
        self.send_json({"methods": methods})


def _decode_argument(state: FederationState, param: dict[str, Any], value: Any) -> Any:
    """JSON values for array parameters: a federated dataset reference or a tagged array."""
    kind = (param.get("schema") or {}).get("x-federation-type")
    if not kind or not isinstance(value, dict):
        return value
    import numpy as np
    import xarray as xr

    from federation.lazy import build_dataset

    name = param["name"]
    if "dataset" in value:
        ds = build_dataset(state.dataset(str(value["dataset"])), value.get("chunks"))
        variable = value.get("variable")
        if kind == "xarray.Dataset":
            return ds if variable is None else ds[[variable] if isinstance(variable, str)
                                                   else list(variable)]
        if variable is None:
            if len(ds.data_vars) != 1:
                raise ApiError(
                    400, "bad_arguments",
                    f"parameter {name!r}: say which variable of {value['dataset']!r} "
                    f"with 'variable' (one of {sorted(ds.data_vars)})",
                )
            variable = next(iter(ds.data_vars))
        if variable not in ds.data_vars:
            raise ApiError(
                400, "bad_arguments",
                f"parameter {name!r}: {value['dataset']!r} has no variable {variable!r}; "
                f"it has {sorted(ds.data_vars)}",
            )
        da = ds[variable]
        return da if kind == "xarray.DataArray" else da.data
    def array(v: dict[str, Any]) -> np.ndarray:
        if v.get("dtype"):
            return np.asarray(v["data"], dtype=v["dtype"])  # null -> NaN / NaT
        arr = np.asarray(v["data"])
        if arr.dtype == object:  # numbers and nulls
            try:
                return arr.astype(float)
            except (TypeError, ValueError):
                pass
        return arr

    def variable(v: dict[str, Any]) -> xr.Variable:
        return xr.Variable(v["dims"], array(v), attrs=v.get("attrs"))

    tag = value.get("type", "DataArray" if "dims" in value else "ndarray")
    try:
        if tag == "ndarray":
            arr = array(value)
            return arr if kind == "numpy.ndarray" else xr.DataArray(arr)
        if tag == "DataArray":
            da = xr.DataArray(
                variable(value), name=value.get("name"),
                coords={k: variable(c) for k, c in (value.get("coords") or {}).items()},
            )
            if kind == "numpy.ndarray":
                return da.values
            return da if kind == "xarray.DataArray" else da.to_dataset(name=da.name or "data")
        if tag == "Dataset":
            return xr.Dataset(
                {k: variable(v) for k, v in value.get("data_vars", {}).items()},
                coords={k: variable(c) for k, c in (value.get("coords") or {}).items()},
                attrs=value.get("attrs"),
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ApiError(
            400, "bad_arguments", f"parameter {name!r}: not a valid {kind} in JSON form: {e}"
        ) from None
    raise ApiError(
        400, "bad_arguments",
        f"parameter {name!r} expects {kind}: give {{\"dataset\": \"site/name\"}} or its JSON "
        f"form ({{\"type\": \"ndarray\" | \"DataArray\" | \"Dataset\", ...}}), not type {tag!r}",
    )


class MethodHandler(BaseHandler):
    def get(self, site: str, name: str) -> None:
        self.require_methods()
        info = self.state.method(f"{site}/{name}")
        self.check_grant(info.ref)
        self.send_json(method_json(info))

    async def post(self, site: str, name: str) -> None:
        self.require_methods()
        info = self.state.method(f"{site}/{name}")
        self.check_grant(info.ref)
        described = method_json(info)
        kwargs = self.json_body()
        for value in kwargs.values():
            if isinstance(value, dict) and isinstance(value.get("dataset"), str):
                self.check_grant(self.state.dataset(value["dataset"]).ref)
        params = {p["name"]: p for p in described["parameters"]}
        try:
            kwargs = {
                k: _decode_argument(self.state, params[k], v) if k in params else v
                for k, v in kwargs.items()
            }
            kwargs = validate_arguments(info, kwargs)
        except ApiError as e:
            e.extra.setdefault("schema", described["schema"])
            raise
        except Exception as e:
            api = _domain_error(e)
            if api is None:
                raise
            api.extra["schema"] = described["schema"]
            raise api from None
        wait = self.get_query_argument("wait", "5")
        try:
            wait_s = float(wait)
            if not 0 <= wait_s < math.inf:
                raise ValueError
        except ValueError:
            raise ApiError(
                400, "bad_request", f"wait={wait!r} is not a number of seconds >= 0 (at most 60 "
                "are used)",
            ) from None
        wait_s = min(wait_s, 60.0)
        if "respond-async" in self.request.headers.get("Prefer", ""):
            wait_s = 0.0
        self.api.prune()
        job = await self.api.submit(info.ref, kwargs, self.owner)
        if wait_s > 0:
            try:
                await asyncio.wait_for(job.event.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
        inline = int(_config("inline-bytes"))
        if job.status == "finished" and len(job.result or "") <= inline:
            self.send_json(job.to_json(self.api.prefix))
        elif job.status == "error":
            err = job.error or {}
            status = 400 if err.get("code") == "bad_arguments" else 500
            body = {"status": status, **err, "job": json.loads(job.to_json(self.api.prefix))}
            self.send_json({"error": body}, status)
        else:
            self.set_header("Location", f"{self.api.prefix}/{API_PATH}/jobs/{job.id}")
            self.send_json(job.to_json(self.api.prefix, result=False), 202)


class JobHandler(BaseHandler):
    def _job(self, job_id: str) -> Job:
        job = self.api.jobs.get(job_id)
        if job is None or (job.owner is not None and job.owner != self.owner):
            raise ApiError(
                404, "not_found",
                f"no job {job_id!r} (finished jobs are kept for "
                f"{float(_config('job-ttl')):g} s)",
            )
        return job

    def get(self, job_id: str) -> None:
        self.api.prune()
        self.send_json(self._job(job_id).to_json(self.api.prefix))

    async def delete(self, job_id: str) -> None:
        job = self._job(job_id)
        await self.api.cancel(job)
        self.send_json(job.to_json(self.api.prefix, result=False))


class TrafficHandler(BaseHandler):
    async def get(self) -> None:
        window = self.get_query_argument("window", None)
        plugin = self.api.scheduler.plugins.get("federation-traffic")
        if plugin is None:
            raise ApiError(404, "not_found", "this hub does not account traffic")
        if window is None:
            await plugin.collect()
            rows, since = plugin.ledger(), None
        else:
            try:
                seconds = float(window)
                if not 0 < seconds < math.inf:  # also nan
                    raise ValueError
            except ValueError:
                raise ApiError(
                    400, "bad_request", f"window={window!r} is not a positive number of seconds"
                ) from None
            dashboard = self.api.scheduler.plugins.get("federation-dashboard")
            if dashboard is None:
                raise ApiError(404, "not_found", "this hub keeps no traffic history")
            rows, since = dashboard.history.window(seconds)
        sites = set(self.state.worker_site.values()) | set(self.state.sites)
        # only traffic between sites the user holds a grant at (and clients)
        rows = [r for r in rows if all(e not in sites or self.granted_site(e) for e in r[:2])]
        self.send_json({
            "columns": ["source", "destination", "bytes", "nbytes", "transfers"],
            "rows": rows,
            "total": sum(r[2] for r in rows),
            "tasks": {s: n for s, n in self.state.tasks_done.items() if self.granted_site(s)},
            "window": None if window is None else float(window),
            "since": since,
            "time": time.time(),
        })


class StaticHandler(BaseHandler):
    """The JavaScript client, its type declarations and the explorer page."""

    public = True
    TYPES = {
        "client.js": "text/javascript; charset=utf-8",
        "client.d.ts": "application/typescript; charset=utf-8",
        "explorer": "text/html; charset=utf-8",
    }
    FILES = {"explorer": "explorer.html"}

    def get(self, name: str) -> None:
        path = JS_DIR / self.FILES.get(name, name)
        if not path.exists():
            raise ApiError(404, "not_found", f"{path.name} is not installed with this hub")
        self.set_header("Content-Type", self.TYPES[name])
        self.set_header("Cache-Control", "no-cache")
        self.finish(path.read_bytes())
