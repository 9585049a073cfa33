"""dask-federation: analyse datasets held at several institutes without moving them.

Examples
--------
>>> import federation                                             # doctest: +SKIP
>>> fed = federation.connect("tcp://hub.example.org:8786")        # doctest: +SKIP
>>> fed.catalog()                                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import settings  # noqa: F401  (dask config defaults first)
from .errors import (
    ArgumentError,
    CapabilityError,
    DatasetNotHere,
    FederationError,
    HubUnavailable,
    MethodError,
    NotAtSite,
    PolicyError,
    RawDataMoveWarning,
    ReplicaMismatch,
    ResultError,
    SiteNameTaken,
    SiteOfflineError,
    SiteUnavailable,
    StrictRefusal,
    UnknownDatasetError,
    UnknownMethodError,
)
from .version import __version__

if TYPE_CHECKING:
    from .client import Federation, connect, worker_federation

#: the client, imported on first use: the hub and the sites import this package for
#: its other modules and need none of the client's
_CLIENT = ("Federation", "connect", "worker_federation")


def __getattr__(name: str) -> Any:
    if name in _CLIENT:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'federation' has no attribute {name!r}")

__all__ = [
    "ArgumentError",
    "CapabilityError",
    "DatasetNotHere",
    "Federation",
    "FederationError",
    "HubUnavailable",
    "MethodError",
    "NotAtSite",
    "PolicyError",
    "RawDataMoveWarning",
    "ReplicaMismatch",
    "ResultError",
    "SiteNameTaken",
    "SiteOfflineError",
    "SiteUnavailable",
    "StrictRefusal",
    "UnknownDatasetError",
    "UnknownMethodError",
    "__version__",
    "connect",
    "worker_federation",
]
