"""Generate the strict allow-list: run ordinary analyses and record what they unpickle.

``python -m federation.strict_corpus`` runs a corpus of everyday xarray/dask analyses
of federated datasets (reductions, groupby, resample, rolling, coarsen, where,
corr/cov, weighted, quantile, cumulative operations, interp, polyfit, concat/merge,
astype, isel/sel, map_blocks of site methods, methods with lazy arguments,
publish_result) on an in-process distributed cluster that talks TCP, so every graph,
task and chunk is pickled and unpickled as between client, hub and strict workers.
Values that legitimately cross (time-zone aware and naive ``DatetimeIndex``,
``CFTimeIndex``, ``MultiIndex``, categoricals, period and interval indexes, ...) are
pickled through the same unpickler. Every global the unpickler resolves is recorded.

The recorded ``module:name`` pairs are reviewed (:func:`review`: nothing that opens
paths, imports, evaluates or reaches the OS) and written, sorted, to
:data:`ALLOWLIST` (``federation/strict_allowlist.txt``), which
:mod:`federation.strict` loads. Run it again after upgrading numpy, pandas, xarray or
dask, review the diff, and commit it.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import inspect
import io
import pickle
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cftime
import cloudpickle
import dask
import distributed.protocol.pickle
import numpy as np
import pandas as pd
import toolz
import xarray as xr
from distributed import LocalCluster

from .catalog import describe_dataset
from .lazy import build_dataset
from .protocol import ADD_RESULT, RESULT_PUBLISHER, SITE_CALLS, ref
from .sitecalls import run_method, write_result
from .sitecontext import SiteContext, SiteWorkerPlugin
from .sources import ZarrSource
from .strict import ALLOWLIST, ALLOWLIST_PATH, attribute_ref, denied_name

SITE = "corpus"


# -- the corpus site's shared methods (site code: allowed by name via ``methods:``) --------

def anomaly(data: xr.DataArray) -> xr.DataArray:
    """Deviation from the mean over time."""
    return data - data.mean("time")


def fail(message: str) -> None:
    """Always raises: errors travel back from strict sites."""
    raise ValueError(message)


def summary(data: xr.Dataset) -> xr.Dataset:
    """Spatial means, keeping the time index (naive, tz-aware or cftime)."""
    return data.mean([d for d in data.dims if d != "time"])


METHODS = {name: f"{__name__}:{name}" for name in ("anomaly", "summary", "fail")}


# -- data ----------------------------------------------------------------------------------

def _dataset(time: Any, name: str = "sst") -> xr.Dataset:
    rng = np.random.default_rng(0)
    shape = (len(time), 6, 8)
    return xr.Dataset(
        {name: (("time", "lat", "lon"), rng.normal(15, 3, shape).astype("f4"))},
        coords={"time": time, "lat": np.linspace(-75, 75, 6), "lon": np.arange(8) * 45.0},
    )


def _federated(root: Path, context: SiteContext, name: str, ds: xr.Dataset) -> xr.Dataset:
    """``ds`` stored at the corpus site (``context``) and opened as the federation client
    does."""
    path = root / f"{name}.zarr"
    with dask.config.set(scheduler="sync"):  # setting up, not part of the corpus
        ds.chunk({"time": 10}).to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    source = ZarrSource(str(path))
    context.sources[ref(SITE, name)] = source
    with source.open() as opened:
        info = describe_dataset(SITE, name, opened)
    return build_dataset(info)


def legitimate_values() -> dict[str, Any]:
    """Values that cross to and from strict sites as arguments, coordinates and results."""
    naive = pd.date_range("2000-01-01", periods=4, freq="D")
    aware = pd.date_range("2000-01-01", periods=4, freq="h", tz="Europe/Berlin")
    noleap = xr.date_range("2000-01-01", periods=4, calendar="noleap", use_cftime=True)
    multi = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["x", "y"])
    multi_coords = xr.Coordinates.from_pandas_multiindex(multi, "z")
    return {
        "naive": naive, "utc": naive.tz_localize("UTC"), "aware": aware,
        "timestamp": aware[0], "timedelta": pd.Timedelta("1h"), "offset": naive.freq,
        "timedeltas": pd.timedelta_range("1h", periods=3),
        "cftime": noleap, "cftime_object": noleap[0],
        "cftime_calendars": [
            xr.date_range("2000-01-01", periods=2, calendar=c, use_cftime=True)
            for c in ("360_day", "julian", "proleptic_gregorian", "all_leap", "standard",
                      "366_day", "365_day", "gregorian")
        ] + [cftime.datetime(2000, 1, 1, calendar="360_day")],
        "multi": multi,
        "categorical": pd.Categorical(["a", "b", "a"]),
        "categorical_index": pd.CategoricalIndex(["a", "b", "a"]),
        "period": pd.period_range("2000-01", periods=3, freq="M"),
        "interval": pd.interval_range(0, 3),
        "range": pd.RangeIndex(3), "index": pd.Index(["a", "b"]),
        "datetime64": np.arange(3).astype("datetime64[D]"),
        "timedelta64": np.arange(3).astype("timedelta64[s]"),
        "builtins": [{1, 2}, frozenset({3}), 1 + 2j, range(3), bytearray(b"x"), b"y",
                     slice(1, None, 2), Ellipsis],
        "datetime": [datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc),
                     datetime.date(2000, 1, 1), datetime.time(12), datetime.timedelta(1)],
        "collections": [collections.OrderedDict(a=1), collections.defaultdict(list, a=[1]),
                        collections.Counter("ab"), collections.deque([1])],
        "numpy_scalars": [np.float32(1), np.int64(2), np.datetime64("2000-01-01"),
                          np.timedelta64(1, "h"), np.bool_(True), np.str_("a")],
        "masked": np.ma.masked_array([1.0, 2.0], mask=[False, True]),
        "series": pd.Series([1.0, 2.0], index=naive[:2]),
        "frame": pd.DataFrame({"a": [1, 2]}, index=aware[:2]),
        "ds_aware": xr.Dataset({"a": ("time", [1.0, 2.0, 3.0, 4.0])}, coords={"time": aware}),
        "ds_multi": xr.Dataset({"a": ("z", np.arange(4.0))}, coords=multi_coords),
        "ds_cftime": xr.Dataset({"a": ("time", np.arange(4.0))}, coords={"time": noleap}),
        "ds_categorical": xr.Dataset(coords={"c": pd.CategoricalIndex(["a", "b"])}),
        "ds_range_index": xr.Dataset(coords=xr.Coordinates.from_xindex(
            xr.indexes.RangeIndex.arange(0.0, 1.0, 0.25, dim="x"))),
    }


def analyses(root: Path, context: SiteContext) -> Iterator[tuple[str, Any]]:
    """(name, lazy object) of the corpus, its datasets stored under ``root`` and added to
    the corpus site's ``context``; each is computed on the recording cluster."""
    time = pd.date_range("2000-01-01", periods=60, freq="D")
    ds = _federated(root, context, "sst", _dataset(time))
    sst = ds.sst
    chl = _federated(root, context, "chl", _dataset(time, "chl")).chl
    # tz-aware and cftime times from clients' own (dask) data, as method arguments
    aware = _dataset(time.tz_localize("UTC")).chunk(time=10).sst
    noleap = xr.date_range("2000-01-01", periods=60, calendar="noleap", use_cftime=True)
    cf = _dataset(noleap).chunk(time=10).sst
    space = ["lat", "lon"]
    yield "reductions", [sst.mean(), sst.std("time"), sst.max(space), sst.min(),
                         sst.sum("lon"), sst.median("lat"), sst.count(), sst.argmax("time")]
    yield "groupby", (sst.groupby("time.month") - sst.groupby("time.month").mean()).std("time")
    yield "groupby_bins", sst.groupby_bins("lat", [-90, 0, 90]).mean()
    yield "resample", [sst.resample(time="MS").mean(), cf.resample(time="7D").max()]
    yield "rolling", sst.rolling(time=5, center=True).mean()
    yield "coarsen", sst.coarsen(lat=2, lon=2).mean()
    yield "where", sst.where(sst > 15, 0.0)
    yield "corr_cov", [xr.corr(sst.mean(space), chl.mean(space), dim="time"),
                       xr.cov(sst, chl, dim="time")]
    weights = np.cos(np.deg2rad(sst.lat))
    yield "weighted", sst.weighted(weights).mean(space)
    yield "quantile", sst.chunk(time=-1).quantile([0.1, 0.9], dim="time")
    yield "cumulative", [sst.cumsum("time"), sst.cumprod("lat"), sst.cumulative("time").sum()]
    yield "interp", sst.interp(lat=[-10.0, 10.0], method="linear")
    yield "polyfit", sst.polyfit("time", deg=1)
    yield "concat_merge", [xr.concat([sst.isel(time=slice(0, 10)), sst.isel(time=slice(20, 30))],
                                     "time"), xr.merge([sst, chl])]
    yield "astype", sst.astype("f8").isel(time=0)
    yield "isel_sel", [sst.isel(lat=0), sst.sel(time="2000-01"),
                       sst.sel(lat=0.0, method="nearest"), aware.sel(time="2000-01-05"),
                       cf.sel(time=slice("2000-01-01", "2000-01-10"))]
    yield "stack", sst.stack(point=space).isel(point=slice(0, 4))
    yield "map_blocks_method", sst.map_blocks(anomaly)
    yield "map_blocks", [sst.data.map_blocks(np.sqrt), sst.chunk(time=-1).map_blocks(anomaly)]
    yield "method_lazy_args", [
        dask.delayed(run_method, pure=False)(f"{SITE}/summary", d)
        for d in (ds, aware.to_dataset(), cf.to_dataset())
    ]
    yield "method", dask.delayed(run_method, pure=False)(f"{SITE}/anomaly", sst.isel(lat=0))
    # (tz-aware times cannot be stored: xarray's CF encoding has no time zones)
    for name, obj in (("result", sst.mean("time")), ("result_cftime", cf.mean(space))):
        provenance = {"result": f"{SITE}/results/{name}"}
        yield "publish_result", dask.delayed(write_result, pure=False)(
            f"{SITE}/results/{name}", obj, provenance, True
        )


