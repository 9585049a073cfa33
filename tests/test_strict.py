"""Strict sites, against a real hub and site processes: awi is strict, geomar is not."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import io
import operator
import os
import pickle
import subprocess
import sys
from pathlib import Path

import dask
import dask.array
import dateutil.tz
import numpy as np
import numpy.ma.mrecords
import pandas as pd
import pytest
import toolz
import xarray as xr
from dask._task_spec import Task
from distributed import Client, Scheduler, Worker, WorkerPlugin
from distributed.core import rpc
from distributed.protocol import pickle as distributed_pickle
from distributed.protocol.serialize import Serialized, ToPickle
from distributed.utils_test import gen_test

from federation import StrictRefusal, strict, strict_hub
from federation.security import init_ca, issue, security
from federation.strict_corpus import PATH_PARAMETERS, legitimate_values, review

from .conftest import make_site, open_local, worker_sites


@pytest.fixture(scope="module")
def strict_federation(federations):
    """awi strict, geomar not (``tests/federations.py``: ``strict``)."""
    return federations.get("strict")


@pytest.fixture
def fed(strict_federation):
    return strict_federation.fed


@pytest.fixture
def marker(strict_federation, request) -> Path:
    path = strict_federation.root / f"pwned-{request.node.name}"
    assert not path.exists()
    return path


def _workers(fed, site: str) -> list[str]:
    return sorted(a for a, s in worker_sites(fed).items() if s == site)


def _local_sst(lf) -> xr.DataArray:
    """awi's data read here, in this process (not by the federation's workers)."""
    with dask.config.set(scheduler="sync"):
        return open_local(lf.root / "awi" / "sst.zarr").sst.load()


def _assert_strict_site_serves(fed, lf, workers: list[str]) -> None:
    """The strict worker survived (same address, still connected) and still computes."""
    assert _workers(fed, "awi") == workers
    expected = float(_local_sst(lf).mean())
    assert float(fed.open_dataset("awi/sst").sst.mean().compute()) == pytest.approx(expected)


def test_xarray_reductions_methods_and_results_work_on_a_strict_site(strict_federation, fed):
    local = _local_sst(strict_federation)
    sst = fed.open_dataset("awi/sst").sst
    assert float(sst.mean().compute()) == pytest.approx(float(local.mean()))
    clim = sst.groupby("time.month").mean("time")
    anomaly = (sst.groupby("time.month") - clim).std("time").compute()
    expected = (local.groupby("time.month") - local.groupby("time.month").mean("time")).std("time")
    np.testing.assert_allclose(anomaly.values, expected.values, rtol=1e-5)
    # across a strict and a non-strict site
    chl = fed.open_dataset("geomar/chl").chl
    r = xr.corr(sst.mean(["lat", "lon"]), chl.mean(["lat", "lon"]), dim="time").compute()
    assert -1 <= float(r) <= 1
    # published methods, with a lazy argument, and a stored result
    assert fed.method("awi/echo")(3).compute() == 3
    scaled = fed.method("awi/scale")(sst.isel(time=0), factor=3.0).compute()
    np.testing.assert_allclose(scaled.values, 3 * local.isel(time=0).values, rtol=1e-6)
    ref = fed.publish_result("sst-mean", sst.mean("time"), site="awi")
    stored = fed.open_dataset(ref).sst.mean().compute()
    assert float(stored) == pytest.approx(float(local.mean()), rel=1e-5)


def test_a_function_from_the_client_is_refused_and_nothing_runs(strict_federation, fed, marker):
    workers = _workers(fed, "awi")

    def evil(x):
        marker.write_text("pwned")
        return x

    # by value (defined in this test): cloudpickle's function builder is refused
    future = fed.client.submit(evil, 1, resources={"site:awi": 1}, pure=False)
    with pytest.raises(StrictRefusal, match=r"strict site 'awi' refuses .*"
                       r"'cloudpickle\.cloudpickle\._make_function' \(code defined in the "
                       r"client's session, sent by value\).*strict_modules"):
        future.result(timeout=30)
    # mapped onto the site's data (meta given: dask would call evil here to guess it)
    sst = fed.open_dataset("awi/sst").sst
    with pytest.raises(StrictRefusal, match="strict site 'awi' refuses"):
        sst.data.map_blocks(evil, meta=np.array((), dtype="f4")).sum().compute()
    # by reference: an importable function that is not on the allow-list
    future = fed.client.submit(os.system, f"touch {marker}", resources={"site:awi": 1})
    with pytest.raises(StrictRefusal, match=r"refuses 'posix\.system' \(not on the allow-list\)"):
        future.result(timeout=30)
    future = fed.client.submit(np.save, str(marker), np.zeros(1), resources={"site:awi": 1})
    with pytest.raises(StrictRefusal, match=r"'numpy\.save' \(it can do file, process or network"):
        future.result(timeout=30)
    assert not marker.exists() and not marker.with_suffix(".npy").exists()
    _assert_strict_site_serves(fed, strict_federation, workers)


def test_the_same_function_runs_on_a_site_that_is_not_strict(fed, marker):
    def evil(x):
        marker.write_text("pwned")
        return x

    assert fed.client.submit(evil, 1, resources={"site:geomar": 1}).result(timeout=30) == 1
    assert marker.read_text() == "pwned"
    marker.unlink()


class Payload:
    """Runs a shell command when unpickled by a plain unpickler."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class WriteFile:
    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.write_text, (self.path, "pwned")


