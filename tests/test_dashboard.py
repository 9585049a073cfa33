"""The federation page of the hub's dashboard: models in-process, and the real page in a
real headless Chromium (skipped if there is no chromium; CI installs it)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import xarray as xr

from scheduler_plugins.dashboard import DashboardPlugin, TrafficHistory
from scheduler_plugins.dashboard.page import FederationPage

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = os.environ.get("FEDERATION_CHROMIUM") or shutil.which("chromium") or next(
    (p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None
)

#: All text of a page, also inside shadow roots (Bokeh renders its widgets in them).
DEEP_TEXT = """(() => {
  const out = [];
  const walk = (n) => {
    if (n.nodeType === 3) out.push(n.textContent);
    if (n.shadowRoot) walk(n.shadowRoot);
    for (const c of n.childNodes) walk(c);
  };
  walk(document.body);
  return out.join(" ");
})()"""


# -- a tiny DevTools-protocol client ---------------------------------------------------------


class Chromium:
    """Headless Chromium driven over the DevTools protocol (tornado's websocket client)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        profile = workdir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self.log = open(workdir / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [
                CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1400,1700", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "about:blank",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"chromium did not start:\n{self.read_log()}")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self.ws = None
        self.ids = 0
        self.errors: list[str] = []
        self.pending: dict[int, asyncio.Future] = {}

    def read_log(self) -> str:
        return (self.workdir / "chromium.log").read_text(errors="replace")[-3000:]

    async def open(self) -> None:
        from tornado.websocket import websocket_connect

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list") as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = await websocket_connect(pages[0]["webSocketDebuggerUrl"],
                                          max_message_size=256 * 2**20)
        self.reader = asyncio.ensure_future(self._read())
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")

    async def _read(self) -> None:
        while True:
            message = await self.ws.read_message()
            if message is None:
                return
            msg = json.loads(message)
            if "id" in msg and msg["id"] in self.pending:
                self.pending.pop(msg["id"]).set_result(msg)
            elif msg.get("method") == "Runtime.exceptionThrown":
                details = msg["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description")
                                   or details.get("text", ""))
            elif msg.get("method") == "Runtime.consoleAPICalled" and \
                    msg["params"]["type"] == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description", "")))
                                            for a in msg["params"]["args"]))

    async def send(self, method: str, **params) -> dict:
        self.ids += 1
        future = asyncio.get_running_loop().create_future()
        self.pending[self.ids] = future
        await self.ws.write_message(json.dumps({"id": self.ids, "method": method,
                                                "params": params}))
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def evaluate(self, expression: str):
        reply = await self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                                awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:80]}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def wait_for(self, expression: str, timeout: float = 30, what: str = "") -> object:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                text = await self.evaluate(DEEP_TEXT)
                raise AssertionError(
                    f"timed out waiting for {what or expression}; page text:\n{text[:3000]}\n"
                    f"errors: {self.errors}"
                )
            await asyncio.sleep(0.25)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def save_artifact(path: Path) -> None:
    """Copy a screenshot to tests/artifacts/ (git-ignored) for people and CI to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def run_in_chromium(tmp_path: Path, steps) -> None:
    """Run ``await steps(browser)`` with a fresh headless Chromium."""
    browser = Chromium(tmp_path)

    async def main() -> None:
        await browser.open()
        try:
            await steps(browser)
        finally:
            browser.ws.close()
            browser.ws = None
            browser.reader.cancel()

    try:
        asyncio.run(main())
    finally:
        browser.close()


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
