"""A userspace delay router: wide-area latency for the benchmark network without netem.

    python -m benchmarks.delay serve --tun fedbtun --control SOCKET [--delay-ms 10]
    python -m benchmarks.delay check [--rtt 0 20 40 80] [--mb 40] [--out FILE]   # as root

``serve`` runs inside the router namespace (``fedb-net``, see :mod:`benchmarks.network`),
attached to a TUN device (``IFF_TUN | IFF_NO_PI``: whole IP packets, no header) that
policy routing sends every packet between two roles through. Each packet read from the
device is written back to it ``delay`` seconds later (± uniform ``jitter``; dropped with
probability ``loss``); the kernel then routes it on to its destination's link, where HTB
keeps the rate. Every path between two roles (worker↔worker across sites, site↔hub,
client↔hub) passes the router exactly once each way, so the RTT is twice the delay.

The forwarding loop is one reader thread (``os.read`` blocks outside the GIL) pushing
``(release time, packet)`` onto a heap and one writer thread sleeping until the earliest
release time and writing every packet that is due. A control thread answers JSON lines
on a Unix socket (a filesystem path, so reachable from every network namespace):
``{"delay_ms": 20}`` changes the delay, ``{}`` only returns the counters and the
router's CPU seconds.

``check`` builds the shaped network (client, hub, two sites) and measures, for the plain
bridge and for the router at each RTT, the UDP echo RTT (median of 50) and TCP
throughput client→site and site→site, plus the router's CPU per forwarded GB.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import json
import os
import random
import resource
import socket
import struct
import threading
import time
from pathlib import Path

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: the largest IP packet; one read returns exactly one packet
MAX_PACKET = 65536


def open_tun(name: str) -> int:
    """Attach to the (persistent) TUN device ``name`` of this network namespace.

    Raises OSError if the device cannot be opened (no /dev/net/tun, not root)."""
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


class DelayRouter:
    """Releases every packet read from ``fd`` back into it after a delay (seconds)."""

    def __init__(self, fd: int, delay: float = 0.0, jitter: float = 0.0, loss: float = 0.0):
        self.fd = fd
        self.delay, self.jitter, self.loss = delay, jitter, loss
        self.heap: list[tuple[float, int, bytes]] = []
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.packets = self.bytes = self.dropped = 0
        self._seq = 0

    def read_loop(self) -> None:
        read, now, push, rnd = os.read, time.monotonic, heapq.heappush, random.random
        heap, lock, wake = self.heap, self.lock, self.wake
        while True:
            packet = read(self.fd, MAX_PACKET)
            if self.loss and rnd() < self.loss:
                self.dropped += 1
                continue
            release = now() + self.delay
            if self.jitter:
                release += (2 * rnd() - 1) * self.jitter
            with lock:
                self._seq += 1
                push(heap, (release, self._seq, packet))
                first = len(heap) == 1
            self.packets += 1
            self.bytes += len(packet)
            if first:
                wake.set()

    def write_loop(self) -> None:
        write, now, pop = os.write, time.monotonic, heapq.heappop
        heap, lock, wake = self.heap, self.lock, self.wake
        while True:
            if not heap:
                wake.wait()
                wake.clear()
                continue
            wait = heap[0][0] - now()
            if wait > 0:
                # a new packet may be due earlier only with jitter; waking on it is not
                # worth it (jitter reorders anyway), so plain sleep
                time.sleep(wait)
                continue
            t = now()
            due = []
            with lock:
                while heap and heap[0][0] <= t:
                    due.append(pop(heap)[2])
            for packet in due:
                try:
                    write(self.fd, packet)
                except OSError:  # e.g. no route for a stray packet: drop it like a router
                    self.dropped += 1

    def stats(self) -> dict:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"delay_ms": self.delay * 1e3, "jitter_ms": self.jitter * 1e3,
                "loss": self.loss, "packets": self.packets, "bytes": self.bytes,
                "dropped": self.dropped, "queued": len(self.heap),
                "cpu_s": usage.ru_utime + usage.ru_stime}

    def control(self, request: dict) -> dict:
        if "delay_ms" in request:
            self.delay = float(request["delay_ms"]) / 1e3
        if "jitter_ms" in request:
            self.jitter = float(request["jitter_ms"]) / 1e3
        if "loss" in request:
            self.loss = float(request["loss"])
        return self.stats()


def serve(tun: str, control_path: str, delay: float, jitter: float, loss: float) -> None:
    """Forward packets until killed; answer control requests on ``control_path``."""
    router = DelayRouter(open_tun(tun), delay, jitter, loss)
    try:
        # The router models the network, not a host: CPU load beside the sites (the
        # contention mode) must not add latency, so it runs ahead of ordinary processes.
        # It blocks in read()/sleep() between packets and needs ~20 CPU s per GB.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (OSError, AttributeError):  # not permitted: the delay then includes CPU waits
        pass
    for loop in (router.read_loop, router.write_loop):
        threading.Thread(target=loop, daemon=True).start()
    path = Path(control_path)
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        print(f"delay router on {tun}: {delay * 1e3:.1f} ms one way, control {path}",
              flush=True)
        while True:
            conn, _ = server.accept()
            with conn, conn.makefile("rw") as f:
                try:
                    reply = router.control(json.loads(f.readline() or "{}"))
                except (ValueError, TypeError) as e:
                    reply = {"error": f"bad control request: {e}"}
                f.write(json.dumps(reply) + "\n")


def control(path: str, **request) -> dict:
    """Send one request to a running router (e.g. ``delay_ms=20``); returns its stats."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        with s.makefile("rw") as f:
            f.write(json.dumps(request) + "\n")
            f.flush()
            return json.loads(f.readline())


