"""Issue 19, part B: the relay, the web pages, site text in browsers, fair shares.

One federation of real processes for the module: a hub with access tokens and tight
relay limits, an outbound-only site ``evil`` whose descriptions, attrs, docstrings,
parameter defaults and enum values carry script, and a direct site ``geo``. Each test
makes the attack and checks it fails, and that the legitimate use still works.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import dask
import pytest
import xarray as xr
import yaml
from distributed import Client, Scheduler, SchedulerPlugin, Worker

from federation import protocol
from federation.local import LocalFederation
from federation.relay import parse

from .browser import DEEP_TEXT, Chromium, needs_chromium, run_in_chromium
from .conftest import make_site, open_local

TOKEN = "s3cret-token"
#: breaks out of HTML text, double- and single-quoted attributes, and runs script
XSS = "'\"><img src=x onerror=window.__xss=1><script>window.__xss=2</script>"
EVIL_TOOLS = f'''
"""Tools of a hostile site."""
from typing import Literal


def hostile(mode: Literal[{XSS!r}, "plain"] = {XSS!r}, label: str = {XSS!r},
            n: int = {XSS!r}) -> str:
    """{XSS} returns its label."""
    return label
'''
HUB = {
    "http": {"tokens": {TOKEN: "ana"}},
    "relay": {"handshake-timeout": 2, "max-pending-per-peer": 16},
    "announce": {"max-datasets": 3, "max-metadata-bytes": "64KiB"},
}
FLOOD = 300  # silent unauthenticated connections


def _hostile_site(root: Path) -> Path:
    config = make_site(root, "evil", "sst", "plain.zarr", tools=EVIL_TOOLS,
                       connectivity="outbound-only", methods={"hostile": "evil_tools:hostile"})
    ds = xr.open_zarr(root / "evil" / "plain.zarr", consolidated=False).load()
    ds.attrs["title"] = XSS
    ds.sst.attrs["long_name"] = XSS
    ds.to_zarr(root / "evil" / "sst.zarr", mode="w", consolidated=False)
    cfg = yaml.safe_load(config.read_text())
    cfg["datasets"]["sst"].update(path="sst.zarr", description=XSS)
    config.write_text(yaml.safe_dump(cfg))
    return config


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("relayweb")
    hub_yaml = root / "hub.yaml"
    hub_yaml.write_text(yaml.safe_dump(HUB))
    evil = _hostile_site(root)
    geo = make_site(root, "geo", "chl", "chl.zarr")
    with LocalFederation(root / "logs", hub_args=("--config", str(hub_yaml))) as lf:
        lf.start_site(evil)
        lf.start_site(geo)
        lf.root = root
        lf.base = f"http://127.0.0.1:{lf.dashboard_port}"
        with lf.connect() as fed:
            lf.fed = fed
            yield lf


def _relayed_workers(fed) -> list[str]:
    return [a for a in fed.client.scheduler_info(n_workers=-1)["workers"]
            if a.startswith("relay://")]


def _relay(fed) -> tuple[str, int]:
    relay, _, _ = parse(_relayed_workers(fed)[0].removeprefix("relay://"))
    host, port = relay.rsplit(":", 1)
    return host, int(port)


def _get(url: str, token: str | None = None, opener=None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with (opener or urllib.request.build_opener()).open(
            urllib.request.Request(url, headers=headers), timeout=30
        ) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _corr(fed) -> float:
    s = fed.open_dataset("evil/sst").sst.mean(["lat", "lon"])
    c = fed.open_dataset("geo/chl").chl.mean(["lat", "lon"])
    return float(xr.corr(s, c, dim="time").compute())


def _reference_corr(root: Path) -> float:
    s = open_local(root / "evil" / "sst.zarr").sst.mean(["lat", "lon"])
    c = open_local(root / "geo" / "chl.zarr").chl.mean(["lat", "lon"])
    return float(xr.corr(s, c, dim="time").compute(scheduler="sync"))


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except OSError:  # timeout: still open
        return False


# -- the relay ------------------------------------------------------------------------------


def test_silent_unauthenticated_peers_do_not_stop_the_hub(hub):
    """Hundreds of silent connections from one peer: the relay closes what is over the
    per-peer limit at once and the rest after the handshake timeout; the HTTP API and a
    relayed cross-site computation keep working; the log stays small."""
    host, port = _relay(hub.fed)
    log_before = len(hub.log("hub").splitlines())
    flood = []
    for _ in range(FLOOD):
        s = socket.create_connection((host, port), timeout=5, source_address=("127.0.0.2", 0))
        flood.append(s)
    try:
        status, body = _get(f"{hub.base}/federation/api/v1/sites", TOKEN)
        assert status == 200 and "evil" in {s["name"] for s in json.loads(body)["sites"]}
        assert _corr(hub.fed) == pytest.approx(_reference_corr(hub.root), rel=1e-5)
        for s in flood:
            s.settimeout(5)
        assert sum(_closed_by_peer(s) for s in flood) == FLOOD  # 2 s timeout; none left
    finally:
        for s in flood:
            s.close()
    lines = hub.log("hub").splitlines()[log_before:]
    assert "Too many open files" not in "\n".join(lines)
    assert len([line for line in lines if "relay" in line.lower()]) <= 10, lines[-20:]


def _relay_call(host: str, port: int, msg: dict, payload: bytes = b"") -> dict:
    with socket.create_connection((host, port), timeout=30) as s:
        s.sendall(json.dumps(msg).encode() + b"\n")
        reply = json.loads(s.makefile("rb").readline())
        if reply.get("ok") and payload:
            s.sendall(payload)
            time.sleep(0.5)
        return reply


def test_connect_needs_a_ticket_and_lists_no_endpoints(hub):
    fed = hub.fed
    host, port = _relay(fed)
    endpoint = "/".join(parse(_relayed_workers(fed)[0].removeprefix("relay://"))[1:])
    # the old protocol: name a target and a self-declared origin
    reply = _relay_call(host, port, {"op": "connect", "target": endpoint, "from": "geo"})
    assert not reply["ok"] and "needs a ticket" in reply["error"]
    assert endpoint.split("/", 1)[1] not in reply["error"]  # no endpoint listing
    # a target that is not a registered endpoint (blind SSRF into the site): no ticket
    with pytest.raises(PermissionError, match="not connected to the relay") as e:
        fed.client.sync(protocol.call, fed.client.scheduler, protocol.RELAY_TICKET,
                        target="evil/10.0.0.1:22")
    assert endpoint.split("/", 1)[1] not in str(e.value)
    # a registered endpoint: a ticket, used once
    ticket = fed.client.sync(protocol.call, fed.client.scheduler, protocol.RELAY_TICKET,
                             target=endpoint)
    assert _relay_call(host, port, {"op": "connect", "ticket": ticket})["ok"]
    reply = _relay_call(host, port, {"op": "connect", "ticket": ticket})
    assert not reply["ok"] and "used or expired" in reply["error"]


def test_byte_counters_name_the_authenticated_side(hub):
    """A peer claiming to be site geo (a wrong relay token) is counted as a client."""
    fed = hub.fed
    host, port = _relay(fed)
    endpoint = "/".join(parse(_relayed_workers(fed)[0].removeprefix("relay://"))[1:])

    def relayed() -> dict[str, int]:
        sites = json.loads(_get(f"{hub.base}/federation/api/v1/sites", TOKEN)[1])["sites"]
        return {s["name"]: s["relayed_bytes"] for s in sites}

    before = relayed()
    ticket = fed.client.sync(protocol.call, fed.client.scheduler, protocol.RELAY_TICKET,
                             target=endpoint, site="geo", token="forged")
    assert _relay_call(host, port, {"op": "connect", "ticket": ticket}, b"x" * 50_000)["ok"]
    after = relayed()
    assert after["evil"] - before["evil"] >= 50_000
    assert after["geo"] == before["geo"]


# -- web pages ----------------------------------------------------------------------------------


def test_every_page_needs_the_token(hub):
    worker = urllib.parse.quote(next(iter(hub.fed.client.scheduler_info()["workers"])), safe="")
    pages = ["/status", "/workers", "/info/main/workers.html", f"/info/logs/{worker}.html",
             f"/info/call-stacks/{worker}.html", f"/info/worker/{worker}.html",
             "/individual-task-stream", "/json/counts.json", "/json/identity.json",
             "/federation", "/federation/api/v1/sites", "/federation/api/v1/catalog"]
    for page in pages:
        url = hub.base + page
        assert _get(url)[0] == 401, page
        assert _get(url, "wrong")[0] in (401, 403), page
        status, body = _get(url, TOKEN)
        assert status == 200, (page, body[:300])
    # a browser: '?token=' once sets an HttpOnly cookie, then pages open without it
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    status, body = _get(f"{hub.base}/status?token={TOKEN}", opener=browser)
    assert status == 200 and "Dask" in body
    assert _get(f"{hub.base}/info/main/workers.html", opener=browser)[0] == 200
    assert [c.name for c in jar] == ["federation-token"]
    # without a token: only health, the API description and static client code
    for page in ("/health", "/federation/api/v1/openapi.json", "/federation/client.js",
                 "/federation/explorer"):
        assert _get(hub.base + page)[0] == 200, page


# -- site text in a real browser ---------------------------------------------------------------

NO_SCRIPT_RAN = "window.__xss === undefined && !document.querySelector('img[src=x]')"


@needs_chromium
def test_explorer_and_dashboard_show_hostile_text_as_text(hub, tmp_path):
    explorer = f"{hub.base}/federation/explorer#token={TOKEN}&method=evil/hostile"

    async def steps(browser: Chromium) -> None:
        await browser.navigate(explorer)
        await browser.wait_for("document.body.dataset.method === 'evil/hostile'",
                               what="form of evil/hostile")
        # the dataset's description (table), then its attrs (details)
        await browser.evaluate("[...document.querySelectorAll('#datasets tr.pick')].find("
                               "tr => tr.textContent.includes('evil/sst')).click()")
        await browser.wait_for("document.body.dataset.dataset === 'true'", what="attrs")
        await asyncio.sleep(0.5)
        assert await browser.evaluate(NO_SCRIPT_RAN)
        text = await browser.evaluate("document.body.textContent")
        assert text.count(XSS) >= 2  # description in the table and in the details
        assert json.dumps(XSS)[1:-1] in text  # attrs (as JSON)
        assert XSS in await browser.evaluate("document.getElementById('method-doc')"
                                             ".textContent")
        # defaults and enum values arrive intact as values, not as markup
        assert await browser.evaluate("document.getElementById('arg-label').value") == XSS
        assert await browser.evaluate("document.getElementById('arg-n').value") == ""
        options = await browser.evaluate(
            "[...document.getElementById('arg-mode').options].map(o => [o.value, o.text])")
        assert [json.loads(v) for v, _ in options] == [XSS, "plain"]
        assert options[0][1] == XSS
        # the legitimate use: run it with the hostile default, get it back as text
        await browser.evaluate("document.getElementById('arg-n').value = '1'; "
                               "document.getElementById('run').click()")
        await browser.wait_for("document.body.dataset.called === 'true'", what="result")
        assert json.loads(await browser.evaluate(
            "document.getElementById('result-json').textContent")) == XSS
        assert await browser.evaluate(NO_SCRIPT_RAN)

        # the dashboard's federation page (logging in with the token)
        await browser.navigate(f"{hub.base}/federation?token={TOKEN}")
        await browser.wait_for(f"({DEEP_TEXT}).includes('evil/sst')", what="dashboard")
        await asyncio.sleep(2.5)  # a periodic update too
        assert await browser.evaluate(NO_SCRIPT_RAN)
        assert XSS in await browser.evaluate(DEEP_TEXT)  # the description, as text

    run_in_chromium(tmp_path, steps)


# -- announcements ------------------------------------------------------------------------------


def test_oversized_announcements_are_refused(hub):
    root = hub.root
    many = make_site(root, "many", "chl", "chl.zarr")
    cfg = yaml.safe_load(many.read_text())
    cfg["datasets"] = {f"chl{i}": {"path": "chl.zarr"} for i in range(4)}
    many.write_text(yaml.safe_dump(cfg))
    fat = make_site(root, "fat", "chl", "plain.zarr")
    ds = xr.open_zarr(root / "fat" / "plain.zarr", consolidated=False).load()
    ds.attrs["blob"] = "x" * 100_000
    ds.to_zarr(root / "fat" / "chl.zarr", mode="w", consolidated=False)
    cfg = yaml.safe_load(fat.read_text())
    cfg["datasets"]["chl"]["path"] = "chl.zarr"
    fat.write_text(yaml.safe_dump(cfg))
    for name, config, setting in ((
        "many", many, "federation.announce.max-datasets"), (
        "fat", fat, "federation.announce.max-metadata-bytes")):
        proc = hub.start_site(config, wait=False)
        assert proc.wait(60) == 2, hub.log(name)
        log = hub.log(name)
        assert setting in log and "Traceback" not in log, log
    catalog = hub.fed.catalog()
    assert set(catalog["dataset"]) == {"evil/sst", "geo/chl"}
    assert "Traceback" not in hub.log("hub")


# -- fair shares ---------------------------------------------------------------------------------


def _inc(x: int) -> int:
    time.sleep(0.002)
    return x + 1


class _Finished(SchedulerPlugin):
    def __init__(self) -> None:
        self.order: list[str] = []

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "memory":
            self.order.append(key)


async def _two_users(big: int, priority: int = 0) -> tuple[int, list[int]]:
    """User A submits ``big`` tasks (with ``priority``), then user B 5; returns how many
    of A's had finished when B's job was done, and A's results."""
    async with Scheduler(port=0, dashboard_address=":0", preload=["scheduler_plugins"]) as s:
        finished = _Finished()
        s.add_plugin(finished)
        async with Worker(s.address, nthreads=1), \
                Client(s.address, asynchronous=True) as a, \
                Client(s.address, asynchronous=True) as b:
            futures = a.map(_inc, range(big), key=[f"big-{i}" for i in range(big)],
                            priority=priority)
            while not any(k.startswith("big") for k in finished.order):
                await asyncio.sleep(0.05)
            small = b.map(_inc, range(5), key=[f"small-{i}" for i in range(5)])
            assert await b.gather(small) == [1, 2, 3, 4, 5]
            done = sum(1 for k in finished.order if k.startswith("big"))
            return done, await a.gather(futures)


