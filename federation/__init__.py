"""dask-federation: analyse datasets held at several institutes without moving them.

Examples
--------
>>> import federation                                             # doctest: +SKIP
>>> fed = federation.connect("tcp://hub.example.org:8786")        # doctest: +SKIP
>>> fed.catalog()                                                 # doctest: +SKIP
"""

from __future__ import annotations

from . import settings  # noqa: F401  (dask config defaults first)
from .client import Federation, connect, worker_federation
from .errors import (
    ArgumentError,
    CapabilityError,
    FederationError,
    HubUnavailable,
    MethodError,
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

__all__ = [
    "ArgumentError",
    "CapabilityError",
    "Federation",
    "FederationError",
    "HubUnavailable",
    "MethodError",
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