# -- recording ------------------------------------------------------------------------------

class _Recorder(pickle.Unpickler):
    seen: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        _Recorder.seen.add((module, name))
        found = super().find_class(module, name)
        if found is cloudpickle.cloudpickle._make_function:
            return _recording_make_function
        if found is getattr:
            return _recording_getattr
        return found


def _recording_getattr(obj: Any, name: str, *default: Any) -> Any:
    # private attributes (bound methods pickle as getattr(obj, name)) by class
    if name.startswith("_"):
        module, qualname = attribute_ref(obj, name).split(":")
        _Recorder.seen.add((module, qualname))
    return getattr(obj, name, *default)


def _recording_make_function(code: Any, globals: dict, *args: Any) -> Any:
    # a function sent by value: recorded as module:qualname of its code
    _Recorder.seen.add((globals.get("__name__", "?"), code.co_qualname))
    return cloudpickle.cloudpickle._make_function(code, globals, *args)


def _recording_loads(data: bytes, *, buffers: Any = ()) -> Any:
    return _Recorder(io.BytesIO(data), buffers=buffers).load()


@contextlib.contextmanager
def recording() -> Iterator[set[tuple[str, str]]]:
    """Every global unpickled in this process meanwhile (distributed's unpickler)."""
    original = distributed.protocol.pickle.loads
    _Recorder.seen = set()
    distributed.protocol.pickle.loads = _recording_loads
    try:
        yield _Recorder.seen
    finally:
        distributed.protocol.pickle.loads = original