def test_fair_share_between_two_users():
    """A small job submitted while another user's big graph runs is done long before the
    big graph; without fair shares it waits for all of it. Both results are right."""
    done, results = asyncio.run(_two_users(1000))
    assert done < 200 and results == list(range(1, 1001))
    with dask.config.set({"federation.fair-share.enabled": False}):
        done, _ = asyncio.run(_two_users(1000))
    assert done > 900


def test_a_raised_priority_does_not_outrank_other_users():
    """``priority=`` put a user's whole graph ahead of every other user's tasks (a
    one-word way around fair shares); now it orders only that user's own tasks."""
    done, results = asyncio.run(_two_users(1000, priority=100))
    assert done < 200 and results == list(range(1, 1001))


def test_graph_size_limit_per_user():
    async def main() -> None:
        async with Scheduler(port=0, dashboard_address=":0", preload=["scheduler_plugins"]) as s, \
                Worker(s.address, nthreads=1), Client(s.address, asynchronous=True) as c:
            with pytest.raises(PermissionError, match="max-graph-tasks"):
                await c.gather(c.map(_inc, range(60)))
            assert await c.gather(c.map(_inc, range(100, 140))) == list(range(101, 141))

    with dask.config.set({"federation.fair-share.max-graph-tasks": 50}):
        asyncio.run(main())


