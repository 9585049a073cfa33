"""The results writer: storing a published result at its site, on a site's worker.

:func:`federation.sitecalls.write_result` runs :func:`write_result` with the
:class:`~federation.sitecontext.SiteContext` of its worker; the layout of stored results
(``<name>.zarr`` and ``<name>.provenance.json``) is :mod:`federation.results`.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import xarray as xr
from distributed import get_worker
from distributed.utils import sync

from . import protocol
from .capability import egress_fields
from .errors import ResultError
from .results import PROVENANCE_SUFFIX, check_name, describe_result, may_replace
from .sitecontext import SiteContext
from .version import __version__


def _owner(path: Path) -> str | None:
    """The verified publisher of a stored result (``None``: unknown, an older store)."""
    provenance_file = path.with_name(path.name[: -len(".zarr")] + PROVENANCE_SUFFIX)
    try:
        return json.loads(provenance_file.read_text()).get("published_by")
    except (OSError, ValueError, AttributeError):
        return None


def write_result(
    context: SiteContext, ref: str, obj: Any, provenance: dict[str, Any], overwrite: bool
) -> dict:
    """Store ``obj`` as result ``ref`` (``site/results/name``) in the results folder of
    site ``context``; runs at the site.

    ``provenance`` is what the client says about itself; it is stored under ``claims``.
    Who publishes and from which datasets and methods come from the hub, which saw the
    computation arrive (see :mod:`scheduler_plugins.results`).
    """
    site, name = protocol.site_of_ref(ref), protocol.result_name(ref)
    check_name(name or "")  # a path below results_dir, never beside it
    if context.site != site:
        raise ResultError(f"result {ref!r} can only be written at site {site!r}")
    if not context.results_dir:
        raise ResultError(
            f"site {site!r} does not store results: its configuration has no 'results_dir:'"
        )
    cap = context.require("result", ref)
    if isinstance(obj, xr.DataArray):
        obj = obj.to_dataset(name=obj.name or "data")
    if not isinstance(obj, xr.Dataset):
        raise ResultError(f"a result must be an xarray Dataset or DataArray, not {type(obj)}")
    worker = get_worker()
    facts = sync(
        worker.loop, protocol.call, worker.scheduler, protocol.RESULT_PUBLISHER,
        site=site, session=context.session, ref=ref, key=worker.get_current_task(),
    )
    publisher = facts["published_by"]
    path = Path(context.results_dir) / f"{name}.zarr"
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
        site=site, session=context.session, result=entry,
    )
    return entry["info"]
