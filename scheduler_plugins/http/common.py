"""Where the hub's HTTP API lives and how it reads its settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dask

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

#: The API's root below the dashboard prefix.
API_PATH = "federation/api/v1"


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
