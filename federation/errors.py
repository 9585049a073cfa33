"""Errors a user or site operator sees; each message names the thing and the fix."""

from __future__ import annotations


class FederationError(Exception):
    """Base class of dask-federation's errors."""


class UnknownDatasetError(FederationError, LookupError):
    """A ``site/name`` that no registered site holds; the message lists what exists."""

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0]) if self.args else ""


class SiteOfflineError(UnknownDatasetError):
    """A dataset whose site is registered but offline (no live site process)."""


class SiteNameTaken(FederationError):
    """A site tried to register a name another live site already uses."""


class HubUnavailable(FederationError, ConnectionError):
    """The hub could not be reached (or not with this protocol or certificate)."""


class UnknownMethodError(FederationError, LookupError):
    """A method name no site publishes; the message lists close matches."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ArgumentError(FederationError, ValueError):
    """Arguments that do not fit a shared method's signature or schema."""


class MethodError(FederationError, RuntimeError):
    """A shared method raised at its site; the message holds the remote traceback."""


class ResultError(FederationError):
    """A result cannot be published (no results_dir at the site, name taken, ...)."""


class SiteUnavailable(FederationError):
    """A site stayed without workers for longer than ``federation.site-outage-timeout``."""


class ReplicaMismatch(FederationError):
    """A dataset declared ``replica_of`` another one but differs from it."""


class PolicyError(FederationError, PermissionError):
    """A computation would move data out of a site against the dataset's egress policy."""


class StrictRefusal(FederationError, PermissionError):
    """A strict site refused to unpickle or run something not on its allow-list."""


class CapabilityError(FederationError, PermissionError):
    """A site-bound call (read, method call, result write) ran without a capability the
    hub signed for exactly this task and reference; nothing was read or run."""


class RawDataMoveWarning(UserWarning):
    """A computation moves more than ``federation.raw-move-warning`` of a site's raw bytes
    across the site's border (see ``scheduler_plugins.moves``)."""


class DatasetChanged(FederationError):
    """A read pinned to one version of a dataset found it replaced at its site (not merely
    grown along a dimension): the computation must be rebuilt from the new version."""


class DatasetNotHere(FederationError, LookupError):
    """A read task ran on a worker of a site that does not hold its dataset."""


class NotAtSite(FederationError, RuntimeError):
    """A site-bound call ran outside a site's worker: no worker, or a worker without the
    site's worker plugin (and so without its datasets, methods and capability key)."""
