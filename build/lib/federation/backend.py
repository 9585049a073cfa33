"""An xarray backend: ``xr.open_dataset("fed://hub:8786/awi/sst", engine="federation")``.

The dataset comes from the hub's catalog as a lazy, dask-backed :class:`xarray.Dataset`
(see :meth:`federation.Federation.open_dataset`); computing it runs at the sites.

Examples
--------
>>> import xarray as xr
>>> url = "fed://hub.example.org:8786/awi/sst"
>>> ds = xr.open_dataset(url, engine="federation")  # doctest: +SKIP
>>> kwargs = {"hub": "tls://hub:8786", "security": sec}
>>> ds = xr.open_dataset("awi/sst", engine="federation", backend_kwargs=kwargs)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import xarray as xr
from xarray.backends import BackendEntrypoint

from .client import Federation, connect

_connections: dict[str, Federation] = {}


def split_url(url: str) -> tuple[str | None, str]:
    """``fed://host:port/site/name`` -> (``tcp://host:port``, ``site/name``);
    ``feds://`` means TLS; a plain ``site/name`` has no hub."""
    parsed = urlparse(url)
    if parsed.scheme in ("fed", "feds"):
        protocol = "tls" if parsed.scheme == "feds" else "tcp"
        return f"{protocol}://{parsed.netloc}", parsed.path.lstrip("/")
    return None, url


class FederationBackendEntrypoint(BackendEntrypoint):
    """Opens datasets of a dask-federation hub by ``site/name``."""

    description = "Open a dataset of a dask-federation hub lazily, without moving its data"
    url = "https://github.com/dask-federation/dask-federation"
    open_dataset_parameters = ("filename_or_obj", "drop_variables", "hub", "security")

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return isinstance(filename_or_obj, str) and filename_or_obj.startswith(("fed://", "feds://"))

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | list[str] | None = None,
        hub: str | None = None,
        security: Any = None,
    ) -> xr.Dataset:
        address, name = split_url(str(filename_or_obj))
        address = address or hub
        if address is None:
            raise ValueError(
                f"no hub for {filename_or_obj!r}: use 'fed://HOST:PORT/site/name' or "
                "backend_kwargs={'hub': 'tcp://HOST:PORT'}"
            )
        fed = _connections.get(address)
        if fed is None or fed.client.status != "running":
            kwargs = {"security": security} if security is not None else {}
            # the new client becomes the default one, so .compute() runs at the sites
            fed = _connections[address] = connect(address, **kwargs)
        ds = fed.open_dataset(name)  # storage chunks; xarray's chunks= rechunks on top
        if drop_variables:
            ds = ds.drop_vars(drop_variables, errors="ignore")
        return ds