def run_corpus(root: Path) -> set[tuple[str, str]]:
    """Compute the corpus on a recording in-process cluster; the globals unpickled."""
    # the corpus site's workers (in this process) share one context without a capability
    # key: nothing is checked, as on workers outside a federation
    context = SiteContext.for_site(SITE, {}, methods=METHODS, results_dir=str(root / "results"))
    with (
        contextlib.ExitStack() as stack,
        warnings.catch_warnings(),
        recording() as seen,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                     dashboard_address=None, plugins={SiteWorkerPlugin(context)}) as cluster,
        cluster.get_client() as client,
    ):
        warnings.simplefilter("ignore")
        # strict sites refuse distributed's P2P rechunking (its tasks and plugin)
        stack.enter_context(dask.config.set({"array.rechunk.method": "tasks"}))
        # write_result reports the stored result to the hub; this cluster has none
        cluster.scheduler.handlers[ADD_RESULT] = lambda **kwargs: None
        # ... and asks the hub who publishes it, from which datasets and methods
        cluster.scheduler.handlers[RESULT_PUBLISHER] = lambda **kwargs: {
            "published_by": "corpus", "datasets": [], "methods": [],
        }
        for name, obj in analyses(root, context):
            try:
                client.gather(client.compute(obj))
            except Exception as e:
                raise RuntimeError(f"corpus analysis {name!r} failed: {e!r}") from e
        failing = client.compute(dask.delayed(run_method, pure=False)(f"{SITE}/fail", "x"))
        with contextlib.suppress(Exception):
            failing.result()
        # values as task arguments and results, and stored at a worker by the client
        values = legitimate_values()
        client.submit(toolz.identity, values, pure=False).result()
        client.gather(client.scatter([values], hash=False))
    return seen