def test_crafted_pickles_sent_to_a_strict_worker_do_not_run(strict_federation, fed, marker):
    workers = _workers(fed, "awi")
    (addr,) = workers[:1]
    # straight to the worker, not through the hub (the hub unpickles client graphs);
    # hash=False: dask's tokenize would unpickle the payload here, in the test
    [future] = fed.client.scatter([Payload(f"touch {marker}")], workers=[addr], direct=True,
                                  hash=False)
    refused = future.result(timeout=30)  # the data is the refusal, nothing ran
    assert isinstance(refused, StrictRefusal)
    assert "refuses 'posix.system'" in str(refused)

    async def send_and_fetch(**data):
        async with rpc(addr) as worker:
            await worker.update_data(data=data)
            return await worker.get_data(keys=list(data))

    reply = fed.client.sync(send_and_fetch, crafted=ToPickle(WriteFile(marker)))
    refused = reply["data"]["crafted"]
    assert isinstance(refused, StrictRefusal)
    assert "refuses 'pathlib.Path.write_text'" in str(refused)
    # geomar (not strict) shows the payload is live
    geomar = _workers(fed, "geomar")[0]
    [future] = fed.client.scatter([Payload(f"touch {marker}.geomar")], workers=[geomar],
                                  direct=True, hash=False)
    future.result(timeout=30)
    assert Path(f"{marker}.geomar").exists()
    assert not marker.exists()
    _assert_strict_site_serves(fed, strict_federation, workers)


def test_client_run_and_plugins_are_refused(strict_federation, fed, marker):
    workers = _workers(fed, "awi")

    def evil():
        marker.write_text("pwned")

    # the hub relays the worker's error as text: distributed's broadcast does not unpickle it
    with pytest.raises(Exception, match="StrictRefusal.*strict site 'awi' does not run code "
                       "sent outside a task"):
        fed.client.run(evil, workers=workers[:1])
    with pytest.raises(Exception, match="StrictRefusal.*strict site 'awi' does not run code"):
        fed.client.run(evil, workers=workers[:1], nanny=True)

    class Evil(WorkerPlugin):
        name = "evil"

        def setup(self, worker):
            Path(f"{marker}.{worker.name}").write_text("pwned")

    with pytest.raises(StrictRefusal, match="does not install plugins"):
        fed.client.register_plugin(Evil())
    assert not any(marker.parent.glob(f"{marker.name}*awi*")) and not marker.exists()
    assert list(marker.parent.glob(f"{marker.name}*geomar*"))  # the open site ran it
    with pytest.raises(KeyError, match="evil"):  # removed at geomar; awi never had it
        fed.client.unregister_worker_plugin("evil")
    _assert_strict_site_serves(fed, strict_federation, workers)


def test_strict_modules_that_cannot_be_imported_stop_the_site(tmp_path):
    cfg = make_site(tmp_path, "awi", "sst", "sst.zarr", size=5 * 180 * 360 * 4, strict=True,
                    strict_modules=["no_such_module_xyz"])
    proc = subprocess.run(
        [sys.executable, "-m", "federation.cli", "site", str(cfg), "--hub", "tcp://127.0.0.1:9"],
        capture_output=True, text=True, timeout=90,
    )
    assert proc.returncode == 2
    assert "strict_modules: cannot import 'no_such_module_xyz': ModuleNotFoundError" in proc.stderr


