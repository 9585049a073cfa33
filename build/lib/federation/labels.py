"""The resource-label scheme that ties workers to sites and datasets.

Every worker of site ``awi`` that holds dataset ``sst`` advertises two Dask
resources::

    site:awi          = LABEL_CAPACITY
    dataset:awi/sst   = LABEL_CAPACITY

The routing plugin restricts a task to a site by requiring ``1`` of a label.
Dask resources are *consumed* while a task runs, so the capacity is set far above
any thread count: labels decide *where* a task may run, never *how many* run at
once (threads and the site queue do that).
"""

from __future__ import annotations

from collections.abc import Mapping

SITE_PREFIX = "site:"
DATASET_PREFIX = "dataset:"
LABEL_CAPACITY = 1_000_000


def site_label(site: str) -> str:
    return f"{SITE_PREFIX}{site}"


def dataset_label(ref: str) -> str:
    """Label for a dataset reference ``site/name``."""
    return f"{DATASET_PREFIX}{ref}"


def worker_resources(
    site: str, datasets: list[str], replicas: dict[str, str] | None = None
) -> dict[str, float]:
    """The resources a worker of ``site`` holding ``datasets`` (plain names) advertises.

    ``replicas`` maps another site's dataset (``site/name``) to the local dataset that
    replicates it: the worker advertises the original's label too, so reads of the
    original may run here.
    """
    labels = {site_label(site): LABEL_CAPACITY}
    labels.update({dataset_label(f"{site}/{name}"): LABEL_CAPACITY for name in datasets})
    labels.update({dataset_label(ref): LABEL_CAPACITY for ref in replicas or {}})
    return labels


def site_of(resources: Mapping[str, float] | None) -> str | None:
    """The site a worker belongs to, from its advertised resources."""
    for label in resources or ():
        if label.startswith(SITE_PREFIX):
            return label[len(SITE_PREFIX) :]
    return None
