"""Standing computations: published results that grow with their dataset.

``fed.standing("sst-mean", fn, "awi/sst", along="time")`` publishes ``fn(dataset)`` as
result ``awi/results/sst-mean`` and registers it at the site that holds the dataset (and
stores the result). Whenever that site notices that the dataset gained steps along
``time`` (its ``refresh:`` check, or SIGHUP), it runs
:func:`federation.sitecalls.standing_task` (:mod:`federation.standing_update`) to
compute ``fn`` of the **new steps only** and append them to the result.

That is right only for per-step computations: each output step depends on its input
step alone (area means, anomalies against a fixed climatology, unit conversions,
thresholds). ``fed.standing`` checks this with a probe before anything is computed:
``fn`` of the first two steps must equal the first two steps of ``fn`` of the first
three (run at the site, on the real data). Reductions along ``time``, rolling windows,
running sums or anomalies against a climatology of the same data fail the probe and
are refused with the reason. A dataset that was replaced rather than appended to is
recomputed whole.

The registry lives next to the result, in the site's ``results_dir``
(``<name>.standing.json``, with ``fn`` pickled by cloudpickle): the result and the
computation that keeps it up to date belong together, the site is the one that sees
its data change, and both outlive hub and site restarts (a restarted site catches up
at once). Its state also goes into the result's provenance (``standing``), which the
hub keeps: ``fed.standing_list()`` and the federation page show it.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import cloudpickle
import xarray as xr

from .errors import FederationError, StrictRefusal

REGISTRY_SUFFIX = ".standing.json"
#: states of a standing computation
ACTIVE, CANCELLED, FAILED = "active", "cancelled", "failed"


class StandingError(FederationError, ValueError):
    """A computation that cannot stand: not per-step along the dimension, or unknown."""


def as_dataset(obj: Any, name: str = "data") -> xr.Dataset:
    if isinstance(obj, xr.DataArray):
        return obj.to_dataset(name=obj.name or name)
    if not isinstance(obj, xr.Dataset):
        raise StandingError(f"a standing computation returns xarray objects, not {type(obj)}")
    return obj


def probe(fn: Any, ds: xr.Dataset, along: str) -> xr.Dataset:
    """``fn(ds)`` (lazy), after checking that ``fn`` works step by step along ``along``.

    Raises
    ------
    StandingError
        Naming why ``fn`` cannot be extended by computing new steps alone.
    """
    if along not in ds.dims:
        raise StandingError(f"the dataset has no dimension {along!r}; it has {sorted(ds.dims)}")
    if ds.sizes[along] < 3:
        raise StandingError(f"the probe needs at least 3 steps along {along!r}")
    out = as_dataset(fn(ds))
    if along not in out.dims or out.sizes[along] != ds.sizes[along]:
        raise StandingError(
            f"fn keeps no {along!r} dimension of the dataset's length (it reduces or resamples "
            f"along it): new steps cannot simply be appended; publish it with "
            "fed.publish_result and recompute it when the data change"
        )
    two = as_dataset(fn(ds.isel({along: slice(0, 2)}))).compute()
    three = as_dataset(fn(ds.isel({along: slice(0, 3)}))).isel({along: slice(0, 2)}).compute()
    if not two.identical(three):
        raise StandingError(
            f"fn is not per-step along {along!r}: its first steps change when later steps "
            "are added (a reduction, window or climatology over the data itself); new "
            "steps cannot be computed alone. Use a fixed climatology, or publish it with "
            "fed.publish_result and recompute it"
        )
    return out


def registry_path(results_dir: str, name: str) -> Path:
    return Path(results_dir) / f"{name}{REGISTRY_SUFFIX}"


def load(results_dir: str, name: str) -> dict[str, Any] | None:
    path = registry_path(results_dir, name)
    return json.loads(path.read_text()) if path.exists() else None


def save(results_dir: str, name: str, entry: dict[str, Any]) -> None:
    path = registry_path(results_dir, name)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(entry, indent=2))
    tmp.replace(path)


def new_entry(fn: Any, dataset: str, along: str, steps: int, version: str) -> dict[str, Any]:
    return {
        "dataset": dataset, "along": along, "steps": steps, "version": version,
        "state": ACTIVE, "updated": time.time(), "updates": 0, "error": None,
        "fn": base64.b64encode(cloudpickle.dumps(fn)).decode(),
    }


def summary(entry: dict[str, Any]) -> dict[str, Any]:
    """What provenance and ``fed.standing_list()`` show (no pickled function)."""
    return {k: v for k, v in entry.items() if k != "fn"}


def function(entry: dict[str, Any]) -> Any:
    """``fn`` of a registry entry, unpickled as this process unpickles what it receives:
    on a strict site with its allow-list (``fn`` must then be code the site trusts: a
    shared method, a function of its ``strict_modules``), never with plain pickle.

    Raises
    ------
    StrictRefusal
        On a strict site, for a function it does not allow (one sent by value, say).
    """
    from distributed.protocol import pickle  # a strict worker replaced its ``loads``

    from .strict import Refused

    fn = pickle.loads(base64.b64decode(entry["fn"]))
    if isinstance(fn, Refused):
        raise StrictRefusal(fn.refusal)
    return fn


def checked_registration(
    entry: dict[str, Any], provenance: dict[str, Any], ref: str
) -> dict[str, Any]:
    """A registration from a client, checked against what the site knows: the standing
    computation extends the dataset the result was really computed from (its verified
    provenance, so the site's own grants never read a dataset for a user who has none),
    and ``fn`` unpickles here. Returns a fresh entry.

    Raises
    ------
    PermissionError
        If ``entry`` names a dataset the result was not computed from.
    StrictRefusal
        See :func:`function`.
    """
    used = [d.get("dataset") for d in provenance.get("datasets") or ()]
    if used != [entry.get("dataset")]:
        raise PermissionError(
            f"result {ref!r} was computed from {used}, not from {entry.get('dataset')!r}: "
            "a standing computation extends the one dataset its result was computed from"
        )
    function(entry)
    return {**entry, "steps": int(entry["steps"]), "along": str(entry["along"]),
            "version": str(entry["version"]), "state": ACTIVE, "updates": 0, "error": None,
            "updated": time.time()}


def active(results_dir: str | None) -> dict[str, dict[str, Any]]:
    """Result name -> registry entry of the active standing computations stored here."""
    if not results_dir or not Path(results_dir).is_dir():
        return {}
    out = {}
    for path in sorted(Path(results_dir).glob(f"*{REGISTRY_SUFFIX}")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if entry.get("state") == ACTIVE:
            out[path.name[: -len(REGISTRY_SUFFIX)]] = entry
    return out


#: egress classes from the least to the most restrictive
_CLASSES = ("any", "aggregated", "none")


def stricter(provenance: dict[str, Any], egress: str, limit: int | None) -> dict[str, Any]:
    """``{"egress", "max_egress_bytes"}``: the more restrictive of a stored result's class
    (its provenance) and a dataset's (``egress``, ``limit`` in bytes)."""
    old, old_limit = provenance.get("egress", "any"), provenance.get("max_egress_bytes")
    if _CLASSES.index(egress) != _CLASSES.index(old):
        worst = max(old, egress, key=_CLASSES.index)
        return {"egress": worst, "max_egress_bytes": old_limit if worst == old else limit}
    if egress == "aggregated" and limit is not None:
        limit = limit if old_limit is None else min(limit, old_limit)
        return {"egress": egress, "max_egress_bytes": limit}
    return {"egress": old, "max_egress_bytes": old_limit}