# -- the allow-list itself, without a federation ------------------------------------------


@pytest.fixture
def policy(monkeypatch):
    monkeypatch.setattr(strict, "_policy", strict.StrictPolicy("awi"))


@pytest.mark.parametrize("payload, refused", [
    (operator.attrgetter("__init__.__globals__"), "operator.attrgetter('__init__.__globals__')"),
    (operator.methodcaller("tofile", "/tmp/x"), "operator.methodcaller('tofile')"),
    (np.load, "numpy.load"),
    (xr.open_dataset, "xarray.backends.api.open_dataset"),
    (subprocess.Popen, "subprocess.Popen"),
    (eval, "builtins.eval"),
])
def test_gadgets_are_refused_while_unpickling(policy, payload, refused):
    obj = strict.restricted_loads(pickle.dumps(payload))
    assert isinstance(obj, strict.Refused)
    assert f"refuses {refused!r}" in obj.refusal
    with pytest.raises(StrictRefusal):
        obj("anything")


def _global(module: str, name: str) -> bytes:
    """A pickle of just the global ``module:name`` (a dotted name walks attributes)."""
    text = [bytes([0x8C, len(part)]) + part.encode() for part in (module, name)]
    return b"\x80\x04" + text[0] + text[1] + b"\x93."


def test_attribute_paths_in_global_names_are_refused(policy):
    obj = strict.restricted_loads(_global("xarray", "Dataset.__init__.__globals__"))
    assert isinstance(obj, strict.Refused)
    assert "private attributes reach code objects and globals" in obj.refusal
    assert strict.restricted_loads(_global("xarray", "Dataset")) is xr.Dataset


def test_ordinary_values_unpickle_unchanged(policy):
    ds = xr.Dataset({"a": ("x", np.arange(3.0))}, coords={"x": [1, 2, 3]})
    value = {"ds": ds, "f": operator.attrgetter("values"), "s": slice(1, 2)}
    back = strict.restricted_loads(pickle.dumps(value))
    xr.testing.assert_identical(back["ds"], ds)
    assert back["f"](ds.a).tolist() == [0.0, 1.0, 2.0] and back["s"] == slice(1, 2)


# -- legitimate values and analyses, malformed payloads, the allow-list itself ------------


def _time_indexed() -> dict[str, xr.DataArray]:
    """Data of the kinds that killed strict workers: tz-aware, cftime and MultiIndex."""
    values = np.arange(8.0).reshape(4, 2)
    naive = pd.date_range("2000-01-01", periods=4, freq="D")
    noleap = xr.date_range("2000-01-01", periods=4, calendar="noleap", use_cftime=True)
    multi = xr.Coordinates.from_pandas_multiindex(
        pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["x", "y"]), "time")
    return {
        name: xr.DataArray(values, dims=("time", "z"), coords=coords, name="v")
        for name, coords in (
            ("naive", {"time": naive}),
            ("aware", {"time": naive.tz_localize("Europe/Berlin")}),
            ("cftime", {"time": noleap}),
            ("multiindex", multi),
        )
    }


def test_time_indexed_and_multiindexed_data_through_methods_and_results(
    strict_federation, fed
):
    workers = _workers(fed, "awi")
    for data in _time_indexed().values():
        # as a value, and lazy (its graph carries the indexes to the strict worker)
        for arg in (data, data.chunk(time=2)):
            out = fed.call("awi/scale", arg, factor=2.0).result(timeout=60)
            xr.testing.assert_identical(out, data * 2.0)
    # stored as results at the strict site (tz-aware times cannot be stored: no CF encoding)
    for name in ("naive", "cftime"):
        data = _time_indexed()[name]
        fed.publish_result(f"indexed-{name}", data.chunk(time=2), site="awi", overwrite=True)
        # as the strict worker wrote it (the catalog's own view of cftime is not tested here)
        path = strict_federation.root / "awi" / "results" / f"indexed-{name}.zarr"
        coder = xr.coders.CFDatetimeCoder(use_cftime=name == "cftime")
        with xr.open_zarr(path, decode_times=coder, consolidated=False) as stored:
            xr.testing.assert_identical(stored.v.load(scheduler="sync"), data)
    _assert_strict_site_serves(fed, strict_federation, workers)


