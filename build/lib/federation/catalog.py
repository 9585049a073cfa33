"""Catalog records: what a site announces about a dataset, and how it travels.

A site opens its files with xarray and describes each dataset as a
:class:`DatasetInfo`: variables with dims, shape, dtype, storage chunks and attrs;
small coordinates with their values. The file path is never part of it: the hub
and clients know a dataset only as ``site/name``.

The wire form (:meth:`DatasetInfo.to_wire`) uses only msgpack/JSON-friendly types
(arrays as dtype + raw bytes), so the hub never unpickles what a site sends.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import xarray as xr

#: Non-index coordinates up to this size travel with the catalog; larger ones are read
#: lazily at the site like data variables. Index coordinates (``lat``, ``time``) always
#: travel: xarray needs their values to build indexes.
SMALL_COORD_BYTES = 2**20


def _plain(value: Any) -> Any:
    """Attribute values as plain Python, so they survive msgpack and JSON."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class VariableInfo:
    """One variable of a dataset: enough to build a lazy array without the file."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    is_coord: bool = False
    #: raw little-endian bytes for small coordinates; ``None`` means "read at the site"
    values: bytes | list | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def array(self) -> np.ndarray:
        """The embedded values of a small coordinate."""
        if self.values is None:
            raise ValueError(f"variable {self.name!r} has no embedded values")
        if isinstance(self.values, list):  # strings and other objects travel as lists
            return np.asarray(self.values, dtype=self.dtype).reshape(self.shape)
        return np.frombuffer(self.values, dtype=self.dtype).reshape(self.shape)


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the federation knows it: ``site/name`` plus metadata, never a path."""

    site: str
    name: str
    description: str
    variables: dict[str, VariableInfo]
    attrs: dict[str, Any]
    #: changes whenever the data or its metadata change; part of every task key
    version: str
    #: ``site/name`` of the dataset this one replicates, if any
    replica_of: str | None = None
    #: sha256 over the coordinates' values: replicas must match their original
    coords_checksum: str = ""
    #: what derived from it may leave its site: "any", "aggregated" or "none"
    egress: str = "any"
    #: with egress "aggregated": the largest result that may leave
    max_egress_bytes: int | None = None

    @property
    def ref(self) -> str:
        return f"{self.site}/{self.name}"

    @property
    def data_vars(self) -> list[str]:
        return [v.name for v in self.variables.values() if not v.is_coord]

    @property
    def dims(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.variables.values():
            out.update(zip(v.dims, v.shape))
        return out

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.variables.values())

    def __repr__(self) -> str:  # the dataclass repr would dump coordinate bytes
        from .display import dataset_text

        return dataset_text(self)

    def _repr_html_(self) -> str:
        from .display import dataset_html

        return dataset_html(self)

    def summary(self) -> dict[str, Any]:
        """One catalog row."""
        first = self.variables[self.data_vars[0]] if self.data_vars else None
        return {
            "dataset": self.ref,
            "site": self.site,
            "variables": self.data_vars,
            "dims": self.dims,
            "shape": first.shape if first else (),
            "dtype": first.dtype if first else "",
            "nbytes": self.nbytes,
            "chunks": dict(zip(first.dims, first.chunks)) if first else {},
            "description": self.description,
            "egress": self.egress,
        }

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        d["variables"] = [asdict(v) for v in self.variables.values()]
        return d

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> DatasetInfo:
        variables = {}
        for v in d["variables"]:
            v = dict(v, dims=tuple(v["dims"]), shape=tuple(v["shape"]), chunks=tuple(v["chunks"]))
            variables[v["name"]] = VariableInfo(**v)
        return cls(
            site=d["site"],
            name=d["name"],
            description=d.get("description", ""),
            variables=variables,
            attrs=d.get("attrs", {}),
            version=d["version"],
            replica_of=d.get("replica_of"),
            coords_checksum=d.get("coords_checksum", ""),
            egress=d.get("egress", "any"),
            max_egress_bytes=d.get("max_egress_bytes"),
        )

    def same_content_as(self, other: DatasetInfo) -> str | None:
        """Why this dataset cannot replicate ``other`` (``None`` if it can)."""
        mine = {n: (v.dims, v.shape, v.dtype) for n, v in self.variables.items()}
        theirs = {n: (v.dims, v.shape, v.dtype) for n, v in other.variables.items()}
        if mine.keys() != theirs.keys():
            return f"variables differ: {sorted(mine)} vs. {sorted(theirs)}"
        for name in mine:
            if mine[name] != theirs[name]:
                return f"variable {name!r} differs: {mine[name]} vs. {theirs[name]}"
        if self.coords_checksum != other.coords_checksum:
            return "coordinate values differ"
        return None


def _storage_chunks(var: xr.Variable) -> tuple[int, ...]:
    enc = var.encoding
    chunks = enc.get("preferred_chunks")
    if chunks:
        return tuple(int(chunks.get(d, n)) for d, n in zip(var.dims, var.shape))
    for key in ("chunks", "chunksizes"):
        if enc.get(key):
            return tuple(int(c) for c in enc[key])
    return tuple(int(n) for n in var.shape)


def coords_checksum(ds: xr.Dataset) -> str:
    digest = hashlib.sha256()
    for name in sorted(map(str, ds.coords)):
        values = np.asarray(ds[name].values)
        digest.update(name.encode())
        if values.dtype.kind == "O":
            values = values.astype(str)
        digest.update(values.tobytes())
    return digest.hexdigest()[:16]


def describe_dataset(
    site: str,
    name: str,
    ds: xr.Dataset,
    description: str = "",
    stamp: str = "",
    replica_of: str | None = None,
) -> DatasetInfo:
    """Describe an opened dataset for the catalog.

    ``stamp`` (e.g. file sizes and modification times) goes into the version so keys
    of cached results change when the files change.
    """
    variables: dict[str, VariableInfo] = {}
    for vname, var in ds.variables.items():
        is_coord = vname in ds.coords
        values: bytes | list | None = None
        small = var.size * var.dtype.itemsize <= SMALL_COORD_BYTES
        if is_coord and (vname in ds.dims or small):
            data = np.asarray(var.values)
            if data.dtype.kind in "OUS":
                values = [str(x) for x in data.ravel()]
            else:
                values = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes()
        variables[str(vname)] = VariableInfo(
            name=str(vname),
            dims=tuple(str(d) for d in var.dims),
            shape=tuple(int(n) for n in var.shape),
            dtype=str(var.dtype) if var.dtype.kind not in "OUS" else "str",
            chunks=_storage_chunks(var),
            attrs={str(k): _plain(v) for k, v in var.attrs.items()},
            is_coord=is_coord,
            values=values,
        )
    attrs = {str(k): _plain(v) for k, v in ds.attrs.items()}
    meta = json.dumps(
        {k: (v.dims, v.shape, v.dtype, v.chunks, v.attrs) for k, v in variables.items()},
        sort_keys=True,
        default=str,
    )
    version = hashlib.sha256(f"{site}/{name}|{meta}|{stamp}".encode()).hexdigest()[:16]
    return DatasetInfo(
        site=site,
        name=name,
        description=description,
        variables=variables,
        attrs=attrs,
        version=version,
        replica_of=replica_of,
        coords_checksum=coords_checksum(ds),
    )
