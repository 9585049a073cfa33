"""Catalog records: what a site announces about a dataset, and how it travels.

A site opens each dataset twice with xarray, with the engine and options of its config:

* **as users see it** (decoded): names, dims, dtypes, attrs, encodings and calendars of
  every variable — the catalog's :attr:`DatasetInfo.variables`, shown by ``fed.catalog()``
  and the HTTP API;
* **as stored** (``decode_cf=False``): the encoded variables — packed ``int16``, times as
  numbers with ``units``/``calendar``, character arrays, ``_FillValue``, ``_Unsigned`` —
  the catalog's :attr:`DatasetInfo.stored`. Read tasks move these encoded chunks (packed,
  so smaller), and the client decodes them lazily with :func:`xarray.decode_cf` and the
  site's decoding options, so every convention xarray knows is applied by xarray itself,
  exactly as ``xr.open_dataset`` applies it at the site. Index coordinates travel with
  the entry, so the client builds real indexes (``CFTimeIndex``, ``<U6``) without a read.

A source xarray does not open in two steps (a glob combined with ``open_mfdataset``, or
an engine that decodes by itself) travels **decoded**: reads return decoded values and
only index coordinates that have no plain form (cftime) are CF-encoded with xarray's
encoder for the trip. The site checks that the client's rebuilt dataset has the same
variables, dtypes, attrs and encodings as its own, and uses the decoded form otherwise.

The file path is never part of an entry (``encoding["source"]`` is dropped). The wire
form (:meth:`DatasetInfo.to_wire`) is msgpack/JSON-plain with typed values
(:mod:`federation.wire`), so the hub never unpickles what a site sends.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xarray as xr

from .wire import pack, unpack

#: Non-index coordinates up to this size travel with the catalog; larger ones are read
#: lazily at the site like data variables. Index coordinates (``lat``, ``time``) always
#: travel: xarray needs their values to build indexes.
SMALL_COORD_BYTES = 2**20

#: ``open_options`` that xarray applies while decoding (the rest go to the engine)
DECODE_OPTIONS = (
    "mask_and_scale", "decode_times", "decode_timedelta", "use_cftime",
    "concat_characters", "decode_coords",
)

#: encoding keys that name files at the site; they never leave it
PRIVATE_ENCODING = ("source",)


def decode_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """xarray decoding keyword arguments from plain ``open_options`` values.

    A mapping for ``decode_times``/``decode_timedelta`` (YAML cannot hold a Python
    object) becomes ``xr.coders.CFDatetimeCoder(**mapping)``/``CFTimedeltaCoder``.
    """
    out = {k: options[k] for k in DECODE_OPTIONS if k in options}
    coders = {"decode_times": xr.coders.CFDatetimeCoder,
              "decode_timedelta": xr.coders.CFTimedeltaCoder}
    for key, coder in coders.items():
        if isinstance(out.get(key), Mapping):
            out[key] = coder(**out[key])
    return out


def _encoding(var: xr.Variable) -> dict[str, Any]:
    return {k: v for k, v in var.encoding.items() if k not in PRIVATE_ENCODING}


def _storage_chunks(var: xr.Variable) -> tuple[int, ...] | None:
    """The variable's storage chunks; ``None`` for contiguous (unchunked) storage."""
    enc = var.encoding
    chunks = enc.get("preferred_chunks")
    if chunks:
        return tuple(int(chunks.get(d, n)) for d, n in zip(var.dims, var.shape))
    for key in ("chunks", "chunksizes"):
        if enc.get(key):
            return tuple(int(c) for c in enc[key])
    if var.chunks:  # dask-backed (a combined glob): its chunks are per file
        return tuple(int(max(c)) for c in var.chunks)
    return None


def _calendar(var: xr.Variable) -> str | None:
    if var.dtype.kind in "Mm" or (var.dtype.kind == "O" and "calendar" in var.encoding):
        cal = var.encoding.get("calendar")
        return str(cal) if cal else ("standard" if var.dtype.kind == "M" else None)
    return None


