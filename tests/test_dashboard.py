"""The federation page of the hub's dashboard: models in-process, and the real page in a
real headless Chromium (skipped if there is no chromium; CI installs it)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import dask
import xarray as xr

from scheduler_plugins.dashboard import DashboardPlugin, TrafficHistory
from scheduler_plugins.dashboard.page import FederationPage

from .browser import DEEP_TEXT, Chromium, needs_chromium, run_in_chromium, save_artifact


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode()


# -- without a browser -----------------------------------------------------------------------


def test_traffic_history_windows():
    h = TrafficHistory(keep=100)
    assert h.window(60) == ([], None)
    h.add([["awi", "geomar", 100, 80, 1]], now=1000)
    h.add([["awi", "geomar", 150, 120, 2], ["awi", "client", 10, 8, 1]], now=1030)
    h.add([["awi", "geomar", 400, 300, 3], ["awi", "client", 10, 8, 1]], now=1070)
    assert h.latest() == [["awi", "client", 10, 8, 1], ["awi", "geomar", 400, 300, 3]]
    rows, since = h.window(60)  # the newest snapshot at least 60 s old: t=1000
    assert since == 1000 and rows == [["awi", "client", 10, 8, 1], ["awi", "geomar", 300, 220, 2]]
    rows, since = h.window(40)  # t=1030
    assert since == 1030 and rows == [["awi", "geomar", 250, 180, 1]]
    rows, since = h.window(1)  # nothing older than the latest but itself: from 1030
    assert since == 1030
    h.add([["awi", "geomar", 400, 300, 3]], now=1300)  # old snapshots expire
    assert [t for t, _ in h.snapshots][0] >= 1070


def test_idle_hub_samples_traffic_rarely():
    """No task changed state: the workers are asked for counters every IDLE_EVERY-th
    interval only; after a transition, at the next one."""
    from scheduler_plugins.dashboard.history import IDLE_EVERY, TrafficSampler

    class Ledger:  # the traffic plugin's side of a sample, counted
        collected = 0

        async def collect(self) -> None:
            self.collected += 1

        def ledger(self) -> list:
            return [["awi", "client", self.collected, 0, 0]]

    traffic = Ledger()
    sampler = TrafficSampler(traffic, TrafficHistory(), 2.0)

    async def ticks(n: int) -> None:
        for _ in range(n):
            await sampler.sample()

    asyncio.run(ticks(1))  # the first sample is taken
    assert traffic.collected == 1
    asyncio.run(ticks(IDLE_EVERY - 1))
    assert traffic.collected == 1
    asyncio.run(ticks(1))
    assert traffic.collected == 2
    sampler.active = True  # what the dashboard plugin's transition hook sets
    asyncio.run(ticks(1))
    assert traffic.collected == 3 and sampler.history.latest()[0][2] == 3


def test_page_models_in_process(tmp_path):
    """The page's models from a hub state with a registered site, traffic and an error."""
    from distributed import Scheduler

    from federation.catalog import describe_dataset

    async def main() -> None:
        async with Scheduler(
            dashboard_address="127.0.0.1:0", port=0, preload=["scheduler_plugins"]
        ) as scheduler:
            state = scheduler.plugins["federation-catalog"].state
            ds = xr.Dataset({"sst": (("time",), [1.0, 2.0])}, coords={"time": [0, 1]})
            state.register("awi", "s1", "tcp://x", [describe_dataset("awi", "sst", ds, "SST")])
            plugin = scheduler.plugins[DashboardPlugin.name]
            plugin.history.add([["awi", "geomar", 2048, 1024, 3]], now=time.time() - 30)
            plugin.history.add([["awi", "geomar", 4096, 2048, 5], ["awi", "client", 10, 8, 1]])
            plugin.tasks.erred["x"] = "awi"
            page = FederationPage(scheduler, plugin)
            parts = page.components
            sites = dict(parts["sites"].source.data)
            assert sites["site"] == ["awi"] and sites["datasets"] == ["sst"]
            assert sites["status"] == ["no workers"]
            tasks = dict(parts["tasks"].source.data)
            assert tasks["site"] == ["awi"] and tasks["erred"] == [1]
            heat = dict(parts["total"].source.data)
            cells = dict(zip(zip(heat["source"], heat["destination"]), heat["bytes"]))
            assert cells[("awi", "geomar")] == 4096 and cells[("awi", "client")] == 10
            minute = dict(parts["minute"].source.data)
            cells = dict(zip(zip(minute["source"], minute["destination"]), minute["bytes"]))
            # no snapshot is a minute old: the window starts at the oldest one
            assert cells[("awi", "geomar")] == 2048 and cells[("awi", "client")] == 10
            assert dict(parts["datasets"].source.data)["dataset"] == ["awi/sst"]
            # a big catalog: at most max-rows rows, the filter box finds the others
            state.register("geomar", "s2", "tcp://y", [
                describe_dataset("geomar", f"d{i}", ds, "") for i in range(3)])
            datasets = parts["datasets"]
            with dask.config.set({"federation.dashboard.max-rows": 2}):
                page.update_slow()
                assert datasets.source.data["dataset"] == ["awi/sst", "geomar/d0"]
                assert datasets.rows.note.text == "first 2 of 4; filter to find the others"
                datasets.rows.box.value = "geomar/d2"
                page.update_slow()
                assert datasets.source.data["dataset"] == ["geomar/d2"]
                assert parts["versions"].source.data["dataset"] == ["awi/sst", "geomar/d0"]
            assert "4.01 kiB crossed" in parts["title"].root.text  # 4096 + 10 bytes
            # registered as a dashboard page, listed in the navigation
            assert plugin.page_mounted
            from distributed.dashboard.scheduler import template_variables

            assert "federation" in template_variables(scheduler)["pages"]

    asyncio.run(main())


