"""A simulated wide-area network on one machine: one network namespace per role.

Topology (all names start with ``fedb``, all addresses are in 10.77.0.0/24 inside
namespaces this module creates; the root namespace is not touched)::

    fedb-hub     eth0 10.77.0.1  ─┐
    fedb-awi     eth0 10.77.0.11 ─┤   veth pairs      ┌───────────────────────┐
    fedb-geomar  eth0 10.77.0.12 ─┼──────────────────▶│ fedb-net: bridge fedbbr│
    fedb-dkrz    eth0 10.77.0.13 ─┤                   └───────────────────────┘
    fedb-client  eth0 10.77.0.100─┘

Every role has its own access link: ``eth0`` in the role's namespace shapes what
leaves it, the peer ``v-<role>`` on the bridge shapes what enters it (HTB, default
100 Mbit/s each way). Traffic between two sites therefore crosses two shaped links,
like two institutes' uplinks. The bridge lives in its own namespace, so the host's
firewall (br_netfilter, iptables) never sees the traffic.

Latency (``rtt_ms`` not None): this kernel has no ``netem``, so the bridge is replaced by
routing in ``fedb-net`` through a TUN device served by :mod:`benchmarks.delay`, which
releases each packet after ``rtt_ms / 2`` (plus jitter/loss); HTB still keeps the rate::

    role eth0 (10.77.0.X/32, HTB) ─ veth ─ v-<role> (10.77.0.254, HTB) in fedb-net
    fedb-net: packets from any v-* ──policy route──▶ fedbtun ─▶ delay router
              packets from fedbtun ──main table──▶ 10.77.0.Y/32 dev v-<role Y>

Every path between two roles crosses the router once each way.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "fedb"
NET_NS = f"{PREFIX}-net"
BRIDGE = f"{PREFIX}br"
TUN = f"{PREFIX}tun"
GATEWAY = "10.77.0.254"
#: policy-routing table that sends forwarded packets into the delay router
DELAY_TABLE = "77"
SUBNET = "10.77.0"
ADDRESSES = {"hub": 1, "awi": 11, "geomar": 12, "dkrz": 13, "deep": 14, "client": 100}


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def can_use_namespaces() -> tuple[bool, str]:
    """Whether this process can build the shaped network, and why not."""
    if os.geteuid() != 0:
        return False, "not running as root"
    for tool in ("ip", "tc"):
        if _run("which", tool, check=False).returncode != 0:
            return False, f"'{tool}' not found"
    probe = f"{PREFIX}-probe"
    r = _run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return False, f"cannot create network namespaces: {r.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return True, ""


@dataclass
class Loopback:
    """Everything on 127.0.0.1, unshaped: the fallback without root, and for tests."""

    kind: str = "loopback"
    bandwidth: str | None = None

    def host(self, role: str) -> str:
        return "127.0.0.1"

    def prefix(self, role: str) -> list[str]:
        return []

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    def link_counters(self) -> dict[str, dict[str, int]] | None:
        return None

    def describe(self) -> dict:
        return {"kind": "loopback", "bandwidth": None, "rtt": None,
                "note": "all processes on 127.0.0.1, no shaping"}


@dataclass
class Namespaces:
    """The shaped network of namespaces; ``setup()`` builds it, ``teardown()`` removes
    it (also removing leftovers of an interrupted earlier run)."""

    roles: list[str]
    bandwidth: str = "100mbit"
    #: round-trip time added by the delay router (ms); None: a plain bridge, no router
    rtt_ms: float | None = None
    jitter_ms: float = 0.0
    loss: float = 0.0
    kind: str = "netns"
    created: list[str] = field(default_factory=list)
    router: subprocess.Popen | None = None
    control_path: str = ""

    def ns(self, role: str) -> str:
        return f"{PREFIX}-{role}"

    def host(self, role: str) -> str:
        return f"{SUBNET}.{ADDRESSES[role]}"

    def prefix(self, role: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns(role)]

    @staticmethod
    def leftovers() -> list[str]:
        out = _run("ip", "netns", "list", check=False).stdout.split()
        return [n for n in out if n.startswith(f"{PREFIX}-")]

    def _shape(self, ns: str, dev: str) -> None:
        base = ["ip", "netns", "exec", ns, "tc"]
        subprocess.run([*base, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb",
                        "default", "10"], check=True, capture_output=True)
        subprocess.run([*base, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10",
                        "htb", "rate", self.bandwidth, "ceil", self.bandwidth],
                       check=True, capture_output=True)
        # a deep FIFO under the class (fq_codel/sfq are not in this kernel)
        subprocess.run([*base, "qdisc", "add", "dev", dev, "parent", "1:10", "pfifo",
                        "limit", "1000"], check=True, capture_output=True)

    def setup(self) -> None:
        self.teardown()  # an interrupted earlier run may have left namespaces behind
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise

    def _build(self) -> None:
        _run("ip", "netns", "add", NET_NS)
        self.created.append(NET_NS)
        inet = ["ip", "-n", NET_NS]
        _run(*inet, "link", "set", "lo", "up")
        routed = self.rtt_ms is not None
        if routed:
            self._router_namespace()
        else:
            _run(*inet, "link", "add", BRIDGE, "type", "bridge")
            _run(*inet, "link", "set", BRIDGE, "up")
        for role in self.roles:
            ns = self.ns(role)
            _run("ip", "netns", "add", ns)
            self.created.append(ns)
            peer = f"v-{role}"
            _run(*inet, "link", "add", peer, "type", "veth", "peer", "name", "eth0",
                 "netns", ns)
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            if routed:
                _run(*inet, "link", "set", peer, "up")
                _run(*inet, "addr", "add", f"{GATEWAY}/32", "dev", peer)
                _run(*inet, "route", "add", f"{self.host(role)}/32", "dev", peer)
                _run("ip", "netns", "exec", NET_NS, "sysctl", "-qw",
                     f"net.ipv4.conf.{peer}.rp_filter=0")
                _run("ip", "-n", ns, "addr", "add", f"{self.host(role)}/32", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                _run("ip", "-n", ns, "route", "add", GATEWAY, "dev", "eth0")
                _run("ip", "-n", ns, "route", "add", f"{SUBNET}.0/24", "via", GATEWAY,
                     "dev", "eth0")
            else:
                _run(*inet, "link", "set", peer, "master", BRIDGE, "up")
                _run("ip", "-n", ns, "addr", "add", f"{self.host(role)}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
            if self.bandwidth:
                self._shape(ns, "eth0")  # what leaves the role
                self._shape(NET_NS, peer)  # what enters the role
        if routed:
            self._start_router()

    def _router_namespace(self) -> None:
        """fedb-net as a router whose every forwarded packet passes the TUN device."""
        inet = ["ip", "-n", NET_NS]
        for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                    "net.ipv4.conf.default.rp_filter=0",
                    # the router answers for 10.77.0.254 on every veth, not redirects
                    "net.ipv4.conf.all.send_redirects=0",
                    "net.ipv4.conf.default.send_redirects=0"):
            _run("ip", "netns", "exec", NET_NS, "sysctl", "-qw", key)
        _run(*inet, "tuntap", "add", "dev", TUN, "mode", "tun")
        _run(*inet, "link", "set", TUN, "up")
        _run("ip", "netns", "exec", NET_NS, "sysctl", "-qw", f"net.ipv4.conf.{TUN}.rp_filter=0")
        _run(*inet, "route", "add", f"{SUBNET}.0/24", "dev", TUN, "table", DELAY_TABLE)
        # packets the router wrote back go to their destination's veth (main table);
        # everything else between roles goes into the router first
        _run(*inet, "rule", "add", "pref", "100", "iif", TUN, "lookup", "main")
        _run(*inet, "rule", "add", "pref", "200", "to", f"{SUBNET}.0/24", "lookup",
             DELAY_TABLE)

    def _start_router(self) -> None:
        self.control_path = str(Path(tempfile.mkdtemp(prefix="fedb-router-")) / "control")
        half = self.rtt_ms / 2
        self.router = subprocess.Popen(
            ["ip", "netns", "exec", NET_NS, sys.executable, "-m", "benchmarks.delay", "serve",
             "--tun", TUN, "--control", self.control_path, "--delay-ms", str(half),
             "--jitter-ms", str(self.jitter_ms / 2), "--loss", str(self.loss)],
            cwd=str(Path(__file__).resolve().parent.parent), stdout=subprocess.PIPE, text=True,
        )
        line = self.router.stdout.readline()
        if "delay router" not in line:
            raise RuntimeError(f"the delay router did not start: {line!r}")

    def set_rtt(self, rtt_ms: float, jitter_ms: float | None = None) -> dict:
        """Change the router's delay (RTT = 2 × one-way delay) while everything runs."""
        if self.router is None:
            raise RuntimeError("no delay router: build the network with rtt_ms set")
        self.rtt_ms = rtt_ms
        request = {"delay_ms": rtt_ms / 2}
        if jitter_ms is not None:
            self.jitter_ms = jitter_ms
            request["jitter_ms"] = jitter_ms / 2
        return self.router_stats(**request)

    def router_stats(self, **request) -> dict:
        """Packets, bytes and CPU seconds of the delay router so far."""
        from .delay import control

        return control(self.control_path, **request)

    def teardown(self) -> None:
        """Kill whatever still runs in our namespaces, then delete them (qdiscs, veths
        and the bridge go with them)."""
        if self.router is not None:
            self.router.kill()
            self.router.wait()
            self.router = None
            shutil.rmtree(Path(self.control_path).parent, ignore_errors=True)
        names = sorted(set(self.created) | set(self.leftovers()))
        for ns in names:
            pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in names:
            _run("ip", "netns", "del", ns, check=False)
        self.created.clear()

    def link_counters(self) -> dict[str, dict[str, int]]:
        """Bytes on each role's link, seen from the bridge: ``out`` left the role,
        ``in`` entered it (IP and TCP headers included)."""
        r = _run("ip", "-n", NET_NS, "-j", "-s", "link", "show", check=False)
        out: dict[str, dict[str, int]] = {}
        for link in json.loads(r.stdout or "[]"):
            name = link.get("ifname", "")
            if name.startswith("v-"):
                stats = link.get("stats64") or link.get("stats") or {}
                out[name[2:]] = {"out": int(stats["rx"]["bytes"]),
                                 "in": int(stats["tx"]["bytes"])}
        return out

    def describe(self) -> dict:
        if self.rtt_ms is None:
            latency = "joined by a bridge; no added latency"
        else:
            latency = (f"routed through a userspace delay router (TUN, benchmarks/delay.py): "
                       f"RTT {self.rtt_ms:g} ms ± {self.jitter_ms:g} ms, loss {self.loss:g}")
        return {"kind": "netns", "bandwidth": self.bandwidth, "rtt": self.rtt_ms,
                "jitter": self.jitter_ms, "loss": self.loss,
                "note": (f"one network namespace per role, {latency}; every link shaped to "
                         f"{self.bandwidth} each way with HTB"),
                "addresses": {r: self.host(r) for r in self.roles}}
