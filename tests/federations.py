"""Real subprocess federations for integration tests, by kind, started once and shared.

Each kind is a hub and sites as CLI subprocesses (``federation.local.LocalFederation``),
built by one function below. Tests get them through the ``federation`` fixture
(``tests/conftest.py``): unparametrised it is the ``plain`` federation; a module asks for
another kind with ``@pytest.mark.parametrize("federation", ["tls"], indirect=True)``, and
module-scoped fixtures use ``federations.get(kind)``. Started kinds are reused by every
module that asks for them. ``plain`` lives for the whole session; of the other kinds one
runs at a time (asking for a new kind stops the previous one), which keeps memory bounded
on a small machine — so put modules using the same kind next to each other, or use
``plain`` where a test does not need anything special. A shared federation must stay as
it was: tests that stop its hub, revoke its certificates or rewrite its grants start their
own ``LocalFederation`` (adding sites under new names, as several tests do, is fine).

A new kind: a generator ``(root: Path) -> Iterator[LocalFederation]`` in ``KINDS`` that
yields a started federation and cleans up after the yield. Attributes tests read (``root``,
``configs``, ``fed`` …) are set on the ``LocalFederation``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from federation.local import LocalFederation

from .conftest import AWI_METHODS, AWI_TOOLS, SITES, make_site
from .pki import _creds, make_pki


def plain(root: Path) -> Iterator[LocalFederation]:
    """Hub plus awi (2 workers, methods), geomar and dkrz, each reading only its own
    folder (``root``; the session's ``data_root``)."""
    configs = {
        site: make_site(root, site, kind, filename, workers=workers)
        for site, (kind, filename, workers) in SITES.items() if site != "awi"
    }
    kind, filename, workers = SITES["awi"]
    configs["awi"] = make_site(
        root, "awi", kind, filename, tools=AWI_TOOLS, workers=workers, **AWI_METHODS
    )
    with LocalFederation(root / "logs") as lf:
        procs = {site: lf.start_site(cfg, wait=False) for site, cfg in configs.items()}
        for site, proc in procs.items():
            lf.wait_for_site(site, proc)
        lf.configs = configs
        yield lf


def strict(root: Path) -> Iterator[LocalFederation]:
    """awi strict (methods of the plain kind), geomar not; 16 days, 4 chunks each. ``fed``:
    a connected client."""
    size = 16 * 180 * 360 * 4
    awi = make_site(root, "awi", "sst", "sst.zarr", tools=AWI_TOOLS, size=size, strict=True,
                    **AWI_METHODS)
    geomar = make_site(root, "geomar", "chl", "chl.zarr", size=size)
    with LocalFederation(root / "logs", dashboard=False) as lf:
        procs = {"awi": lf.start_site(awi, wait=False),
                 "geomar": lf.start_site(geomar, wait=False)}
        for site, proc in procs.items():
            lf.wait_for_site(site, proc)
        lf.root = root
        with lf.connect() as fed:
            lf.fed = fed
            yield lf


POLAR_TOOLS = '''
import xarray as xr


def global_mean(data: xr.DataArray) -> float:
    """The global mean: the one number polar lets leave."""
    return float(data.mean())
'''


def policy(root: Path) -> Iterator[LocalFederation]:
    """polar/sst: egress none (+ a published method); ocean/chl: aggregated, at most 1 kB;
    ice/t2m: egress none at a third site. ``fed``: a connected client."""
    lf = LocalFederation(root / "logs", dashboard=False)
    lf.start_hub()
    try:
        specs = [
            ("polar", "sst", "sst.zarr", {"egress": "none"},
             # its output may leave as one small value (undeclared: the inputs' class)
             {"methods": {"global_mean": {"function": "polar_tools:global_mean",
                                          "release": "aggregated", "max_egress_bytes": "1kB"}}}),
            ("ocean", "chl", "chl.zarr", {"egress": "aggregated", "max_egress_bytes": "1kB"}, {}),
            ("ice", "t2m", "t2m.zarr", {"egress": "none"}, {}),
        ]
        for site, kind, filename, egress, extra in specs:
            cfg = make_site(root, site, kind, filename, size=10 * 180 * 360 * 4,
                            tools=POLAR_TOOLS if site == "polar" else None, **extra)
            config = yaml.safe_load(cfg.read_text())
            config["datasets"][kind].update(egress)
            cfg.write_text(yaml.safe_dump(config))
            lf.start_site(cfg)
        lf.root = root
        with lf.connect() as fed:
            lf.fed = fed
            yield lf
    finally:
        lf.close()


def tls(root: Path) -> Iterator[LocalFederation]:
    """Mutual TLS: a CA made with the CLI (``pki``: tests/pki.py), hub, awi and geomar
    (10 days each); grants: alice awi/*, site:awi everything; bob and mallory nothing."""
    pki = make_pki(root / "pki")
    hub_yaml = root / "hub.yaml"
    hub_yaml.write_text(yaml.safe_dump({"grants": {"alice": ["awi/*"], "site:awi": ["*"]}}))
    with LocalFederation(root / "logs", dashboard=False, tls=_creds(pki, "hub-hub"),
                         hub_args=("--config", str(hub_yaml))) as lf:
        for site, kind, filename in (("awi", "sst", "sst.zarr"), ("geomar", "chl", "chl.zarr")):
            cfg = make_site(root, site, kind, filename, size=10 * 180 * 360 * 4)
            ca, cert, key = _creds(pki, f"site-{site}")
            lf.start_site(cfg, "--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key)
        lf.root, lf.pki = root, pki
        yield lf


KINDS: dict[str, Callable[[Path], Iterator[LocalFederation]]] = {
    "plain": plain, "strict": strict, "policy": policy, "tls": tls,
}


class Federations:
    """The session's started federations: ``plain`` until the end, one other at a time."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, plain_root: Path):
        self._tmp = tmp_path_factory
        self._plain_root = plain_root
        self._running: dict[str, tuple[LocalFederation, contextlib.ExitStack]] = {}

    def get(self, kind: str) -> LocalFederation:
        """The started federation of ``kind`` (starting it, and stopping the previous
        non-plain kind, if needed). Raises ``KeyError`` naming the known kinds."""
        if kind not in KINDS:
            raise KeyError(f"no federation kind {kind!r}; tests/federations.py has "
                           f"{sorted(KINDS)}")
        if kind not in self._running:
            for other in [k for k in self._running if k != "plain"]:
                self._running.pop(other)[1].close()
            root = self._plain_root if kind == "plain" else self._tmp.mktemp(kind)
            stack = contextlib.ExitStack()
            lf = stack.enter_context(contextlib.contextmanager(KINDS[kind])(root))
            self._running[kind] = (lf, stack)
        return self._running[kind][0]

    def close(self) -> None:
        """Stop every running federation, the plain one last."""
        for kind in sorted(self._running, key=lambda k: k == "plain"):
            self._running.pop(kind)[1].close()
