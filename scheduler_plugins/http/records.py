"""The records the hub's HTTP API answers with and takes, as pydantic models.

They are the API's written contract: :mod:`.openapi` generates the OpenAPI document's
``components/schemas`` from them (``model_json_schema``), and the tests validate every
answer against that document. Field types follow what the routes send: sizes in bytes,
times as UNIX seconds, names as ``site/name``. Answers may carry more fields than listed
(``additionalProperties`` is not closed), so a new field is not a breaking change.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel

Status = Literal["pending", "running", "finished", "error", "cancelled"]


class Record(BaseModel):
    """Base of the records: documented field by field, open to more fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# -- errors -------------------------------------------------------------------------------


class ErrorBody(Record):
    status: int
    code: str = Field(examples=[
        "not_found", "bad_arguments", "unauthorized", "forbidden", "no_grant", "bad_json",
        "body_too_large", "method_failed", "result_too_large",
    ])
    message: str
    schema_: Any = Field(
        None, alias="schema", description="for bad_arguments: the arguments' JSON schema"
    )


class Error(Record):
    """Every error answer."""

    error: ErrorBody


# -- sites ------------------------------------------------------------------------------------


class SiteJobs(Record):
    """A site whose workers are batch jobs (dask-jobqueue or Kubernetes)."""

    type: Literal["slurm", "pbs", "lsf", "sge", "kubernetes"]
    requested: int | None = None
    pending: int | None = None
    running: int | None = None
    failed: int | None = None
    ended: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    adaptive: bool | None = None
    halted: bool | None = Field(None, description="stopped submitting jobs after failed starts")
    pending_reason: str | None = None
    error: str | None = Field(None, description="last failure")


class Site(Record):
    name: str
    status: Literal["connected", "no workers", "offline"]
    workers: list[str]
    nthreads: int
    memory_limit: int = Field(description="bytes, all workers")
    memory_used: int = Field(description="bytes, all workers")
    datasets: list[str]
    methods: list[str] = []
    tasks_done: int
    connectivity: Literal["direct", "outbound-only"] = "direct"
    relayed_bytes: int = Field(0, description="bytes the hub's relay carried to/from it")
    jobs: SiteJobs | None = Field(
        None, description="workers as batch jobs (null: the site runs them itself)"
    )


class SiteList(Record):
    sites: list[Site]


# -- catalog --------------------------------------------------------------------------------


class CatalogRow(Record):
    dataset: str = Field(description="site/name")
    site: str
    kind: Literal["dataset", "result"]
    variables: list[str]
    dims: dict[str, int]
    shape: list[int]
    dtype: str = Field(description="first data variable's dtype")
    dtypes: dict[str, str] = Field(description="variable -> dtype as xarray shows it at the site")
    calendars: dict[str, str] = Field(description="date variable -> calendar (noleap, 360_day …)")
    nbytes: int
    chunks: dict[str, int]
    description: str
    version: str = Field(description="changes when the dataset's data or metadata do")
    changed: float | None = Field(None, description="Unix time the site noticed this version")


class Catalog(Record):
    datasets: list[CatalogRow]


class DatasetVariable(Record):
    name: str
    dims: list[str]
    shape: list[int]
    dtype: str
    calendar: str | None
    chunks: list[int]
    nbytes: int
    attrs: dict[str, Any]
    encoding: dict[str, Any]
    is_coord: bool
    values: Any = Field(None, description="coordinate values, when they travel")


class AtSite(Record):
    """Something a site holds: its ``site`` and its ``name`` there."""

    site: str
    name: str


class Dataset(AtSite):
    dataset: str = Field(description="site/name")
    kind: Literal["dataset", "result"]
    description: str
    version: str
    dims: dict[str, int]
    nbytes: int
    data_vars: list[str]
    attrs: dict[str, Any]
    variables: list[DatasetVariable]
    provenance: dict[str, Any] | None = Field(None, description="results only")


# -- methods and jobs -------------------------------------------------------------------------


