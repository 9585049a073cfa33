"""The site's change check waits for a zarr append's chunks, not only for quiet files.

zarr resizes an array's metadata before it writes the new chunks; a writer paused between
the two for longer than the quiet interval (a busy machine) must not be described with
fill values for the new steps (real zarr stores on disk, no site process needed).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import xarray as xr
import zarr

from federation.sources import Source
from federation.watch import QUIET_SECONDS, missing_chunks, wait_until_quiet


def _store(path, values) -> Source:
    xr.Dataset({"x": ("t", values)}).chunk({"t": 2}).to_zarr(path, consolidated=False)
    return Source(str(path), "zarr")


def test_an_append_paused_between_metadata_and_chunks_is_waited_for(tmp_path):
    source = _store(tmp_path / "grow.zarr", np.arange(10.0))
    before = missing_chunks(source)
    assert before == 0
    array = zarr.open_array(tmp_path / "grow.zarr" / "x", mode="r+")
    array.resize((14,))  # the append's metadata; its two chunks are not written yet
    assert missing_chunks(source) == 2

    pause = 4 * QUIET_SECONDS

    def finish_the_append():
        time.sleep(pause)
        array[10:14] = np.arange(10.0, 14.0)

    writer = threading.Thread(target=finish_the_append)
    started = time.monotonic()
    writer.start()
    try:
        assert wait_until_quiet(source, before) == 0
        waited = time.monotonic() - started
    finally:
        writer.join()
    assert waited >= pause  # quiet files alone (after QUIET_SECONDS) did not end the wait
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "grow.zarr" / "x")[:],
                                  np.arange(14.0))


def test_a_store_with_chunks_left_unwritten_on_purpose_is_not_held_up(tmp_path):
    values = np.arange(10.0)
    values[4:6] = np.nan  # all fill value: zarr writes no file for that chunk
    source = _store(tmp_path / "sparse.zarr", values)
    missing = missing_chunks(source)
    assert missing == 1
    started = time.monotonic()
    assert wait_until_quiet(source, missing) == 1
    assert time.monotonic() - started < 5 * QUIET_SECONDS


def test_other_sources_have_no_chunks_to_wait_for(tmp_path):
    path = tmp_path / "t.nc"
    xr.Dataset({"x": ("t", np.arange(3.0))}).to_netcdf(path)
    assert missing_chunks(Source(str(path))) == 0
    assert wait_until_quiet(Source(str(path))) == 0
