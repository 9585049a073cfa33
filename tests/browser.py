"""Headless Chromium for the browser tests (dashboard, explorer, hostile text), driven over
the DevTools protocol with tornado's websocket client: no browser-automation package."""

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

from .wait import async_wait

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
        """The value of ``expression`` in the page once it is truthy; on timeout an error
        with the page's text and its script errors."""

        async def probe() -> object:
            try:
                return await self.evaluate(expression)
            except RuntimeError:  # not yet defined in the page
                return None

        try:
            return await async_wait(probe, timeout, what or expression, interval=0.25)
        except TimeoutError:
            text = await self.evaluate(DEEP_TEXT)
            raise AssertionError(
                f"timed out waiting for {what or expression}; page text:\n{text[:3000]}\n"
                f"errors: {self.errors}"
            ) from None

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


def needs_chromium(test):
    """Browser tests: slow (a Chromium per test), skipped where Chromium is missing."""
    return pytest.mark.slow(
        pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")(test))


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