class Parameter(Record):
    name: str
    kind: str = Field(description="POSITIONAL_OR_KEYWORD, KEYWORD_ONLY, VAR_KEYWORD …")
    annotation: str
    schema_: dict[str, Any] | None = Field(alias="schema")
    has_default: bool
    default: Any = None


class Method(AtSite):
    ref: str = Field(description="site/name")
    kind: Literal["method", "workflow"]
    signature: str
    summary: str
    doc: str
    parameters: list[Parameter]
    returns: dict[str, Any] = Field(description="JSON schema of the result")
    schema_: dict[str, Any] | None = Field(
        None, alias="schema",
        description="JSON schema (2020-12) of the call's JSON object of arguments "
        "(GET methods/{site}/{name} only). Parameters with 'x-federation-type' "
        "(xarray.Dataset, xarray.DataArray, numpy.ndarray) take "
        '{"dataset": "site/name", "variable": "..."} or an ArrayJSON value.',
    )


class MethodList(Record):
    methods: list[Method]


class CallQuery(Record):
    """Query of ``POST methods/{site}/{name}``."""

    wait: float = Field(
        5.0, ge=0, le=60,
        description="seconds to wait for the result before answering 202 with the job",
    )


class CallArguments(RootModel[dict[str, Any]]):
    """A call's arguments by name; see the method's ``schema``."""


class Progress(Record):
    done: int
    total: int
    fraction: float


class JobError(Record):
    code: str
    type: str | None = None
    message: str


class Job(Record):
    id: str
    method: str = Field(description="site/name")
    status: Status
    progress: Progress
    submitted: float = Field(description="UNIX time")
    finished: float | None = Field(description="UNIX time")
    href: str
    result: Any = Field(None, description="when finished: the result in JSON form (ArrayJSON …)")
    error: JobError | None = None


# -- traffic ------------------------------------------------------------------------------------


class TrafficQuery(Record):
    """Query of ``GET traffic``."""

    window: float = Field(
        gt=0, description="only the last N seconds (from the hub's 2 s history, ≤ 10 min); "
        "without it, everything since the hub started",
    )


class Traffic(Record):
    columns: list[str] = Field(
        json_schema_extra={"const": ["source", "destination", "bytes", "nbytes", "transfers"]}
    )
    rows: list[tuple[str, str, int, int, int]] = Field(
        description="source, destination, bytes on the wire, bytes in memory, transfers"
    )
    total: int = Field(description="bytes on the wire, all rows")
    tasks: dict[str, int] = Field(description="site -> tasks run")
    window: float | None
    since: float | None = Field(description="UNIX time the window starts")
    time: float = Field(description="UNIX time")


class Index(Record):
    version: str
    dask_federation: str | None
    openapi: str
    routes: list[str]


# -- arrays and tables in JSON (.codec) ------------------------------------------------------


class Variable(Record):
    """One variable or coordinate in JSON form."""

    dims: list[str]
    shape: list[int]
    dtype: str
    data: Any = Field(description="nested lists in C order; NaN as null, dates ISO 8601")
    attrs: dict[str, Any] = {}


class NdArrayJSON(Record):
    type: Literal["ndarray"]
    dtype: str
    shape: list[int]
    data: Any


class DataArrayJSON(Variable):
    type: Literal["DataArray"]
    name: str | None
    coords: dict[str, Variable]


class DatasetJSON(Record):
    type: Literal["Dataset"]
    dims: dict[str, int]
    data_vars: dict[str, Variable]
    coords: dict[str, Variable]
    attrs: dict[str, Any]


class DataFrameJSON(Record):
    type: Literal["DataFrame"]
    columns: list[Any]
    index: list[Any]
    data: list[list[Any]]


class SeriesJSON(Record):
    type: Literal["Series"]
    name: Any
    index: list[Any]
    data: list[Any]


class ArrayJSON(RootModel[Annotated[
    Union[NdArrayJSON, DataArrayJSON, DatasetJSON, DataFrameJSON, SeriesJSON],  # noqa: UP007
    Field(discriminator="type"),
]]):
    """Arrays and tables in JSON (see :mod:`scheduler_plugins.http.codec`)."""
