"""The site side of standing computations: registering, updating and cancelling one.

:func:`federation.sitecalls.standing_task` runs :func:`standing_task` with the
:class:`~federation.sitecontext.SiteContext` of its worker; what a standing computation
is, its probe and its registry file are :mod:`federation.standing`.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed import get_worker
from distributed.utils import sync

from .protocol import result_name, site_of_ref
from .results import PROVENANCE_SUFFIX, check_name, describe_result, may_replace
from .sitecontext import SiteContext
from .standing import (
    ACTIVE,
    CANCELLED,
    StandingError,
    as_dataset,
    checked_registration,
    function,
    load,
    registry_path,
    save,
    stricter,
    summary,
)
from .versions import VersionLog


def standing_task(
    context: SiteContext, ref: str, action: str, entry: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Register (``entry``), update or cancel the standing computation of result ``ref``
    (``site/results/name``) kept at site ``context``; runs at the site in a task the hub
    signed a capability for.

    ``update`` computes ``fn`` of the dataset's steps the result lacks, through the
    federation (so only their chunks are read, at their site), and appends them; a
    dataset replaced since the last update is recomputed whole. Returns the summary.
    """
    from .client import worker_federation  # the client, imported only where it runs

    site, name = site_of_ref(ref), result_name(ref)
    results_dir = context.results_dir
    check_name(name or "")  # a path below results_dir, never beside it
    if context.site != site or not results_dir or name is None:
        raise StandingError(f"result {ref!r} can only be kept at site {site!r}")
    context.require("result", ref)
    worker = get_worker()
    facts = sync(
        worker.loop, worker.scheduler.federation_result_publisher,
        site=site, session=context.session, ref=ref, key=worker.get_current_task(),
    )
    path = Path(results_dir) / f"{name}.zarr"
    provenance_file = path.with_name(name + PROVENANCE_SUFFIX)
    provenance = json.loads(provenance_file.read_text()) if provenance_file.exists() else {}
    if action in ("register", "cancel") and not may_replace(
        site, provenance.get("published_by"), facts["published_by"]
    ):
        raise PermissionError(
            f"result {ref!r} was published by {provenance.get('published_by')!r}; only they "
            f"or site {site!r} may change its standing computation"
        )
    # one change at a time: two updates appending the same steps would corrupt the result
    with open(registry_path(results_dir, name).with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if action == "register":
            assert entry is not None
            current = checked_registration(entry, provenance, ref)
        else:
            current = load(results_dir, name)
            if current is None:
                raise StandingError(f"{ref!r} is not a standing computation")
        if action == "cancel":
            current["state"] = CANCELLED
        elif action == "update" and current["state"] == ACTIVE:

            def tighten(info: Any) -> None:
                # the appended steps carry the dataset's class as it is now (a site may
                # have restricted it since): before they are written, the result's class
                # becomes at least as strict, and the hub learns it
                strict = stricter(provenance, info.egress, info.max_egress_bytes)
                if strict != {k: provenance.get(k) for k in strict}:
                    provenance.update(strict)
                    provenance_file.write_text(json.dumps(provenance, indent=2))
                    sync(worker.loop, worker.scheduler.federation_add_result, site=site,
                         session=context.session, result=describe_result(site, path))

            try:
                _update(context, current, path, worker_federation, tighten)
            except Exception as e:  # kept in the registry and shown; the next change retries
                current.update(error=f"{type(e).__name__}: {e}", updated=time.time())
                save(results_dir, name, current)
                raise
        save(results_dir, name, current)
        provenance["standing"] = summary(current)
        provenance_file.write_text(json.dumps(provenance, indent=2))
    sync(
        worker.loop, worker.scheduler.federation_add_result,
        site=site, session=context.session, result=describe_result(site, path),
    )
    return summary(current)


def _update(
    context: SiteContext, entry: dict[str, Any], path: Path, worker_federation: Any,
    tighten: Callable[[Any], None],
) -> None:
    """Append ``fn`` of the new steps to the result at ``path`` (or recompute it whole
    after a replacement); updates ``entry`` in place. ``tighten(info)`` is called with
    the dataset's catalog entry before anything is written."""
    along, done, ref = entry["along"], entry["steps"], entry["dataset"]
    fn = function(entry)
    with worker_federation() as fed:
        info = fed.info(ref)
        tighten(info)
        steps = info.dims[along]
        source, versions = context.source(ref), context.versions
        appended = versions is not None and source is not None and (
            versions.compatible(VersionLog.key(ref, source), entry["version"], info.version)
        )
        ds = fed.open_dataset(ref)
        if appended and steps == done:
            entry.update(version=info.version)
            return
        if appended:
            new = as_dataset(fn(ds.isel({along: slice(done, steps)})))
            fed.client.compute(new).result().to_zarr(path, append_dim=along, consolidated=False)
        else:  # replaced: every step may have changed
            out = as_dataset(fn(ds))
            tmp = path.with_name(f".{path.name}.tmp")
            fed.client.compute(out).result().to_zarr(tmp, mode="w", consolidated=False)
            shutil.rmtree(path, ignore_errors=True)
            tmp.replace(path)
    entry.update(steps=steps, version=info.version, updated=time.time(),
                 updates=entry["updates"] + 1, error=None)