def test_malformed_and_failing_payloads_fail_alone_and_the_worker_survives(
    strict_federation, fed
):
    workers = _workers(fed, "awi")
    (addr,) = workers[:1]

    async def send_and_fetch(**data):
        async with rpc(addr) as worker:
            await worker.update_data(data=data)
            return await worker.get_data(keys=list(data))

    garbage = Serialized({"serializer": "pickle", "writeable": (False,)},
                         [b"\x80\x05garbage", b""])
    refused = fed.client.sync(send_and_fetch, garbage=garbage)["data"]["garbage"]
    assert isinstance(refused, StrictRefusal)
    assert "strict site 'awi' could not unpickle what it was sent: UnpicklingError" in str(
        refused)
    # a payload that the hub unpickles but the strict worker cannot (a time zone class
    # not on the allow-list, inside a DatetimeIndex): only that task fails
    index = pd.DatetimeIndex(["2000-01-01"], tz=dateutil.tz.tzutc())
    future = fed.client.submit(len, index, resources={"site:awi": 1}, pure=False)
    with pytest.raises(StrictRefusal, match=r"refuses 'dateutil\.tz\.tz\.tzutc' \(not on"):
        future.result(timeout=30)
    _assert_strict_site_serves(fed, strict_federation, workers)


def test_allowed_functions_that_open_paths_are_refused(strict_federation, fed, marker):
    """Issue 13, attack 5: a path-opening function inside an allowed library, chained
    with methodcaller("read"), read any file the worker can read."""
    workers = _workers(fed, "awi")
    secret = strict_federation.root / "awi" / "awi.yaml"
    opened = fed.client.submit(np.ma.mrecords.openfile, str(secret), resources={"site:awi": 1})
    read = fed.client.submit(operator.methodcaller("read"), opened, resources={"site:awi": 1})
    with pytest.raises(StrictRefusal, match=r"refuses 'numpy\.ma\.mrecords\.openfile' \(not on "
                       r"the allow-list\)"):
        read.result(timeout=30)
    # the reader alone, on data: methodcaller('read') is refused by name
    lines = fed.client.submit(operator.methodcaller("read"), ["x"], resources={"site:awi": 1})
    with pytest.raises(StrictRefusal, match=r"refuses \"operator\.methodcaller\('read'\)\""):
        lines.result(timeout=30)
    # the legitimate version: methodcaller and ordinary xarray work on the same site
    sst = fed.open_dataset("awi/sst").sst
    local = _local_sst(strict_federation)
    chunk = fed.client.compute(sst.isel(time=0).data)
    clipped = fed.client.submit(operator.methodcaller("clip", 0, 10), chunk,
                                resources={"site:awi": 1})
    np.testing.assert_array_equal(clipped.result(timeout=30), local.isel(time=0).clip(0, 10))
    rolled = sst.rolling(time=3).mean().coarsen(lat=2, lon=2).mean().weighted(
        np.cos(np.deg2rad(sst.lat.coarsen(lat=2).mean()))).mean(["lat", "lon"])
    expected = local.rolling(time=3).mean().coarsen(lat=2, lon=2).mean().weighted(
        np.cos(np.deg2rad(local.lat.coarsen(lat=2).mean()))).mean(["lat", "lon"])
    np.testing.assert_allclose(rolled.compute().values, expected.values, rtol=1e-5)
    assert not marker.exists()
    _assert_strict_site_serves(fed, strict_federation, workers)


def test_xarray_map_blocks_runs_and_session_code_does_not(strict_federation, fed):
    """xarray's map_blocks sends its own nested wrapper by value: rebuilt only because its
    code equals the allow-listed library function's."""
    sst = fed.open_dataset("awi/sst").sst.isel(time=slice(0, 10))
    out = sst.map_blocks(np.sqrt).compute()
    with np.errstate(invalid="ignore"):  # below 0 °C
        expected = np.sqrt(_local_sst(strict_federation).isel(time=slice(0, 10)).values)
    np.testing.assert_allclose(out.values, expected, rtol=1e-6)

    def double(data):
        return data * 2

    with pytest.raises(StrictRefusal, match=r"'cloudpickle\.cloudpickle\._make_function' "
                       r"\(code defined in the client's session"):
        sst.map_blocks(double).compute()


