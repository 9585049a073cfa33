"""dask-federation: analyse datasets held at several institutes without moving them.

Examples
--------
>>> import federation                                             # doctest: +SKIP
>>> fed = federation.connect("tcp://hub.example.org:8786")        # doctest: +SKIP
>>> fed.catalog()                                                 # doctest: +SKIP
"""

from __future__ import annotations

from .client import Federation, connect
from .errors import FederationError, HubUnavailable, SiteNameTaken, UnknownDatasetError

__all__ = [
    "Federation",
    "FederationError",
    "HubUnavailable",
    "SiteNameTaken",
    "UnknownDatasetError",
    "connect",
]
__version__ = "0.1.0"