def test_rpc_rate_per_caller():
    """Over its rate a caller's calls wait, and are refused once the wait would be long;
    a refusal answers the caller and leaves the hub serving."""
    async def main() -> None:
        async with Scheduler(port=0, dashboard_address=":0", preload=["scheduler_plugins"]) as s, \
                Client(s.address, asynchronous=True) as c:
            assert await protocol.call(c.scheduler, protocol.SITES) == {}
            assert await protocol.call(c.scheduler, protocol.SITES) == {}
            with pytest.raises(PermissionError, match="rpc-per-second"):
                await protocol.call(c.scheduler, protocol.SITES)
            assert await c.scheduler.identity()  # the hub keeps serving

    with dask.config.set({"federation.fair-share.rpc-per-second": 0.01,
                          "federation.fair-share.rpc-burst": 2}):
        asyncio.run(main())


def test_http_api_rate_per_caller():
    """Over its rate a caller's API requests get 429; pages stay served."""
    async def main() -> None:
        async with Scheduler(port=0, dashboard_address=":0", preload=["scheduler_plugins"]) as s:
            base = f"http://127.0.0.1:{s.http_server.port}"
            codes = [(await asyncio.to_thread(_get, f"{base}/federation/api/v1/sites"))[0]
                     for _ in range(3)]
            assert codes == [200, 200, 429]
            assert (await asyncio.to_thread(_get, f"{base}/status"))[0] == 200

    with dask.config.set({"federation.fair-share.http-per-second": 0.01,
                          "federation.fair-share.http-burst": 2}):
        asyncio.run(main())