@pytest.mark.parametrize("name, value", list(legitimate_values().items()))
def test_legitimate_values_unpickle_unchanged(policy, name, value):
    back = strict.restricted_loads(pickle.dumps(value))
    assert not isinstance(back, strict.Refused), back.refusal
    assert type(back) is type(value)
    assert repr(back) == repr(value)  # values, dtypes, time zones, calendars, index types
    if isinstance(value, xr.Dataset):
        xr.testing.assert_identical(back, value)


def test_malformed_pickles_become_stand_ins(policy):
    for payload in (b"\x80\x05garbage", pickle.dumps(1)[:-1], b""):
        obj = strict.restricted_loads(payload)
        assert isinstance(obj, strict.Refused) and not obj.is_coro
        assert "could not unpickle what it was sent" in obj.refusal
        with pytest.raises(StrictRefusal):
            obj({})  # run as a task
        with pytest.raises(StrictRefusal):
            np.asarray(obj)  # used as a task's input


def _resolve(entry: str):
    module, qualname = entry.split(":")
    obj = importlib.import_module(module)
    for part in qualname.split(".<locals>.")[0].split("."):
        obj = getattr(obj, part)
    return obj


def _io_callables() -> set[int]:
    """ids of the callables of numpy, pandas, xarray and dask that read or write files."""
    import dask.array
    import dask.bag
    import xarray.backends

    found = {id(open), id(io.open), id(os.open), id(os.system), id(eval), id(exec),
             id(compile), id(__import__), id(importlib.import_module), id(subprocess.Popen),
             id(numpy.ma.mrecords.openfile), id(np.memmap), id(Path.open)}
    for module in (np, np.lib.format, pd, pd.io.parsers, xr, xarray.backends, dask,
                   dask.array, dask.bag, dask.utils, toolz):
        for name in dir(module):
            obj = getattr(module, name, None)
            if callable(obj) and strict.denied_name(module.__name__, name):
                found.add(id(obj))
    return found


def test_the_allow_list_holds_nothing_that_opens_paths():
    io_callables = _io_callables()
    assert id(np.load) in io_callables and id(xr.open_dataset) in io_callables
    problems = []
    for entry in sorted(strict.ALLOWLIST):
        obj = _resolve(entry)
        if id(obj) in io_callables:
            problems.append(f"{entry}: a known I/O function")
        try:
            params = inspect.signature(obj).parameters
        except (TypeError, ValueError):
            params = {}
        if paths := sorted(set(params) & PATH_PARAMETERS):
            problems.append(f"{entry}: takes {paths}")
    # the corpus generator's own review agrees
    assert review(sorted(strict.ALLOWLIST)) == []
    assert problems == []
    # and what pickles of attacks need is not there
    for entry in ("posix:system", "builtins:open", "builtins:eval", "numpy:load",
                  "numpy.ma.mrecords:openfile", "importlib:import_module",
                  "xarray.backends.api:open_dataset", "pandas.io.parsers.readers:read_csv"):
        assert entry not in strict.ALLOWLIST


# -- the hub: users' graphs unpickle with the allow-list ------------------------------------


