"""Published results: xarray objects stored as zarr at a site, with provenance.

``fed.publish_result(name, obj)`` submits one task, :func:`write_result`, that the
routing plugin binds to the chosen site. It stores ``obj`` in the site's
``results_dir`` as ``<name>.zarr`` with ``<name>.provenance.json`` beside it, and
announces it to the hub as dataset ``<site>/results/<name>``. The site process
re-announces everything in ``results_dir`` whenever it registers, so results outlive
the publisher's connection and hub restarts.

The provenance's ``published_by``, ``datasets`` and ``methods`` come from the hub, which
saw the computation arrive (:mod:`scheduler_plugins.results`); the client's own account
is kept under ``claims``. Only the publisher, the site or the hub replaces a result.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import xarray as xr

from . import protocol, read
from .capability import egress_fields, require
from .config import NAME_PATTERN, NAME_RULE, SiteConfig
from .describe import describe_source
from .errors import ResultError
from .sources import ZarrSource
from .version import __version__

PROVENANCE_SUFFIX = ".provenance.json"


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name):
        raise ResultError(f"result name {name!r} is not allowed; use {NAME_RULE}")


def describe_result(site: str, path: Path) -> dict[str, Any]:
    """The catalog entry and provenance of the result stored at ``path``, for announcing."""
    name = path.name[: -len(".zarr")]
    provenance_file = path.with_name(name + PROVENANCE_SUFFIX)
    provenance = json.loads(provenance_file.read_text()) if provenance_file.exists() else {}
    info = describe_source(
        site, protocol.RESULTS + name, ZarrSource(str(path)), provenance.get("description", "")
    )
    info = dataclasses.replace(
        info, egress=provenance.get("egress", "any"),
        max_egress_bytes=provenance.get("max_egress_bytes"),
    )
    return {"info": info.to_wire(), "provenance": provenance}


def scan_results(cfg: SiteConfig) -> list[dict[str, Any]]:
    """Every stored result of a site, for (re-)announcing; unreadable ones are skipped."""
    if not cfg.results_dir or not os.path.isdir(cfg.results_dir):
        return []
    out = []
    for path in sorted(Path(cfg.results_dir).glob("*.zarr")):
        try:
            out.append(describe_result(cfg.site, path))
        except Exception:  # a half-written or foreign store must not stop the site
            continue
    return out


def _owner(path: Path) -> str | None:
    """The verified publisher of a stored result (``None``: unknown, an older store)."""
    provenance_file = path.with_name(path.name[: -len(".zarr")] + PROVENANCE_SUFFIX)
    try:
        return json.loads(provenance_file.read_text()).get("published_by")
    except (OSError, ValueError, AttributeError):
        return None


def may_replace(site: str, owner: str | None, publisher: str) -> bool:
    """Only a result's publisher, the site itself (its certificate: its operators and
    workflows) or the hub may replace it."""
    return publisher in (owner, f"site:{site}") or publisher.startswith("hub:")


def write_result(ref: str, obj: Any, provenance: dict[str, Any], overwrite: bool) -> dict:
    """Store ``obj`` as result ``ref`` (``site/results/name``); runs at the site.

    ``provenance`` is what the client says about itself; it is stored under ``claims``.
    Who publishes and from which datasets and methods come from the hub, which saw the
    computation arrive (see :mod:`scheduler_plugins.results`).
    """
    from distributed import get_worker
    from distributed.utils import sync

    site, name = protocol.site_of_ref(ref), protocol.result_name(ref)
    check_name(name or "")  # a path below results_dir, never beside it
    if read._site != site:
        raise ResultError(f"result {ref!r} can only be written at site {site!r}")
    if not read._results_dir:
        raise ResultError(
            f"site {site!r} does not store results: its configuration has no 'results_dir:'"
        )
    cap = require("result", ref)
    if isinstance(obj, xr.DataArray):
        obj = obj.to_dataset(name=obj.name or "data")
    if not isinstance(obj, xr.Dataset):
        raise ResultError(f"a result must be an xarray Dataset or DataArray, not {type(obj)}")
    worker = get_worker()
    facts = sync(
        worker.loop, protocol.call, worker.scheduler, protocol.RESULT_PUBLISHER,
        site=site, session=read._session, ref=ref, key=worker.get_current_task(),
    )
    publisher = facts["published_by"]
    path = Path(read._results_dir) / f"{name}.zarr"
    if path.exists():
        if not overwrite:
            raise ResultError(
                f"result {ref!r} already exists; pass overwrite=True to replace it"
            )
        owner = _owner(path)
        if not may_replace(site, owner, publisher):
            raise PermissionError(
                f"result {ref!r} was published by {owner or 'an unknown publisher'!r}; only "
                f"they or site {site!r} may replace it ({publisher!r} may not); publish "
                "under another name"
            )
        shutil.rmtree(path)
    tmp = path.with_name(f".{name}.zarr.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    obj.to_zarr(tmp, mode="w", consolidated=False)
    os.replace(tmp, path)  # readers never see a half-written result
    record = {
        "result": ref,
        "published_by": publisher,
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "datasets": facts["datasets"],
        "methods": facts["methods"],
        # what the client said about itself: unverified
        "claims": {k: v for k, v in provenance.items() if k != "result"},
        "dask_federation": __version__,
    }
    if cap is not None:
        # the result keeps the egress class of its lineage, as the hub signed it
        record.update(egress_fields(cap.egress))
    path.with_name(name + PROVENANCE_SUFFIX).write_text(json.dumps(record, indent=2))
    entry = describe_result(site, path)
    sync(
        worker.loop, protocol.call, worker.scheduler, protocol.ADD_RESULT,
        site=site, session=read._session, result=entry,
    )
    return entry["info"]
