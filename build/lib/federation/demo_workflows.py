"""A workflow the demo's ``dkrz`` site shares: it runs at dkrz, its reads at awi and geomar."""

from __future__ import annotations

import xarray as xr

from .client import worker_federation


def anomaly_correlation(a: str, a_variable: str, b: str, b_variable: str) -> float:
    """Correlation of the monthly area-mean anomalies of two federated variables.

    Parameters
    ----------
    a, b:
        Datasets as ``site/name``, e.g. ``awi/sst``.
    a_variable, b_variable:
        The variable of each.
    """
    with worker_federation() as fed:
        series = []
        for ref, variable in ((a, a_variable), (b, b_variable)):
            x = fed.open_dataset(ref)[variable].mean(["lat", "lon"])
            monthly = x.groupby("time.month")
            series.append(monthly - monthly.mean())
        return float(xr.corr(*series, dim="time").compute())