def allowlist_entries(seen: set[tuple[str, str]]) -> list[str]:
    """The recorded globals as ``module:name`` lines, without the corpus's own methods
    (site code, allowed by a site's ``methods:``) and distributed's P2P shuffle plugin
    (sent to every worker; strict workers refuse plugins)."""
    return sorted({
        f"{m}:{n}" for m, n in seen if m != __name__ and not m.startswith("distributed.shuffle")
    })


#: Entries whose names trip the review's rules, checked by hand.
REVIEWED = {
    "builtins:bytes": "the bytes type (the rule is for dask.bytes)",
    "pandas._libs.arrays:__pyx_unpickle_NDArrayBacked":
        "Cython's unpickling helper of pandas' datetime, period and string arrays",
    "cloudpickle.cloudpickle:subimport":
        "wrapped: imports only modules of allow-listed functions",
    "federation.sitecalls:read_chunk": "reads only the site's own datasets, for the hub's tasks",
    "federation.sitecalls:write_result": "writes only into the site's results_dir",
    "zarr.codecs.bytes:BytesCodec": "zarr 3's byte-order codec: a frozen record of an endian",
    "zarr.codecs.bytes:Endian": "the enum of byte orders of zarr 3's bytes codec",
}


#: dask-federation's own functions that the hub's graphs call at a site, allowed whether or
#: not the corpus ran them: the site-bound calls of the contract (each also checked by its
#: signed capability) and the HTTP API's result encoder, which runs beside a method call.
FEDERATION_OWN = frozenset({
    *(f"{module}:{name}" for name, (module, _) in SITE_CALLS.items()),
    "scheduler_plugins.http.codec:encode_result",
})


def review(entries: list[str]) -> list[str]:
    """Entries that must not be on the allow-list, with the reason."""
    problems = []
    for entry in entries:
        if entry in REVIEWED:
            continue
        module, name = entry.split(":")
        reason = denied_name(module, name) if ".<locals>." not in name else None
        if reason is None:
            reason = _signature_problem(module, name)
        if reason:
            problems.append(f"{entry}: {reason}")
    return problems


def _signature_problem(module: str, name: str) -> str | None:
    obj: Any = sys.modules.get(module)
    for part in name.split(".<locals>.")[0].split("."):
        obj = getattr(obj, part, None)
    if not callable(obj):
        return None
    with contextlib.suppress(TypeError, ValueError):
        params = inspect.signature(obj).parameters
        paths = [p for p in params if p in PATH_PARAMETERS]
        if paths:
            return f"takes a path ({', '.join(paths)})"
    return None


#: Parameter names of callables that open, read or write files.
PATH_PARAMETERS = frozenset({
    "path", "paths", "file", "filename", "filepath", "filepath_or_buffer", "fname", "fid",
    "path_or_buf", "urlpath", "store", "mode", "url", "io", "directory", "dirname",
})


HEADER = """\
# The strict allow-list: every global a strict site's workers (and the hub, for users'
# graphs) may unpickle, as module:qualname. Generated by `python -m federation.strict_corpus`
# from a corpus of ordinary analyses, reviewed by it and by tests/test_strict.py (nothing
# that opens paths, imports, evaluates or reaches the OS). Regenerate after upgrading
# numpy, pandas, xarray, dask or cloudpickle; review the diff; commit.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m federation.strict_corpus",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed list instead of writing it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        entries = sorted(set(allowlist_entries(run_corpus(Path(tmp)))) | FEDERATION_OWN)
    problems = review(entries)
    if problems:
        print("refusing to allow-list:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if args.check:
        missing = sorted(set(entries) - set(ALLOWLIST))
        print("\n".join(missing) if missing else "the committed allow-list covers the corpus")
        return 1 if missing else 0
    ALLOWLIST_PATH.write_text(HEADER + "".join(f"{e}\n" for e in entries))
    print(f"wrote {len(entries)} globals to {ALLOWLIST_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
