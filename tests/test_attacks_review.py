"""Attacks found by a review of the newer features, each with its legitimate twin.

Against the session's real subprocess federation (``plain``: awi has ``results_dir``).
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

from federation.sitecalls import read_chunk, standing_task
from federation.standing import new_entry

#: one time step of awi's sst
STEP = (slice(0, 1), slice(None), slice(None))


@pytest.mark.parametrize("ref", [
    "awi/results/../sst",             # awi's dataset store, beside its results_dir
    "awi/results/./review-alias",     # a stored result under another name (its policy lost)
    "awi/results/x/../../sst",
])
def test_a_result_reference_cannot_name_a_path(fed, ref):
    """A read of ``site/results/<path>`` opened ``results_dir/<path>.zarr`` at the site:
    any zarr store the site could reach (its own datasets, a result under an alias) was
    read with the policy of an unknown reference, ``any``. The hub refuses the
    reference before anything runs, and so would the site."""
    data = fed.open_dataset("awi/sst").sst.isel(time=slice(0, 1)).rename("v")
    fed.publish_result("review-alias", data, overwrite=True)
    # the legitimate reads: the dataset and the result by their names
    assert fed.client.submit(read_chunk, "awi/sst", "sst", STEP).result().shape[0] == 1
    stored = fed.open_dataset("awi/results/review-alias").v.values
    assert np.array_equal(stored, data.values, equal_nan=True)
    with pytest.raises(ValueError, match="not a reference") as refused:
        fed.client.submit(read_chunk, ref, "sst", STEP, pure=False).result()
    assert ref in str(refused.value)


def test_the_site_resolves_only_result_names(tmp_path):
    """The site's own check, for a hub that let such a reference through: a result name
    is a NAME below ``results_dir``, never a path beside it."""
    from federation.sitecontext import SiteContext

    results = tmp_path / "results"
    for store in (results / "ok.zarr", tmp_path / "sst.zarr"):
        store.mkdir(parents=True)
    context = SiteContext("awi", results_dir=str(results))
    assert context.source("awi/results/ok").path == str(results / "ok.zarr")
    for ref in ("awi/results/../sst", "awi/results/./ok", f"awi/results/{tmp_path}/sst"):
        assert context.source(ref) is None


def _area_mean(ds: xr.Dataset) -> xr.DataArray:
    return ds.sst.mean(["lat", "lon"])


def test_a_standing_computation_extends_only_the_dataset_of_its_result(fed):
    """The site runs standing updates with its own identity and grants, and used the
    dataset the client's registration named: a user publishing a result from a dataset
    they may read could register it as standing on one they may not (and a forged
    version made the next update recompute it whole into their result)."""
    ref = fed.standing("review-standing", _area_mean, "awi/sst", overwrite=True)
    try:
        forged = new_entry(_area_mean, "geomar/chl", "time", 1, "forged")
        task = dask.delayed(standing_task, pure=False)(ref, "register", forged)
        with pytest.raises(PermissionError, match=r"computed from \['awi/sst'\]"):
            fed.client.compute(task).result()
        row = fed.standing_list().set_index("result").loc[ref]
        assert (row["dataset"], row["state"]) == ("awi/sst", "active")
    finally:
        fed.standing_cancel(ref)


def _peer(role: str, name: str) -> dict:
    """A peer certificate as ``ssl.SSLSocket.getpeercert`` gives it to the hub."""
    return {"subject": ((("organizationalUnitName", role),), (("commonName", name),))}


def test_a_user_certificate_cannot_pass_for_the_hub_or_a_site(tmp_path):
    """A user certificate named ``hub:x`` was the hub to the grants (never refused) and
    one named ``site:awi`` was awi (its grants, placement there, replacing anyone's
    results at awi): the principal of a user was its bare name. Such names are not
    issued any more, and a certificate with one (other tooling) is a plain user."""
    from federation.results import may_replace
    from federation.security import identity, init_ca, issue
    from scheduler_plugins.grants import Grants, principal

    init_ca(tmp_path)
    for name in ("hub:x", "site:awi", "a/b", "../x"):
        with pytest.raises(ValueError, match="not allowed"):
            issue(tmp_path, "user", name)
    issue(tmp_path, "user", "alice@awi.de")
    grants = Grants({"alice": ["awi/*"], "site:awi": ["*"]})
    alice = principal(identity(_peer("user", "alice")))
    assert grants.allows(alice, "awi/sst") and not grants.allows(alice, "geomar/chl")
    assert principal(identity(_peer("site", "awi"))) == "site:awi"
    for name in ("hub:x", "site:awi"):
        who = principal(identity(_peer("user", name)))
        assert not grants.allows(who, "geomar/chl") and not grants.allows_site(who, "geomar")
        assert not may_replace("awi", "bob", who)


@pytest.mark.parametrize("stored, dataset, expected", [
    (("any", None), ("none", None), ("none", None)),
    (("any", None), ("aggregated", 100), ("aggregated", 100)),
    (("aggregated", 50), ("aggregated", 100), ("aggregated", 50)),
    (("none", None), ("any", None), ("none", None)),
    (("aggregated", 50), ("any", None), ("aggregated", 50)),
])
def test_standing_updates_keep_the_stricter_egress_class(stored, dataset, expected):
    """New steps of a standing result carry the dataset's class as it is when they are
    computed: a dataset its site restricted after the result was published (``any`` to
    ``none``) no longer flows into a result readable as ``any``."""
    from federation.standing import stricter

    provenance = {"egress": stored[0], "max_egress_bytes": stored[1]}
    got = stricter(provenance, *dataset)
    assert (got["egress"], got["max_egress_bytes"]) == expected
