"""Per-dataset egress policies, enforced by the hub, against real processes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from federation import PolicyError

from .conftest import open_local

pytestmark = pytest.mark.parametrize("federation", ["policy"], indirect=True)


@pytest.fixture
def policy_federation(federation):
    """(federation, client): polar/sst egress none (+ a published method), ocean/chl
    aggregated at most 1 kB, ice/t2m none (``tests/federations.py``: ``policy``)."""
    return federation, federation.fed


def test_catalog_shows_policies(policy_federation):
    _, fed = policy_federation
    policies = fed.catalog().set_index("dataset")["egress"].to_dict()
    assert policies == {"ice/t2m": "none", "ocean/chl": "aggregated", "polar/sst": "none"}


def test_hub_warns_that_an_open_site_serving_none_data_binds_honest_code_only(
    policy_federation,
):
    lf, _ = policy_federation
    log = lf.log("hub")
    assert "Site polar is not strict but serves ['polar/sst'] with egress 'none'" in log
    assert "Site ocean is not strict" not in log  # aggregated only


def test_none_refuses_the_result_and_no_byte_leaves(policy_federation):
    _, fed = policy_federation
    sst = fed.open_dataset("polar/sst").sst
    with fed.traffic() as t:
        with pytest.raises(PolicyError, match="'polar/sst' has egress policy 'none'"):
            sst.mean().compute()
    assert t.total == 0  # the mean was computed at polar, and stayed there
    assert t.refusals == {"polar/sst (none)": 1}


def test_none_data_leaves_through_the_sites_published_method(policy_federation):
    lf, fed = policy_federation
    sst = fed.open_dataset("polar/sst").sst.mean(["lat", "lon"])
    value = fed.method("polar/global_mean")(sst).compute()
    local = open_local(lf.root / "polar" / "sst.zarr").sst.mean(["lat", "lon"]).mean()
    np.testing.assert_allclose(value, float(local), rtol=1e-5)


def test_aggregated_lets_small_results_out_and_refuses_large_ones(policy_federation):
    lf, fed = policy_federation
    chl = fed.open_dataset("ocean/chl").chl
    series = chl.mean(["lat", "lon"]).compute()  # 10 days x 4 bytes: allowed
    local = open_local(lf.root / "ocean" / "chl.zarr").chl
    xr.testing.assert_allclose(series, local.mean(["lat", "lon"]))
    with fed.traffic() as t:
        with pytest.raises(PolicyError, match=r"'ocean/chl' has egress policy 'aggregated' "
                                              r"\(only results up to 1,000 bytes"):
            chl.isel(time=0).compute()  # a raw field: 259 kB
    assert t.total == 0


def test_two_none_datasets_of_different_sites_are_refused_before_anything_runs(
    policy_federation,
):
    _, fed = policy_federation
    sst = fed.open_dataset("polar/sst").sst
    t2m = fed.open_dataset("ice/t2m").t2m
    with fed.traffic() as t:
        with pytest.raises(PolicyError, match=r"combines \['ice/t2m', 'polar/sst'\] across"):
            (sst - t2m).mean(["lat", "lon"]).compute()
    assert t.tasks == {} and t.total == 0


def test_cross_site_transfer_of_a_large_aggregated_result_is_refused(policy_federation):
    """A raw chl field may not travel to polar, even as an input to polar's work."""
    _, fed = policy_federation
    chl = fed.open_dataset("ocean/chl").chl.isel(time=0)
    sst = fed.open_dataset("polar/sst").sst.isel(time=slice(0, 5)).mean("time")
    with pytest.raises(PolicyError, match="'ocean/chl' has egress policy 'aggregated'"):
        fed.method("polar/global_mean")(sst - chl).compute()