# -- the check: RTT and throughput through the router ---------------------------------------

PROBE = r'''
import socket, sys, time, statistics
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "echo":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((host, port))
    print("ready", flush=True)
    while True:
        data, peer = s.recvfrom(2048); s.sendto(data, peer)
elif mode == "ping":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    rtts = []
    for i in range(int(sys.argv[4])):
        t = time.perf_counter(); s.sendto(b"x" * 56, (host, port)); s.recv(2048)
        rtts.append((time.perf_counter() - t) * 1e3); time.sleep(0.01)
    print(statistics.median(rtts), min(rtts), max(rtts))
elif mode == "sink":
    srv = socket.create_server((host, port)); print("ready", flush=True)
    while True:
        c, _ = srv.accept()
        n, mark, t_mark = 0, int(sys.argv[4]) // 3, None
        while (b := c.recv(1 << 20)):
            n += len(b)
            if t_mark is None and n >= mark:
                t_mark, n_mark = time.perf_counter(), n
        steady = (n - n_mark) / (time.perf_counter() - t_mark)
        c.sendall(b"%d %f" % (n, steady)); c.close()
elif mode == "send":
    total = int(sys.argv[4]); buf = b"\0" * (1 << 20)
    c = socket.create_connection((host, port)); t = time.perf_counter(); sent = 0
    while sent < total:
        c.sendall(buf); sent += len(buf)
    c.shutdown(socket.SHUT_WR); got, steady = c.recv(64).split()
    print(int(got) / (time.perf_counter() - t), float(steady))
'''


def _probe(net, role: str, *args: str, background: bool = False):
    import subprocess
    import sys

    cmd = [*net.prefix(role), sys.executable, "-c", PROBE, *args]
    if background:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # "ready"
        return proc
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout


def measure_path(net, src: str, dst: str, nbytes: int, pings: int = 50) -> dict:
    """UDP echo RTT (ms) and TCP throughput (bytes/s) from ``src`` to ``dst``: over the
    whole transfer (slow start included, which grows with the RTT) and ``steady`` over
    its last two thirds (what the link and the router sustain)."""
    host = net.host(dst)
    echo = _probe(net, dst, "echo", host, "9999", background=True)
    sink = _probe(net, dst, "sink", host, "9998", str(nbytes), background=True)
    try:
        median, low, high = map(float, _probe(net, src, "ping", host, "9999",
                                              str(pings)).split())
        rate, steady = map(float, _probe(net, src, "send", host, "9998", str(nbytes)).split())
    finally:
        for p in (echo, sink):
            p.kill()
            p.wait()
    return {"path": f"{src}->{dst}", "rtt_ms": median, "rtt_min_ms": low,
            "rtt_max_ms": high, "bytes_per_s": rate, "steady_bytes_per_s": steady}