def test_page_served_and_in_navigation(local_federation):
    port = local_federation.dashboard_port
    status, body = http_get(f"http://127.0.0.1:{port}/status")
    assert 'href="federation"' in body  # the navigation bar of every dashboard page
    status, body = http_get(f"http://127.0.0.1:{port}/federation")
    assert status == 200 and "bokeh" in body.lower() and 'href="federation"' in body


# -- in Chromium -------------------------------------------------------------------------------


@needs_chromium
def test_dashboard_in_chromium(local_federation, fed, tmp_path):
    # cross-site work, so the traffic matrix and task counters have something to show
    sst = fed.open_dataset("awi/sst").sst.mean(["lat", "lon"])
    chl = fed.open_dataset("geomar/chl").chl.mean(["lat", "lon"])
    xr.corr(sst, chl, dim="time").compute()
    url = f"http://127.0.0.1:{local_federation.dashboard_port}/federation"

    async def steps(browser: Chromium) -> None:
        await browser.navigate(url)
        checks = ["Federation hub", "awi/sst", "geomar/chl", "dkrz/t2m", "connected",
                  "Tasks run (all, since the hub started)", "Computations (most recent first",
                  "Tasks run per site", "Shared methods", "Published results"]
        await browser.wait_for(
            f"(() => {{ const t = {DEEP_TEXT}; return {json.dumps(checks)}.every(c => "
            "t.includes(c)); })()",
            what=f"sites and datasets on the page ({checks})",
        )
        text = await browser.evaluate(DEEP_TEXT)
        for site in ("awi", "geomar", "dkrz"):
            assert site in text
        # the four figures (tasks, progress, two heat maps) are drawn
        n_canvas = await browser.wait_for(
            "(() => { let n = 0; const walk = (e) => { if (e.tagName === 'CANVAS') n++; "
            "if (e.shadowRoot) walk(e.shadowRoot); for (const c of e.children) walk(c); }; "
            "walk(document.body); return n >= 4 ? n : 0; })()",
            what="bokeh figures",
        )
        assert n_canvas >= 4
        # the navigation bar links the page, as distributed's own pages
        assert await browser.evaluate(
            "!!document.querySelector(\"a[href='federation']\")")
        await asyncio.sleep(1.5)  # let a periodic update run: it must not raise in the page
        shot = await browser.screenshot(tmp_path / "dashboard-federation.png")
        save_artifact(shot)
        assert not [e for e in browser.errors if "favicon" not in e], browser.errors

    run_in_chromium(tmp_path, steps)
    assert (tmp_path / "dashboard-federation.png").stat().st_size > 10_000
