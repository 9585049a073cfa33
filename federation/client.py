"""The scientist's entry point: ``federation.connect(address)``."""

from __future__ import annotations

from typing import Any

import pandas as pd
import xarray as xr
from distributed import Client

from .catalog import DatasetInfo
from .lazy import Chunks, build_dataset
from .traffic import TrafficRecord


class Federation:
    """A connection to a federation hub.

    ``fed.client`` is an ordinary :class:`distributed.Client`; everything computed
    with it (``.compute()``, ``dask.compute``, ``client.compute``) is routed by the
    hub to the sites holding the data.

    Examples
    --------
    >>> import federation, xarray as xr                              # doctest: +SKIP
    >>> fed = federation.connect("tcp://hub.example.org:8786")        # doctest: +SKIP
    >>> sst = fed.open_dataset("awi/sst")                             # doctest: +SKIP
    >>> sst.sst.mean(["lat", "lon"]).compute()                        # doctest: +SKIP
    """

    def __init__(self, client: Client):
        self.client = client

    def _call(self, op: str, **kwargs: Any) -> Any:
        return self.client.sync(getattr(self.client.scheduler, op), **kwargs)

    def catalog(self) -> pd.DataFrame:
        """Every dataset the federation's sites hold, one row each."""
        rows = self._call("federation_catalog")
        columns = [
            "dataset", "site", "variables", "dims", "shape", "dtype", "nbytes", "chunks",
            "description",
        ]
        frame = pd.DataFrame(rows, columns=columns)
        frame["shape"] = frame["shape"].map(tuple)
        frame["variables"] = frame["variables"].map(list)
        return frame

    def info(self, name: str) -> DatasetInfo:
        """Full catalog metadata of ``site/name`` (raises listing what exists if unknown)."""
        return DatasetInfo.from_wire(self._call("federation_dataset", name=name))

    def open_dataset(self, name: str, chunks: Chunks = None) -> xr.Dataset:
        """Open a federated dataset as a lazy :class:`xarray.Dataset`.

        Parameters
        ----------
        name:
            ``"site/name"`` as listed by :meth:`catalog` (a bare ``"name"`` works
            when exactly one site holds it).
        chunks:
            As for :func:`xarray.open_dataset`: ``None`` or ``{}`` keeps the storage
            chunks, ``"auto"`` lets dask pick multiples of them, a dict sets some
            dimensions (``-1`` for one chunk).

        No data moves: the result is built from the catalog, and each chunk is read
        by a task that only the holding site's workers can run.
        """
        return build_dataset(self.info(name), chunks)

    def sites(self) -> dict[str, dict[str, Any]]:
        """Site name → workers, threads, memory, datasets, status and tasks run."""
        # msgpack delivers sequences as tuples
        return {
            site: {k: list(v) if isinstance(v, tuple) else v for k, v in info.items()}
            for site, info in self._call("federation_sites").items()
        }

    def traffic(self) -> TrafficRecord:
        """Measure bytes that cross site borders during a ``with`` block.

        Examples
        --------
        >>> with fed.traffic() as t:                                  # doctest: +SKIP
        ...     result = sst.sst.mean().compute()
        >>> t.total, t.bytes                                          # doctest: +SKIP
        """
        return TrafficRecord(lambda: self._call("federation_traffic"))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Federation {self.client.scheduler.address}>"


def connect(
    address: str | None = None, *, client: Client | None = None, **client_kwargs: Any
) -> Federation:
    """Connect to a federation hub.

    Parameters
    ----------
    address:
        The hub's scheduler address, e.g. ``"tcp://hub.example.org:8786"``.
    client:
        An existing :class:`distributed.Client` to use instead.
    **client_kwargs:
        Passed to :class:`distributed.Client` (``security=``, ``timeout=`` ...).
    """
    if client is None:
        if address is None:
            raise ValueError("give the hub's address, e.g. connect('tcp://hub:8786')")
        client = Client(address, **client_kwargs)
    return Federation(client)
