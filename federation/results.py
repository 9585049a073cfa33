"""Published results: xarray objects stored as zarr at a site, with provenance.

``fed.publish_result(name, obj)`` submits one task,
:func:`federation.sitecalls.write_result`, that the
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
from pathlib import Path
from typing import Any

from . import protocol
from .config import NAME_PATTERN, NAME_RULE, SiteConfig
from .describe import describe_source
from .errors import ResultError
from .sources import ZarrSource

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


def may_replace(site: str, owner: str | None, publisher: str) -> bool:
    """Only a result's publisher, the site itself (its certificate: its operators and
    workflows) or the hub may replace it."""
    return publisher in (owner, f"site:{site}") or publisher.startswith("hub:")
