"""The resource labels a site's workers advertise (the scheme is in :mod:`.protocol`).

Every worker of site ``awi`` that holds dataset ``sst`` advertises two Dask
resources::

    site:awi          = LABEL_CAPACITY
    dataset:awi/sst   = LABEL_CAPACITY
"""

from __future__ import annotations

from .protocol import LABEL_CAPACITY, dataset_label, ref, site_label


def worker_resources(
    site: str, datasets: list[str], replicas: dict[str, str] | None = None
) -> dict[str, float]:
    """The resources a worker of ``site`` holding ``datasets`` (plain names) advertises.

    ``replicas`` maps another site's dataset (``site/name``) to the local dataset that
    replicates it: the worker advertises the original's label too, so reads of the
    original may run here.
    """
    labels = {site_label(site): LABEL_CAPACITY}
    labels.update({dataset_label(ref(site, name)): LABEL_CAPACITY for name in datasets})
    labels.update({dataset_label(each): LABEL_CAPACITY for each in replicas or {}})
    return labels
