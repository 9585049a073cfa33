"""The site-bound calls: the five functions a graph calls to run something at a site.

Clients put these in their graphs and the hub recognises them
(:data:`federation.protocol.SITE_CALLS`), so this module is all either side imports of
the site: each call finds the :class:`~federation.sitecontext.SiteContext` of the worker
running its task (:meth:`~federation.sitecontext.SiteContext.current`) and hands it to
the worker-side module doing the work, imported only there (:mod:`federation.read`,
:mod:`federation.methods`, :mod:`federation.result_writer`,
:mod:`federation.standing_update`). Each checks the hub's signed capability for its
task (:mod:`federation.capability`) before it reads, runs or writes anything.

Raises
------
federation.errors.NotAtSite
    (every call) outside a task on a site's worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def read_chunk(
    dataset: str, variable: str, index: tuple[slice, ...], decoded: bool = False,
    version: str | None = None,
) -> np.ndarray:
    """One chunk of ``variable`` of ``dataset`` (``site/name``), read from the site's
    files; see :func:`federation.read.read_chunk`."""
    from .read import read_chunk as read
    from .sitecontext import SiteContext

    return read(SiteContext.current(), dataset, variable, index, decoded, version)


def describe_snapshot(dataset: str, version: str) -> dict[str, Any]:
    """The catalog entry (wire form) of an old version of an Icechunk dataset; see
    :func:`federation.read.describe_snapshot`."""
    from .read import describe_snapshot as describe
    from .sitecontext import SiteContext

    return describe(SiteContext.current(), dataset, version)


def run_method(ref: str, *args: Any, **kwargs: Any) -> Any:
    """Run the site's published method ``ref`` (``site/name``); see
    :func:`federation.methods.run_at_site`."""
    from .methods import run_at_site
    from .sitecontext import SiteContext

    return run_at_site(SiteContext.current(), ref, args, kwargs)


def write_result(ref: str, obj: Any, provenance: dict[str, Any], overwrite: bool) -> dict:
    """Store ``obj`` as result ``ref`` (``site/results/name``); see
    :func:`federation.result_writer.write_result`."""
    from .result_writer import write_result as write
    from .sitecontext import SiteContext

    return write(SiteContext.current(), ref, obj, provenance, overwrite)


def standing_task(ref: str, action: str, entry: dict[str, Any] | None = None) -> dict[str, Any]:
    """Register (``entry``), update or cancel the standing computation of result ``ref``;
    see :func:`federation.standing_update.standing_task`."""
    from .sitecontext import SiteContext
    from .standing_update import standing_task as task

    return task(SiteContext.current(), ref, action, entry)
