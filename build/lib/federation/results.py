"""Published results: xarray objects stored as zarr at a site, with provenance.

``fed.publish_result(name, obj)`` submits one task, :func:`write_result`, that the
routing plugin binds to the chosen site. It stores ``obj`` in the site's
``results_dir`` as ``<name>.zarr`` with ``<name>.provenance.json`` beside it, and
announces it to the hub as dataset ``<site>/results/<name>``. The site process
re-announces everything in ``results_dir`` whenever it registers, so results outlive
the publisher's connection and hub restarts.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import xarray as xr

from . import read
from .catalog import describe_dataset
from .config import NAME_PATTERN, NAME_RULE, SiteConfig
from .errors import ResultError
from .sources import ZarrSource

PROVENANCE_SUFFIX = ".provenance.json"


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ResultError(f"result name {name!r} is not allowed; use {NAME_RULE}")


def _describe(site: str, path: Path) -> dict[str, Any]:
    name = path.name[: -len(".zarr")]
    provenance_file = path.with_name(name + PROVENANCE_SUFFIX)
    provenance = json.loads(provenance_file.read_text()) if provenance_file.exists() else {}
    source = ZarrSource(str(path))
    with source.open() as ds:
        info = describe_dataset(
            site, f"{read.RESULTS}{name}", ds, provenance.get("description", ""), source.stamp()
        )
    return {"info": info.to_wire(), "provenance": provenance}


def scan_results(cfg: SiteConfig) -> list[dict[str, Any]]:
    """Every stored result of a site, for (re-)announcing; unreadable ones are skipped."""
    if not cfg.results_dir or not os.path.isdir(cfg.results_dir):
        return []
    out = []
    for path in sorted(Path(cfg.results_dir).glob("*.zarr")):
        try:
            out.append(_describe(cfg.site, path))
        except Exception:  # a half-written or foreign store must not stop the site
            continue
    return out


def write_result(ref: str, obj: Any, provenance: dict[str, Any], overwrite: bool) -> dict:
    """Store ``obj`` as result ``ref`` (``site/results/name``); runs at the site."""
    from distributed import get_worker
    from distributed.utils import sync

    site, name = ref.split("/", 1)[0], ref.split("/", 2)[2]
    if read._site != site:
        raise ResultError(f"result {ref!r} can only be written at site {site!r}")
    if not read._results_dir:
        raise ResultError(
            f"site {site!r} does not store results: its configuration has no 'results_dir:'"
        )
    if isinstance(obj, xr.DataArray):
        obj = obj.to_dataset(name=obj.name or "data")
    if not isinstance(obj, xr.Dataset):
        raise ResultError(f"a result must be an xarray Dataset or DataArray, not {type(obj)}")
    path = Path(read._results_dir) / f"{name}.zarr"
    if path.exists():
        if not overwrite:
            raise ResultError(
                f"result {ref!r} already exists; pass overwrite=True to replace it"
            )
        shutil.rmtree(path)
    tmp = path.with_name(f".{name}.zarr.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    obj.to_zarr(tmp, mode="w", consolidated=False)
    os.replace(tmp, path)  # readers never see a half-written result
    path.with_name(name + PROVENANCE_SUFFIX).write_text(json.dumps(provenance, indent=2))
    read._opened.pop(ref, None)  # a replaced result must be reopened
    entry = _describe(site, path)
    worker = get_worker()
    sync(
        worker.loop, worker.scheduler.federation_add_result,
        site=site, result=entry, worker=worker.address,
    )
    return entry["info"]