@dataclass(frozen=True)
class VariableInfo:
    """One variable as ``xr.open_dataset`` shows it at the site (decoded)."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    #: numpy's name of the decoded dtype: ``float32``, ``<U6``, ``|S4``, ``object``
    #: (cftime dates, variable-length strings), ``datetime64[ns]``
    dtype: str
    #: storage chunks along ``dims``; ``()`` for contiguous storage
    chunks: tuple[int, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    encoding: dict[str, Any] = field(default_factory=dict)
    is_coord: bool = False
    #: the calendar of dates (``noleap``, ``360_day``, ``standard`` ...), else ``None``
    calendar: str | None = None

    @property
    def nbytes(self) -> int:
        itemsize = np.dtype(self.dtype).itemsize or 8  # objects: a pointer each
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize

    @classmethod
    def of(cls, name: str, var: xr.Variable, is_coord: bool) -> VariableInfo:
        return cls(
            name=name, dims=tuple(map(str, var.dims)), shape=tuple(map(int, var.shape)),
            dtype=str(var.dtype), chunks=_storage_chunks(var) or (),
            attrs=dict(var.attrs), encoding=_encoding(var), is_coord=is_coord,
            calendar=_calendar(var),
        )


@dataclass(frozen=True)
class StoredVariable:
    """One variable as read tasks return it: enough to build a lazy array without files."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    #: dtype as read (``dtype.str``: ``<i2``, ``|S1``, ``>f4``, ``|O``)
    dtype: str
    #: storage chunks; ``None`` for contiguous storage (then dask's ``array.chunk-size``
    #: bounds each read)
    chunks: tuple[int, ...] | None
    attrs: dict[str, Any] = field(default_factory=dict)
    encoding: dict[str, Any] = field(default_factory=dict)
    is_coord: bool = False
    #: the values of index and small coordinates, which travel with the entry
    values: np.ndarray | None = None
    #: the travelling values are CF-encoded by xarray (cftime dates of a decoded source)
    cf_encoded: bool = False
    #: reads return decoded values (dates: xarray's decoder would read a first and last
    #: element at the client to choose their dtype)
    decoded: bool = False

    @property
    def nbytes(self) -> int:
        itemsize = np.dtype(self.dtype).itemsize or 8
        return int(np.prod(self.shape, dtype=np.int64)) * itemsize

    @staticmethod
    def travels(var: xr.Variable, is_coord: bool, index: bool) -> bool:
        """Whether the values go with the catalog entry (index and small coordinates)."""
        return is_coord and (index or var.size * (var.dtype.itemsize or 8) <= SMALL_COORD_BYTES)

    @classmethod
    def of(
        cls, name: str, var: xr.Variable, is_coord: bool, index: bool, decoded: bool = False
    ) -> StoredVariable:
        values, cf_encoded, attrs = None, False, dict(var.attrs)
        if cls.travels(var, is_coord, index):
            values = np.asarray(var.values)
            try:
                pack(values)
            except TypeError:  # cftime objects: let xarray encode them for the trip
                encoded = xr.conventions.encode_cf_variable(var.to_base_variable(), name=name)
                values, cf_encoded = np.asarray(encoded.values), True
                attrs = dict(encoded.attrs)
        return cls(
            name=name, dims=tuple(map(str, var.dims)), shape=tuple(map(int, var.shape)),
            dtype=var.dtype.str, chunks=_storage_chunks(var), attrs=attrs,
            encoding=_encoding(var), is_coord=is_coord, values=values, cf_encoded=cf_encoded,
            decoded=decoded,
        )


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset as the federation knows it: ``site/name`` plus metadata, never a path."""

    site: str
    name: str
    description: str
    #: the variables as xarray shows them at the site (decoded)
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
    #: what read tasks return, per variable
    stored: dict[str, StoredVariable] = field(default_factory=dict)
    #: decoding options for :func:`xarray.decode_cf` on the client; ``None``: reads
    #: return decoded values already
    decode: dict[str, Any] | None = None
    #: the dataset's ``encoding`` (e.g. ``unlimited_dims``), without file names
    encoding: dict[str, Any] = field(default_factory=dict)
    #: Unix time the site noticed this version (``None``: not recorded)
    changed: float | None = None

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
            "dtypes": {v.name: v.dtype for v in self.variables.values()},
            "calendars": {v.name: v.calendar for v in self.variables.values() if v.calendar},
            "version": self.version,
            "changed": self.changed,
        }

    def to_wire(self) -> dict[str, Any]:
        return {
            "site": self.site, "name": self.name, "description": self.description,
            "variables": [pack(vars(v)) for v in self.variables.values()],
            "stored": [pack(vars(v)) for v in self.stored.values()],
            "attrs": pack(self.attrs), "encoding": pack(self.encoding),
            "decode": None if self.decode is None else pack(self.decode),
            "version": self.version, "replica_of": self.replica_of,
            "coords_checksum": self.coords_checksum, "egress": self.egress,
            "max_egress_bytes": self.max_egress_bytes, "changed": self.changed,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> DatasetInfo:
        def variable(kind: type, v: dict) -> Any:
            v = unpack(v)
            v.update(dims=tuple(v["dims"]), shape=tuple(v["shape"]))
            if v.get("chunks") is not None:
                v["chunks"] = tuple(v["chunks"])
            return kind(**v)

        variables = [variable(VariableInfo, v) for v in d["variables"]]
        stored = [variable(StoredVariable, v) for v in d.get("stored", ())]
        return cls(
            site=d["site"],
            name=d["name"],
            description=d.get("description", ""),
            variables={v.name: v for v in variables},
            stored={v.name: v for v in stored},
            attrs=unpack(d.get("attrs", {})),
            encoding=unpack(d.get("encoding", {})),
            decode=None if d.get("decode") is None else unpack(d["decode"]),
            version=d["version"],
            replica_of=d.get("replica_of"),
            coords_checksum=d.get("coords_checksum", ""),
            egress=d.get("egress", "any"),
            max_egress_bytes=d.get("max_egress_bytes"),
            changed=d.get("changed"),
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


def coords_checksum(ds: xr.Dataset) -> str:
    digest = hashlib.sha256()
    for name in sorted(map(str, ds.coords)):
        values = np.asarray(ds[name].values)
        digest.update(name.encode())
        if values.dtype.kind == "O":
            values = values.astype(str)
        digest.update(values.tobytes())
    return digest.hexdigest()[:16]


def _is_dates(var: xr.Variable) -> bool:
    """Decoded dates: datetime64, or cftime objects (object dtype with time units)."""
    units = str(var.encoding.get("units", ""))
    return var.dtype.kind == "M" or (var.dtype.kind == "O" and " since " in units)


def _stored(stored: xr.Dataset, shown: xr.Dataset) -> dict[str, StoredVariable]:
    """What reads return per variable: as stored, except dates that do not travel."""
    out = {}
    for k, var in stored.variables.items():
        is_coord, index = k in stored.coords, k in stored.indexes
        dates = shown.variables.get(k)
        if dates is not None and dates is not var and _is_dates(dates) and not (
            StoredVariable.travels(var, is_coord, index)
        ):
            out[str(k)] = StoredVariable.of(
                str(k), dates, is_coord=k in shown.coords, index=False, decoded=True
            )
        else:
            out[str(k)] = StoredVariable.of(str(k), var, is_coord=is_coord, index=index)
    return out


def _stable(value: Any) -> Any:
    """A JSON stand-in for ``value`` that is the same in every process (the version must
    agree between a site's processes, e.g. with ``--join``): no memory addresses, and
    sets in sorted order (their iteration order depends on the process's hash seed)."""
    if isinstance(value, (set, frozenset)):
        return sorted(_stable(v) if not isinstance(v, str) else v for v in value)
    if isinstance(value, bytes):
        return value.hex()
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def describe_dataset(
    site: str,
    name: str,
    ds: xr.Dataset,
    description: str = "",
    stamp: str = "",
    replica_of: str | None = None,
    stored: xr.Dataset | None = None,
    decode: dict[str, Any] | None = None,
) -> DatasetInfo:
    """Describe an opened dataset for the catalog.

    ``ds`` is the dataset as users see it. ``stored`` is the same source opened with
    ``decode_cf=False``, and ``decode`` the options that turn it into ``ds`` (see the
    module docstring); without them reads return ``ds``'s decoded values. ``stamp``
    (e.g. file sizes and modification times) goes into the version so keys of cached
    results change when the files change.

    Raises
    ------
    TypeError
        If an attribute or encoding value has no wire form (the message names it).
    """
    variables = {
        str(k): VariableInfo.of(str(k), v, k in ds.coords) for k, v in ds.variables.items()
    }
    info = DatasetInfo(
        site=site,
        name=name,
        description=description,
        variables=variables,
        attrs=dict(ds.attrs),
        version="",
        replica_of=replica_of,
        coords_checksum=coords_checksum(ds),
        stored=_stored(ds if stored is None else stored, ds),
        decode=None if stored is None else dict(decode or {}),
        encoding={k: v for k, v in ds.encoding.items() if k not in PRIVATE_ENCODING},
    )
    wire = info.to_wire()  # raises early, at the site, for values that cannot travel
    meta = json.dumps([wire["variables"], wire["stored"], wire["decode"]], default=_stable)
    version = hashlib.sha256(f"{site}/{name}|{meta}|{stamp}".encode()).hexdigest()[:16]
    return replace(info, version=version)
