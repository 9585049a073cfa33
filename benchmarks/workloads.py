"""The analyses, written once and run by every approach.

A workload names its inputs (``site/name``, variable, selection), a per-site
reduction and a combination step. Approaches differ only in how the inputs are
opened and where the steps run:

* *federation*: lazy inputs from ``fed.open_dataset``; nothing annotated.
* *download*: inputs fetched raw (the selection applied at the server, like an
  OPeNDAP subset), then everything computed locally with numpy.
* *hand-pinned*: lazy inputs; each input and its per-site reduction inside
  ``dask.annotate(resources={"dataset:<site>/<name>": 1})``, the combination inside
  ``dask.annotate(resources={"site:<site of the largest partial>": 1})``.
* *shared-fs*: lazy inputs, nothing annotated, on a plain scheduler whose workers can
  all read everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from federation.protocol import split_ref

#: North Atlantic box, for the regional series
REGION = {"lat": slice(40, 60), "lon": slice(300, 340)}
#: Niño 3.4 box (5°S–5°N, 170°W–120°W)
NINO34 = {"lat": slice(-5, 5), "lon": slice(190, 240)}


def _area_weights(x: xr.DataArray) -> xr.DataArray:
    return np.cos(np.deg2rad(x.lat))


def climatology_reduce(x: xr.DataArray) -> xr.Dataset:
    """Monthly climatology map and a Niño-3.4-style monthly anomaly index."""
    clim = x.groupby("time.month").mean("time")
    box = x.sel(**NINO34).mean(["lat", "lon"])
    anomaly = box.groupby("time.month") - box.groupby("time.month").mean("time")
    return xr.Dataset({"climatology": clim, "anomaly_index": anomaly.drop_vars("month")})


def area_mean(x: xr.DataArray) -> xr.DataArray:
    return x.weighted(_area_weights(x)).mean(["lat", "lon"])


def regional_mean(x: xr.DataArray) -> xr.DataArray:
    return x.mean(["lat", "lon"])


def time_maps(x: xr.DataArray) -> xr.Dataset:
    return xr.Dataset({"mean": x.mean("time"), "max": x.max("time")})


def first(partials: dict) -> xr.Dataset:
    (only,) = partials.values()
    return only if isinstance(only, xr.Dataset) else only.to_dataset()


def correlation_combine(partials: dict) -> xr.Dataset:
    a, b = partials.values()
    return xr.Dataset({"corr": xr.corr(a, b, dim="time")})


def table_combine(partials: dict) -> xr.Dataset:
    return xr.Dataset({split_ref(ref)[1]: v for ref, v in partials.items()})


@dataclass
class Workload:
    name: str
    description: str
    #: (site/name, variable, selection)
    inputs: list[tuple[str, str, dict]]
    reduce: Callable[[xr.DataArray], xr.DataArray | xr.Dataset]
    combine: Callable[[dict], xr.Dataset]
    #: the combination computes something (pin it to one site) or only collects
    combine_computes: bool = False
    notes: list[str] = field(default_factory=list)

    def minimum_bytes(self, partial_nbytes: dict[str, int], result_nbytes: int) -> int:
        """What must cross a border at least, in bytes of values (``nbytes``).

        Either every partial goes to the client, or all partials go to the site with
        the largest one, and the result to the client (whichever is smaller). For the
        correlation that is one of the two area-mean series plus the scalar: pairing
        ``a[t]`` with ``b[t]`` needs both series at one place. Not counted: the
        area-weights array xarray derives from the shared latitude coordinate (one
        task used by both sites, so one copy crosses; 1,440 bytes) and the wire
        framing of each transfer (the report's *payload / min* leaves it out too)."""
        total = sum(partial_nbytes.values())
        if not self.combine_computes:
            return total if len(partial_nbytes) > 1 else result_nbytes
        return min(total, total - max(partial_nbytes.values()) + result_nbytes)


WORKLOADS = {
    w.name: w
    for w in [
        Workload(
            "climatology",
            "awi/sst: monthly climatology map (groupby month) + Niño-3.4 anomaly index",
            [("awi/sst", "sst", {})], climatology_reduce, first,
        ),
        Workload(
            "correlation",
            "corr over time of area-weighted means of awi/sst and geomar/chl (two sites)",
            [("awi/sst", "sst", {}), ("geomar/chl", "chl", {})], area_mean,
            correlation_combine, combine_computes=True,
        ),
        Workload(
            "regional",
            "North-Atlantic box means of sst, chl and t2m from three sites in one table",
            [("awi/sst", "sst", REGION), ("geomar/chl", "chl", REGION),
             ("dkrz/t2m", "t2m", REGION)],
            regional_mean, table_combine,
        ),
        Workload(
            "memory",
            "time-mean and time-max maps of deep/sst, 4x larger than the site's worker memory",
            [("deep/sst", "sst", {})], time_maps, first,
        ),
    ]
}


def fingerprint(result: xr.Dataset) -> dict[str, float]:
    """A few numbers to check that every approach computed the same thing."""
    out = {}
    for name, v in result.data_vars.items():
        values = np.asarray(v.values, dtype="f8")
        out[name] = float(np.nansum(np.abs(values)))  # anomalies sum to ~0
        out[f"{name}.shape"] = list(values.shape)
    return out


def agrees(a: dict, b: dict, rtol: float = 1e-4) -> bool:
    if a.keys() != b.keys():
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, list):
            if va != vb:
                return False
        elif not np.isclose(va, vb, rtol=rtol, atol=1e-6 * max(1.0, abs(va))):
            return False
    return True
