"""Site configuration: the few lines of YAML a data provider writes.

Examples
--------
>>> cfg = SiteConfig.model_validate(
...     {"site": "awi", "datasets": {"sst": {"path": "/data/sst.zarr"}}}
... )
>>> cfg.workers, cfg.nthreads
(1, 2)
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from dask.utils import parse_bytes
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

#: Site and dataset names: they appear in ``site/name`` references, resource labels
#: and task keys, so they exclude ``/``, ``.``, ``:`` and whitespace.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
NAME_RULE = "letters, digits, '_' and '-', starting with a letter or digit"
#: how a site is reached: ``direct`` (its workers accept connections) or
#: ``outbound-only`` (behind a firewall; everything crossing its border goes through
#: connections the site opens to the hub's relay)
CONNECTIVITY = ("direct", "outbound-only")
#: ``open_options`` the federation sets itself: reads choose their own chunks, and a
#: worker must not keep whole variables in memory
RESERVED_OPTIONS = ("chunks", "cache")


class ConfigError(ValueError):
    """A site configuration that cannot be used; the message names the key and the fix."""


class DatasetConfig(BaseModel):
    """One dataset a site holds. Only ``path`` is required."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="what xarray opens: a file, a zarr store, a glob of files, an fsspec URL "
        "or an Icechunk repository"
    )
    description: str = ""
    engine: str | None = Field(
        default=None,
        description="an installed xarray engine (netcdf4, h5netcdf, zarr, kerchunk ...) or "
        "icechunk; guessed from the path when not given",
    )
    open_options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of xr.open_dataset (xr.open_mfdataset for a glob), "
        "e.g. group, decode_times, drop_variables, storage_options, combine, concat_dim",
    )
    replica_of: str | None = Field(
        default=None,
        description="'site/name' of another site's dataset this is an identical copy of",
    )
    egress: Literal["any", "aggregated", "none"] = Field(
        default="any",
        description="what derived from this dataset may leave the site",
    )
    max_egress_bytes: str | int | None = Field(
        default=None,
        description="with egress: aggregated, the largest result that may leave "
        "(default: 1% of the dataset's size)",
    )

    @field_validator("max_egress_bytes")
    @classmethod
    def _bytes(cls, v: str | int | None) -> str | int | None:
        if v is None:
            return v
        try:
            n = parse_bytes(v) if isinstance(v, str) else v
        except ValueError:
            n = None
        if n is None or n <= 0:
            raise ValueError(
                f"max_egress_bytes {v!r} is not a positive size like 50MB (to let nothing "
                "leave, use 'egress: none')"
            )
        return v

    @field_validator("open_options")
    @classmethod
    def _open_options(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in RESERVED_OPTIONS:
            if key in v:
                raise ValueError(
                    f"open_options.{key} is chosen by the federation; remove it (clients "
                    "pick chunks with fed.open_dataset(..., chunks=...))"
                )
        return v

    @field_validator("replica_of")
    @classmethod
    def _replica_ref(cls, v: str | None) -> str | None:
        if v is not None:
            parts = v.split("/")
            if len(parts) != 2 or not all(NAME_PATTERN.match(p) for p in parts):
                raise ValueError(f"replica_of {v!r} should be 'site/name', e.g. geomar/chl")
        return v

    @property
    def resolved_engine(self) -> str | None:
        """The engine to open with; ``None`` lets xarray choose (``netcdf`` means that
        too: netcdf4 or h5netcdf, whichever is installed)."""
        if self.engine and self.engine != "netcdf":
            return self.engine
        return "zarr" if self.path.rstrip("/").endswith(".zarr") else None


class MethodConfig(BaseModel):
    """A shared method given as a mapping: its function and what its output may release."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(description="module:function, importable at the site")
    release: Literal["any", "aggregated", "none"] | None = Field(
        default=None,
        description="egress class of the method's output (default: the class of its inputs)",
    )
    max_egress_bytes: str | int | None = Field(
        default=None, description="with release: aggregated, the largest output that may leave"
    )

    @model_validator(mode="after")
    def _limit(self) -> MethodConfig:
        if self.release == "aggregated" and self.max_egress_bytes is None:
            raise ValueError("release: aggregated needs max_egress_bytes, e.g. 1MB")
        if isinstance(self.max_egress_bytes, str):
            try:
                parse_bytes(self.max_egress_bytes)
            except ValueError:
                raise ValueError(
                    f"max_egress_bytes {self.max_egress_bytes!r} is not a size like 1MB"
                ) from None
        return self

    @property
    def limit(self) -> int | None:
        limit = self.max_egress_bytes
        return parse_bytes(limit) if isinstance(limit, str) else limit


class TLSConfig(BaseModel):
    """Mutual TLS with the federation's CA (see ``dask federation certs``)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: str
    cert: str
    key: str


class ClusterConfig(BaseModel):
    """Where the site's workers run (``cluster:``); absent: on the site machine.

    For batch systems the keys are dask-jobqueue's: one job holds ``processes`` workers
    sharing ``cores`` and ``memory``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["local", "slurm", "pbs", "lsf", "sge", "kubernetes"] = "local"
    queue: str | None = Field(default=None, description="partition/queue jobs go to")
    account: str | None = Field(default=None, description="account/project jobs are billed to")
    walltime: str | None = Field(default=None, description="job time limit, e.g. '02:00:00'")
    cores: int | None = Field(default=None, ge=1, description="cores per job")
    memory: str | None = Field(default=None, description="memory per job, e.g. 64GiB")
    processes: int = Field(default=1, ge=1, description="worker processes per job")
    job_extra: list[str] = Field(
        default_factory=list, description="extra directives of the batch system"
    )
    job_script_prologue: list[str] = Field(
        default_factory=list, description="shell lines run before the worker, e.g. module load"
    )
    python: str | None = Field(
        default=None, description="python on the compute nodes (default: the site's)"
    )
    interface: str | None = Field(default=None, description="network interface, e.g. ib0")
    log_directory: str | None = Field(
        default=None, description="where jobs write their output; failed starts quote it"
    )
    image: str | None = Field(default=None, description="kubernetes: the worker image")
    namespace: str | None = Field(default=None, description="kubernetes: the namespace")

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_bytes(v)
            except ValueError:
                raise ValueError(f"memory {v!r} is not a size like 64GiB") from None
        return v

    @model_validator(mode="after")
    def _complete(self) -> ClusterConfig:
        if self.type in ("local", "kubernetes"):
            batch = ("queue", "account", "walltime", "job_extra", "job_script_prologue")
            given = [k for k in batch if getattr(self, k)]
            if given:
                raise ValueError(
                    f"{', '.join(given)} only apply to batch systems (slurm, pbs, lsf, sge), "
                    f"not to type {self.type!r}; remove them"
                )
        if self.type == "local":
            return self
        missing = [k for k in ("cores", "memory") if getattr(self, k) is None]
        if missing:
            raise ValueError(
                f"type {self.type!r} needs {' and '.join(missing)} (per job), "
                "e.g. cores: 16, memory: 64GiB"
            )
        if self.cores % self.processes:
            raise ValueError(
                f"cores ({self.cores}) must be a multiple of processes ({self.processes}): "
                "each worker process gets cores/processes threads"
            )
        if self.type == "kubernetes" and not self.image:
            raise ValueError("type 'kubernetes' needs image: the container image of the workers")
        return self


class AdaptConfig(BaseModel):
    """Scale the site's workers with the hub's demand for the site (``adapt:``)."""

    model_config = ConfigDict(extra="forbid")

    minimum: int = Field(default=0, ge=0, description="workers kept when idle")
    maximum: int = Field(ge=1, description="most workers the site runs")
    interval: float = Field(default=1.0, gt=0, description="seconds between decisions")
    wait_count: int = Field(
        default=3, ge=1, description="idle decisions in a row before a worker is retired"
    )

    @model_validator(mode="after")
    def _order(self) -> AdaptConfig:
        if self.minimum > self.maximum:
            raise ValueError(
                f"minimum ({self.minimum}) is above maximum ({self.maximum}); swap them"
            )
        return self


class SiteConfig(BaseModel):
    """What ``dask federation site CONFIG`` reads."""

    model_config = ConfigDict(extra="forbid")

    site: str = Field(description="the site's name in the federation, e.g. 'awi'")
    hub: str | None = Field(default=None, description="hub address, e.g. tcp://hub:8786")
    workers: int = Field(default=1, ge=1, description="worker processes this site runs")
    nthreads: int = Field(default=2, ge=1, description="threads per worker")
    memory_limit: str | int = Field(default="auto", description="per worker, e.g. 4GiB")
    local_directory: str | None = Field(default=None, description="scratch/spill directory")
    connectivity: Literal["direct", "outbound-only"] | None = Field(
        default=None, description="direct | outbound-only (default: the hub's setting)"
    )
    listen_host: str | None = Field(
        default=None,
        description="site-internal address outbound-only workers listen on (127.0.0.1)",
    )
    datasets: dict[str, DatasetConfig] = Field(default_factory=dict)
    methods: dict[str, str | MethodConfig] = Field(
        default_factory=dict,
        description="shared methods: name -> module:function, or {function, release}",
    )
    workflows: dict[str, str] = Field(
        default_factory=dict, description="shared workflows: name -> module:function"
    )
    results_dir: str | None = Field(
        default=None, description="where published results are stored (zarr)"
    )
    refresh: float = Field(
        default=60, ge=0,
        description="seconds between checks of the datasets for changes (0: only on SIGHUP)",
    )
    tls: TLSConfig | None = Field(default=None, description="certificate files for tls://")
    strict: bool = Field(
        default=False, description="workers run only allow-listed callables (see README)"
    )
    strict_modules: list[str] = Field(
        default_factory=list,
        description="with strict: extra importable modules whose functions the site allows",
    )
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig,
        description="where workers run: local (default) or a batch system/Kubernetes",
    )
    adapt: AdaptConfig | None = Field(
        default=None, description="scale workers with demand {minimum, maximum}; else fixed"
    )

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, v: str | int) -> str | int:
        """What distributed's Nanny accepts, checked before the site registers (a bad value
        used to stop the site half-started)."""
        try:
            n = None if v == "auto" else parse_bytes(v) if isinstance(v, str) else int(v)
        except ValueError:
            n = -1
        if n is not None and n < 0:
            raise ValueError(
                f"memory_limit {v!r} is not a size: use e.g. 4GiB per worker, 0 for no limit, "
                "or auto (a share of this machine's memory)"
            )
        return v

    @field_validator("site")
    @classmethod
    def _site_name(cls, v: str) -> str:
        if not NAME_PATTERN.match(v):
            raise ValueError(f"site name {v!r} is not allowed; use {NAME_RULE}")
        return v

    @field_validator("datasets", "methods", "workflows")
    @classmethod
    def _names(cls, v: dict) -> dict:
        for name in v:
            if not NAME_PATTERN.match(str(name)):
                raise ValueError(f"name {name!r} is not allowed; use {NAME_RULE}")
        return v

    @field_validator("strict_modules")
    @classmethod
    def _modules(cls, v: list[str]) -> list[str]:
        for module in v:
            if not all(part.isidentifier() for part in module.split(".")):
                raise ValueError(
                    f"strict_modules: {module!r} is not a module name, e.g. awi_tools.ice"
                )
        return v

    @model_validator(mode="after")
    def _strict_modules_need_strict(self) -> SiteConfig:
        if self.strict_modules and not self.strict:
            raise ValueError(
                "strict_modules has no effect without 'strict: true'; set it or remove them"
            )
        return self

    @property
    def method_specs(self) -> dict[str, str]:
        """Shared methods: name -> ``module:function``."""
        return {n: m if isinstance(m, str) else m.function for n, m in self.methods.items()}

    @model_validator(mode="after")
    def _adapt_needs_cluster(self) -> SiteConfig:
        if self.adapt is not None and self.cluster.type == "local":
            raise ValueError(
                "adapt needs workers started on demand: set cluster.type (slurm, pbs, lsf, "
                "sge or kubernetes), or remove adapt and set workers:"
            )
        return self

    @field_validator("methods", "workflows")
    @classmethod
    def _specs(cls, v: dict[str, str | MethodConfig]) -> dict[str, str | MethodConfig]:
        for name, method in v.items():
            spec = method if isinstance(method, str) else method.function
            module, _, func = spec.partition(":")
            if not module or not func:
                raise ValueError(
                    f"{name}: {spec!r} should be 'module:function', e.g. awi_tools.ice:extent"
                )
        return v


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a site must hear about it."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} on line {line} (first on line {seen[key]}); "
                    "each dataset name may appear only once — rename or remove one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _describe(err: dict) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = err["loc"][:-1]
        allowed = {"datasets": DatasetConfig, "cluster": ClusterConfig, "adapt": AdaptConfig}.get(
            parent[0] if parent else None, SiteConfig
        )
        return (
            f"unknown key {where!r}; allowed keys here: "
            + ", ".join(allowed.model_fields)
            + " (check the spelling)"
        )
    if kind == "missing":
        return f"missing required key {where!r}"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def parse_site_config(text: str, source: str = "<config>") -> SiteConfig:
    """Parse and validate YAML text; raise :class:`ConfigError` naming the key and the fix."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping with at least 'site:' and 'datasets:', "
            f"got {type(raw).__name__}"
        )
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as e:
        problems = "\n  ".join(_describe(err) for err in e.errors())
        raise ConfigError(f"{source}: invalid site configuration:\n  {problems}") from None


