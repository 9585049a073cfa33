"""A real federation for the tests: hub and sites as CLI subprocesses.

Each site's data lives in its own temporary folder that only its config names, so a
read routed to the wrong site fails (``DatasetNotHere``) instead of silently working.
"""

from __future__ import annotations

from pathlib import Path

import dask
import pytest
import xarray as xr
from distributed import default_client

from federation.demo import write_dataset
from federation.local import write_site_config
from federation.protocol import site_of

# 40 days of a 1° global grid in 8 chunks of 5 days: ~10 MB per variable
TEST_SIZE = 40 * 180 * 360 * 4
CHUNK_DAYS = 5

SITES = {
    "awi": ("sst", "sst.zarr", 2),  # kind, file, workers
    "geomar": ("chl", "chl.zarr", 1),
    "dkrz": ("t2m", "t2m.nc", 1),
}


# Methods awi shares in the tests; the module sits next to awi.yaml, as a provider's would.
AWI_TOOLS = '''
"""Tools the AWI test site shares."""
import xarray as xr
from distributed import get_worker

import federation


def echo(x: int) -> int:
    """Return x unchanged."""
    return x


def scale(data: xr.DataArray, factor: float = 2.0) -> xr.DataArray:
    """Multiply data by a factor.

    Runs at the site; lazy inputs arrive computed.
    """
    return data * factor


def where() -> str:
    """Name of the worker this runs on."""
    return get_worker().name


def fail(message: str) -> None:
    """Always raises ValueError(message)."""
    raise ValueError(message)


def links(sst: str, chl: str, t2m: str) -> dict[str, float]:
    """Correlations of area-mean SST with chlorophyll and with tropical air temperature."""
    with federation.worker_federation() as fed:
        s = fed.open_dataset(sst).sst.mean(["lat", "lon"])
        c = fed.open_dataset(chl).chl.mean(["lat", "lon"])
        t = fed.open_dataset(t2m).t2m.sel(lat=slice(-30, 30)).mean(["lat", "lon"])
        r_chl, r_t2m = xr.corr(s, c, dim="time"), xr.corr(s, t, dim="time")
        return {"chl": float(r_chl.compute()), "t2m": float(r_t2m.compute())}
'''

AWI_METHODS = {
    "methods": {n: f"awi_tools:{n}" for n in ("echo", "scale", "where", "fail")},
    "workflows": {"links": "awi_tools:links"},
    "results_dir": "results",
}


def make_site(
    root: Path, site: str, kind: str, filename: str, tools: str | None = None, **config
) -> Path:
    """Write a site's data and config in ``root/site``; returns the config path."""
    folder = root / site
    folder.mkdir(parents=True, exist_ok=True)
    if tools:
        (folder / f"{site}_tools.py").write_text(tools)
    write_dataset(kind, folder / filename, config.pop("size", TEST_SIZE),
                  chunk_days=config.pop("chunk_days", CHUNK_DAYS))
    config.setdefault("workers", 1)
    config.setdefault("nthreads", 2)
    config.setdefault("memory_limit", "1GiB")
    return write_site_config(
        folder / f"{site}.yaml", site=site, **config,
        datasets={kind: {"path": filename, "description": f"test {kind}"}},
    )


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sites")


@pytest.fixture(scope="session")
def federations(data_root, tmp_path_factory):
    """The session's subprocess federations by kind (``tests/federations.py``)."""
    from .federations import Federations

    pool = Federations(tmp_path_factory, data_root)
    yield pool
    pool.close()


@pytest.fixture
def federation(request, federations):
    """A started federation of the kind given by indirect parametrisation
    (``@pytest.mark.parametrize("federation", ["strict"], indirect=True)``), else ``plain``."""
    return federations.get(getattr(request, "param", "plain"))


@pytest.fixture(scope="session")
def local_federation(federations):
    """Hub plus awi (2 workers), geomar and dkrz, each reading only its own folder."""
    return federations.get("plain")


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA and certificates made with the CLI (tests/pki.py), one per module."""
    from .pki import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def fed(local_federation):
    with local_federation.connect() as fed:
        yield fed


@pytest.fixture(autouse=True)
def _session_client_computes(request):
    """Tests of the session federation compute with its client, whatever other clients
    (opened and closed by other modules, in any order) did to dask's default scheduler.
    Other tests start without a dangling default: clients closed out of order can leave
    ``scheduler: dask.distributed`` with no client left, and a test's local reference
    computation (plain xarray on the site's files) would then fail."""
    if "fed" not in request.fixturenames:
        scheduler = dask.config.get("scheduler", None)
        if scheduler in ("dask.distributed", "distributed"):
            try:
                default_client()
            except ValueError:  # no client left: dangling
                scheduler = None
        with dask.config.set(scheduler=scheduler):
            yield
        return
    client = request.getfixturevalue("fed").client
    with dask.config.set(scheduler=client), client.as_current():
        yield


def site_path(data_root: Path, site: str) -> Path:
    kind, filename, _ = SITES[site]
    return data_root / site / filename


def open_local(path: Path) -> xr.Dataset:
    """Open a site's file directly, as the reference for federated results."""
    if path.suffix == ".zarr":
        return xr.open_zarr(path, consolidated=False)
    return xr.open_dataset(path, chunks={})


def worker_sites(fed) -> dict[str, str]:
    """Worker address -> site, from the resources the workers advertise."""
    info = fed.client.scheduler_info(n_workers=-1)["workers"]
    return {addr: site_of(w["resources"]) for addr, w in info.items()}
