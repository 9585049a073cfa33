"""The scientist's entry point: ``federation.connect(address)``."""

from __future__ import annotations

import dataclasses
import getpass
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import dask
import pandas as pd
import xarray as xr
from dask.delayed import Delayed
from distributed import Client, Future, worker_client

from . import protocol
from .catalog import DatasetInfo
from .diagnose import check_client_security, explain_connect_failure
from .display import federation_html, federation_text
from .errors import HubUnavailable, ResultError
from .graph import graph_uses
from .lazy import Chunks, build_dataset
from .methods import bind_arguments
from .protocol import MethodInfo
from .results import check_name
from .sitecalls import describe_snapshot, run_method, standing_task, write_result
from .standing import new_entry, probe
from .traffic import TrafficRecord
from .version import __version__


def _lists(obj: Any) -> Any:
    """msgpack delivers sequences as tuples; users expect the JSON shapes."""
    if isinstance(obj, (list, tuple)):
        return [_lists(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    return obj


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
        """Every dataset the federation's sites hold, one row each.

        ``dtype`` is the first data variable's dtype as xarray shows it at the site
        (``float32``, ``<U6``, ``object`` for cftime dates); ``calendars`` maps each date
        variable to its calendar (``{"time": "noleap"}``); ``version`` changes whenever
        the data or metadata change at the site, ``changed`` is when the site noticed
        that (UTC; ``NaT`` if not recorded).
        """
        rows = self._call(protocol.CATALOG)
        columns = [
            "dataset", "site", "variables", "dims", "shape", "dtype", "nbytes", "chunks",
            "description", "egress", "calendars", "version", "changed",
        ]
        frame = pd.DataFrame(rows, columns=columns)
        frame["changed"] = pd.to_datetime(frame["changed"], unit="s", utc=True)
        frame["shape"] = frame["shape"].map(tuple)
        frame["variables"] = frame["variables"].map(list)
        return frame

    def info(self, name: str) -> DatasetInfo:
        """Full catalog metadata of ``site/name`` (raises listing what exists if unknown)."""
        if not isinstance(name, str):
            raise TypeError(f"a dataset is named by a string like 'awi/sst', not {name!r}")
        return DatasetInfo.from_wire(self._call(protocol.DATASET, name=name))

    def open_dataset(
        self, name: str, chunks: Chunks = None, version: str | None = None
    ) -> xr.Dataset:
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
        version:
            An old version of an Icechunk dataset: a tag, a branch, a snapshot id, or a
            catalog version the site recorded. ``None``: the current version.

        No data moves: the result is built from the catalog, and each chunk is read
        by a task that only the holding site's workers can run. Every read is pinned to
        the version the dataset had when it was opened: steps appended later leave the
        computation alone, a replaced dataset makes it fail with
        :class:`~federation.errors.DatasetChanged` (Icechunk reads the old snapshot).

        Raises
        ------
        ValueError
            With ``version`` for a dataset that is not Icechunk, or a version it lacks.
        """
        info = self.info(name)
        if version is not None:
            # the site describes the old snapshot, in a task signed like a read
            wire = self.client.submit(describe_snapshot, info.ref, version, pure=False).result()
            info = dataclasses.replace(
                DatasetInfo.from_wire(wire), egress=info.egress,
                max_egress_bytes=info.max_egress_bytes,
            )
        return build_dataset(info, chunks)

    # -- shared methods and workflows -----------------------------------------------------

    def methods(self) -> pd.DataFrame:
        """Every shared method and workflow: method ("site/name"), site, kind, signature,
        summary."""
        infos = [MethodInfo.from_wire(m) for m in self._call(protocol.METHODS)]
        return pd.DataFrame(
            [
                {"method": m.ref, "site": m.site, "kind": m.kind, "signature": m.signature,
                 "summary": m.summary}
                for m in infos
            ],
            columns=["method", "site", "kind", "signature", "summary"],
        )

    def describe(self, name: str) -> MethodInfo:
        """The full description of a shared method: signature, docstring, JSON schemas."""
        return MethodInfo.from_wire(self._call(protocol.METHOD, name=name))

    def method(self, name: str) -> Callable[..., Delayed]:
        """A local stand-in for a shared method, with the remote signature and docstring.

        Calling it validates the arguments here and returns a lazy
        :class:`dask.delayed.Delayed`; computing it runs the method at its site.
        Arguments may be lazy (federated datasets, dask collections): they are computed
        where their data live and handed to the method as values.

        Examples
        --------
        >>> regrid = fed.method("awi/regrid")                         # doctest: +SKIP
        >>> help(regrid)                                              # doctest: +SKIP
        >>> out = regrid(ds, grid="1deg").compute()                   # doctest: +SKIP
        """
        if not isinstance(name, str):
            raise TypeError(f"a method is named by a string like 'awi/regrid', not {name!r}")
        info = self.describe(name)

        def proxy(*args: Any, **kwargs: Any) -> Delayed:
            bind_arguments(info, args, kwargs)
            return dask.delayed(run_method, pure=False)(info.ref, *args, **kwargs)

        proxy.__name__ = proxy.__qualname__ = info.name
        proxy.__module__ = f"federation.sites.{info.site}"
        proxy.__signature__ = info.python_signature()  # type: ignore[attr-defined]
        proxy.__doc__ = (
            f"{info.doc}\n\n[{info.kind} shared by site {info.site!r}; runs there. "
            f"Returns a lazy dask Delayed.]"
        )
        return proxy

    def call(self, name: str, *args: Any, **kwargs: Any) -> Future:
        """Run a shared method now; returns a :class:`distributed.Future`.

        Use ``distributed.progress(future)`` to watch it and ``future.result()`` for the
        value. A method that raises shows its remote traceback, naming site and method.
        """
        return self.client.compute(self.method(name)(*args, **kwargs))

    # -- results ----------------------------------------------------------------------------

    def publish_result(
        self, name: str, obj: Any, site: str | None = None, overwrite: bool = False
    ) -> str:
        """Store an xarray object at a site as result ``site/results/<name>``.

        ``obj`` may be lazy; it is computed where its data are and written to the
        site's ``results_dir`` (default site: the one where most of it is computed),
        with provenance: who published it, when, from which datasets and methods.
        Returns the result's reference for :meth:`open_dataset` and :meth:`provenance`.
        """
        check_name(name)
        uses = graph_uses(obj)
        if site is None:
            if not uses["sites"]:
                raise ResultError(
                    "this object is not computed from federated data; say where to store "
                    "it with site=..."
                )
            site = max(uses["sites"], key=lambda s: (uses["sites"][s], s))
        info = self.sites().get(site)
        if info is None:
            raise ResultError(f"unknown site {site!r}; sites: {sorted(self.sites())}")
        if not info["accepts_results"]:
            raise ResultError(
                f"site {site!r} does not store results: its configuration has no "
                "'results_dir:'; choose another site with site=..."
            )
        provenance = {
            "result": protocol.result_ref(site, name),
            "published_by": f"{getpass.getuser()}@{socket.gethostname()}",
            "client": self.client.id,
            "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "datasets": [
                {"dataset": ref, "version": self.info(ref).version} for ref in uses["datasets"]
            ],
            "methods": [
                {"method": ref, "version": self.describe(ref).version} for ref in uses["methods"]
            ],
            "dask_federation": __version__,
        }
        ref = provenance["result"]
        task = dask.delayed(write_result, pure=False)(ref, obj, provenance, overwrite)
        self.client.compute(task).result()
        return ref

    # -- standing computations ---------------------------------------------------------------

    def standing(
        self, name: str, fn: Callable[[xr.Dataset], Any], dataset: str, along: str = "time",
        overwrite: bool = False,
    ) -> str:
        """Publish ``fn(dataset)`` as result ``site/results/<name>`` and keep it up to date:
        when the dataset gains steps along ``along``, its site computes ``fn`` of the new
        steps only and appends them (see :mod:`federation.standing`).

        ``fn`` must be per-step along ``along`` (area means, anomalies against a fixed
        climatology ...); a probe on the first steps checks it. Returns the result's
        reference.

        Raises
        ------
        StandingError
            If ``fn`` is not per-step along ``along`` (the message says why).
        ResultError
            If the dataset's site does not store results.
        """
        info = self.info(dataset)
        ds = build_dataset(info)
        out = probe(fn, ds, along)
        ref = self.publish_result(name, out, site=info.site, overwrite=overwrite)
        entry = new_entry(fn, info.ref, along, ds.sizes[along], info.version)
        task = dask.delayed(standing_task, pure=False)(ref, "register", entry)
        self.client.compute(task).result()
        return ref

    def standing_list(self) -> pd.DataFrame:
        """Every standing computation: result, dataset, along, state, steps computed, the
        dataset version they are from, updates, last update (UTC) and last error."""
        rows = []
        for site, info in self.sites().items():
            for name in info["results"]:
                prov = self.provenance(f"{site}/{name}")
                if "standing" in prov:
                    rows.append({"result": f"{site}/{name}", **prov["standing"]})
        columns = ["result", "dataset", "along", "state", "steps", "version", "updates",
                   "updated", "error"]
        frame = pd.DataFrame(rows, columns=columns)
        frame["updated"] = pd.to_datetime(frame["updated"], unit="s", utc=True)
        return frame

    def standing_cancel(self, ref: str) -> None:
        """Stop keeping result ``ref`` up to date (the result stays as it is)."""
        if ref.count("/") < 2:
            raise ValueError(f"name the standing result as 'site/results/name', not {ref!r}")
        task = dask.delayed(standing_task, pure=False)(ref, "cancel")
        self.client.compute(task).result()

    def provenance(self, name: str) -> dict[str, Any]:
        """Who published a result, when, and from which datasets and methods.

        ``published_by`` is the identity the hub saw submit the write (the certificate's
        name; ``"anonymous"`` without TLS), ``datasets``/``methods`` its real lineage;
        ``claims`` holds what the publishing client said about itself, unverified.
        """
        return _lists(self._call(protocol.PROVENANCE, name=name))

    def sites(self) -> dict[str, dict[str, Any]]:
        """Site name → workers, threads, memory, datasets, status and tasks run."""
        return _lists(self._call(protocol.SITES))

    def traffic(self) -> TrafficRecord:
        """Measure bytes that cross site borders during a ``with`` block.

        Examples
        --------
        >>> with fed.traffic() as t:                                  # doctest: +SKIP
        ...     result = sst.sst.mean().compute()
        >>> t.total, t.bytes                                          # doctest: +SKIP
        """
        return TrafficRecord(lambda: self._call(protocol.TRAFFIC))

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return federation_text(self)

    def _repr_html_(self) -> str:
        return federation_html(self)


@contextmanager
def worker_federation() -> Iterator[Federation]:
    """The federation, from inside a task (a shared workflow running at its site).

    Uses distributed's ``worker_client``, so the task leaves the worker's thread pool
    while the computations it submits run — through the routing plugin, at the sites
    holding their data.

    Examples
    --------
    >>> def sst_chl_corr(sst: str, chl: str) -> float:               # doctest: +SKIP
    ...     with federation.worker_federation() as fed:
    ...         a = fed.open_dataset(sst).sst.mean(["lat", "lon"])
    ...         b = fed.open_dataset(chl).chl.mean(["lat", "lon"])
    ...         return float(xr.corr(a, b, dim="time").compute())
    """
    with worker_client() as client:
        yield Federation(client)


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
        if not isinstance(address, str):
            raise TypeError(f"the hub's address is a string like 'tcp://hub:8786', not {address!r}")
        check_client_security(address, client_kwargs.get("security"))
        try:
            client = Client(address, **client_kwargs)
        except OSError as e:
            why = explain_connect_failure(address, e)
            if why is None:
                raise
            raise HubUnavailable(why) from None
    return Federation(client)
