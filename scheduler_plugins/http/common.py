"""How the hub's HTTP API finds its URL prefix and reads its settings (its root,
``API_PATH``, is part of the contract: :mod:`federation.protocol`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dask

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler


def setting(key: str) -> Any:
    """``federation.http.<key>`` (defaults: federation/federation.yaml)."""
    return dask.config.get(f"federation.http.{key}")


def http_prefix(scheduler: Scheduler) -> str:
    """The dashboard's URL prefix ("" or e.g. "/dask"), as distributed mounted it."""
    for app in getattr(scheduler.http_application, "applications", ()):
        prefix = getattr(app, "prefix", None)
        if isinstance(prefix, str) and hasattr(app, "app_paths"):  # a BokehTornado
            return prefix.rstrip("/")
    return ""
