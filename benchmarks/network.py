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

Latency: this kernel has no ``netem``; RTT is not modelled (see the report).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field

PREFIX = "fedb"
NET_NS = f"{PREFIX}-net"
BRIDGE = f"{PREFIX}br"
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
    kind: str = "netns"
    created: list[str] = field(default_factory=list)

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
        _run(*inet, "link", "add", BRIDGE, "type", "bridge")
        _run(*inet, "link", "set", BRIDGE, "up")
        for role in self.roles:
            ns = self.ns(role)
            _run("ip", "netns", "add", ns)
            self.created.append(ns)
            peer = f"v-{role}"
            _run(*inet, "link", "add", peer, "type", "veth", "peer", "name", "eth0",
                 "netns", ns)
            _run(*inet, "link", "set", peer, "master", BRIDGE, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.host(role)}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            if self.bandwidth:
                self._shape(ns, "eth0")  # what leaves the role
                self._shape(NET_NS, peer)  # what enters the role

    def teardown(self) -> None:
        """Kill whatever still runs in our namespaces, then delete them (qdiscs, veths
        and the bridge go with them)."""
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
        return {"kind": "netns", "bandwidth": self.bandwidth, "rtt": None,
                "note": (f"one network namespace per role, joined by a bridge; every link "
                         f"shaped to {self.bandwidth} each way with HTB; no added latency "
                         "(no netem in this kernel)"),
                "addresses": {r: self.host(r) for r in self.roles}}