def load_site_config(path: str | os.PathLike) -> SiteConfig:
    """Read a site's YAML file; relative dataset paths resolve against the file's folder.

    Checks that every dataset path exists, so a typo stops the site at start-up.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read site configuration {path}: {e.strerror}") from None
    cfg = parse_site_config(text, source=str(path))
    base = path.resolve().parent
    if cfg.results_dir is not None:
        results = Path(os.path.expanduser(cfg.results_dir))
        cfg.results_dir = str(results if results.is_absolute() else base / results)
    if cfg.cluster.log_directory is not None:
        logs = Path(os.path.expanduser(cfg.cluster.log_directory))
        cfg.cluster.log_directory = str(logs if logs.is_absolute() else base / logs)
    for name, ds in cfg.datasets.items():
        if "://" in ds.path:  # an fsspec URL: the engine checks it when the site opens it
            continue
        p = Path(os.path.expanduser(ds.path))
        ds.path = str(p if p.is_absolute() else base / p)
        check_dataset_path(name, ds, source=str(path))
    return cfg


def check_dataset_path(name: str, ds: DatasetConfig, source: str = "<config>") -> None:
    if glob.has_magic(ds.path):
        if not glob.glob(ds.path):
            raise ConfigError(
                f"{source}: datasets.{name}.path: no file matches {ds.path!r}; "
                "fix the pattern or the folder"
            )
        return
    if not os.path.exists(ds.path):
        raise ConfigError(
            f"{source}: datasets.{name}.path: {ds.path!r} does not exist; "
            "fix the path (relative paths are relative to the config file)"
        )
    if not os.access(ds.path, os.R_OK):
        raise ConfigError(
            f"{source}: datasets.{name}.path: {ds.path!r} is not readable by this user; "
            "fix its permissions"
        )