class Touch:
    """Creates a file when unpickled by a plain unpickler."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


@gen_test(timeout=120)
async def test_a_users_pickled_graph_runs_no_code_on_the_hub(tmp_path):
    """Issue 13, item 8: the hub unpickled graphs with plain pickle."""
    ca = init_ca(tmp_path / "ca")
    creds = {who: security(ca, *issue(tmp_path / "ca", role, who))
             for role, who in (("hub", "hub"), ("site", "geomar"), ("user", "carol"),
                               ("user", "root"))}
    with dask.config.set({"federation.admins": ["root"]}):
        async with (
            Scheduler(security=creds["hub"], host="127.0.0.1", protocol="tls",
                      dashboard_address=":0") as hub,
            Worker(hub.address, security=creds["geomar"], resources={"site:geomar": 1}),
        ):
            strict_hub.install_hub(hub.listeners)
            async with Client(hub.address, security=creds["carol"], asynchronous=True) as carol:
                # held at the hub: no worker has the resource, only the hub unpickles it
                marker = tmp_path / "ran-at-hub"
                held = carol.submit(operator.add, Touch(marker), 1, resources={"nowhere": 1},
                                    key="held")
                while "held" not in hub.tasks:
                    await asyncio.sleep(0.05)
                assert not marker.exists() and held.status == "pending"
                # a pickled function sent to run on the hub does not run either
                with pytest.raises(Exception, match="the hub does not run code sent by users"):
                    await carol.run_on_scheduler(Path.touch, marker)
                assert not marker.exists()

                # the legitimate versions pass through the hub to the worker unchanged
                def local(x, offset=1):
                    return x + offset + len(str(marker))

                assert await carol.submit(local, 1, offset=2) == 3 + len(str(marker))
                ran = tmp_path / "ran-at-site"
                await carol.submit(toolz.identity, Touch(ran), key="sited")
                assert ran.exists()  # the open site runs it, as the README says
                array = dask.array.ones((10, 10), chunks=5).map_blocks(local)
                assert float(await carol.compute(array.sum())) == 100 * (2 + len(str(marker)))
            # an admin's pickle is unpickled plainly (the payload is live)
            async with Client(hub.address, security=creds["root"], asynchronous=True) as root:
                held = root.submit(operator.add, Touch(marker), 1, resources={"nowhere": 1},
                                   key="ad")
                while "ad" not in hub.tasks:
                    await asyncio.sleep(0.05)
                assert marker.exists()


def test_what_the_hub_does_not_run_reaches_workers_unchanged(policy, tmp_path):
    """Opaque at the hub; rebuilt as sent by an open site; refused by name at a strict one."""
    marker = tmp_path / "ran"

    class Settings:
        def __init__(self):
            self.scale = [2]

        def apply(self, x):
            return x * self.scale[0] + len(marker.name)

    def session_function(x, *, offset=1):
        return Settings().apply(x) + offset

    for payload, expected in (
        (Task("k", session_function, 3, offset=2), 11),
        (Task("k", Settings().apply, 3), 9),
        (Task("k", toolz.identity, Touch(marker)), None),
    ):
        at_hub = strict_hub.hub_loads(distributed_pickle.dumps(payload))
        assert not marker.exists()  # nothing ran at the hub
        sent_on = distributed_pickle.dumps(at_hub)
        assert pickle.loads(sent_on)({}) == expected  # an open site
        refused = strict.restricted_loads(sent_on)  # a strict site
        with pytest.raises(StrictRefusal, match=r"refuses .*'(cloudpickle\.cloudpickle\."
                           r"_make_function|pathlib\.Path\.touch)'"):
            refused({})
    assert marker.exists()  # the open site ran the last one
    # what the strict allow-list names is built at the hub as it is everywhere
    ds = xr.Dataset({"a": ("time", [1.0])}, coords={"time": pd.date_range("2000", periods=1,
                                                                           tz="UTC")})
    xr.testing.assert_identical(strict_hub.hub_loads(pickle.dumps(ds)), ds)


def test_a_standing_computation_runs_only_code_the_strict_site_allows(
    strict_federation, fed, marker
):
    """A standing computation's ``fn`` was stored with cloudpickle and loaded at the
    strict site with plain pickle on its next update: any user who may publish there ran
    any code (a forged version made that update recompute at once). Now ``fn`` unpickles
    under the allow-list when it is registered and whenever it runs."""
    from federation.sitecalls import standing_task
    from federation.standing import new_entry

    def evil(ds):
        marker.write_text("pwned")
        return ds.sst

    sst = fed.open_dataset("awi/sst")
    ref = fed.publish_result("standing-evil", sst.sst * 1, site="awi", overwrite=True)
    entry = new_entry(evil, "awi/sst", "time", sst.sizes["time"], "forged")
    register = dask.delayed(standing_task, pure=False)(ref, "register", entry)
    with pytest.raises(StrictRefusal, match="client's session, sent by value"):
        fed.client.compute(register).result()
    update = dask.delayed(standing_task, pure=False)(ref, "update")
    with pytest.raises(Exception, match="not a standing computation"):
        fed.client.compute(update).result()
    assert not marker.exists()
    # code the site allows stands (an allow-listed callable)
    mean = fed.standing("standing-mean", operator.methodcaller("mean", ["lat", "lon"]), "awi/sst",
                        overwrite=True)
    assert fed.standing_list().set_index("result").loc[mean, "state"] == "active"
    fed.standing_cancel(mean)