def check(rtts: list[float], nbytes: int, bandwidth: str) -> dict:
    """RTT and throughput on the bridge (no router) and through the router at each RTT."""
    from .network import Namespaces

    paths = [("client", "awi"), ("awi", "geomar")]
    out: dict = {"bandwidth": bandwidth, "bytes": nbytes, "load_1min": os.getloadavg()[0],
                 "runs": []}
    bridge = Namespaces(["hub", "awi", "geomar", "client"], bandwidth=bandwidth)
    try:
        bridge.setup()
        for src, dst in paths:
            out["runs"].append({"setting_rtt_ms": None, **measure_path(bridge, src, dst, nbytes)})
    finally:
        bridge.teardown()
    net = Namespaces(["hub", "awi", "geomar", "client"], bandwidth=bandwidth, rtt_ms=0)
    try:
        net.setup()
        for rtt in rtts:
            net.set_rtt(rtt)
            for src, dst in paths:
                before = net.router_stats()
                run = measure_path(net, src, dst, nbytes)
                after = net.router_stats()
                forwarded = after["bytes"] - before["bytes"]
                run.update(setting_rtt_ms=rtt, router_cpu_s=after["cpu_s"] - before["cpu_s"],
                           router_bytes=forwarded)
                run["router_cpu_s_per_gb"] = run["router_cpu_s"] / max(forwarded, 1) * 1e9
                out["runs"].append(run)
    finally:
        net.teardown()
    direct = {r["path"]: r["steady_bytes_per_s"] for r in out["runs"]
              if r["setting_rtt_ms"] is None}
    for r in out["runs"]:
        r["steady_vs_bridge"] = r["steady_bytes_per_s"] / direct[r["path"]]
        if r["setting_rtt_ms"] is not None:
            r["rtt_error_ms"] = r["rtt_ms"] - r["setting_rtt_ms"]
    out["load_1min_after"] = os.getloadavg()[0]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.delay")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the router (inside the router namespace)")
    s.add_argument("--tun", required=True)
    s.add_argument("--control", required=True, help="Unix socket path for control requests")
    s.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    s.add_argument("--jitter-ms", type=float, default=0.0, help="± uniform, one way")
    s.add_argument("--loss", type=float, default=0.0, help="drop probability per packet")
    c = sub.add_parser("check", help="measure RTT and throughput through the router (root)")
    c.add_argument("--rtt", type=float, nargs="+", default=[0, 20, 40, 80])
    c.add_argument("--mb", type=float, default=40, help="MB per throughput measurement")
    c.add_argument("--bandwidth", default="100mbit")
    c.add_argument("--out", default=None, help="write the JSON report here")
    a = p.parse_args(argv)
    if a.cmd == "serve":
        serve(a.tun, a.control, a.delay_ms / 1e3, a.jitter_ms / 1e3, a.loss)
        return
    report = check(a.rtt, int(a.mb * 1e6), a.bandwidth)
    text = json.dumps(report, indent=1)
    if a.out:
        Path(a.out).write_text(text)
    for r in report["runs"]:
        setting = "bridge" if r["setting_rtt_ms"] is None else f"{r['setting_rtt_ms']:g} ms"
        print(f"{r['path']:16s} {setting:>8s}  rtt {r['rtt_ms']:7.2f} ms  "
              f"{r['bytes_per_s'] / 1e6:6.2f} MB/s, steady {r['steady_bytes_per_s'] / 1e6:6.2f} "
              f"({r['steady_vs_bridge']:.3f} of bridge)"
              + (f"  router {r['router_cpu_s_per_gb']:.1f} CPU s/GB"
                 if "router_cpu_s_per_gb" in r else ""))


if __name__ == "__main__":
    main()
