"""A federation of real processes on this machine: a hub and sites as CLI subprocesses.

Used by ``dask federation demo``, the tests and the benchmarks.

Examples
--------
>>> with LocalFederation(workdir) as lf:                      # doctest: +SKIP
...     lf.start_site("awi.yaml")
...     fed = lf.connect()
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from .client import Federation, connect


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_site_config(path: str | os.PathLike, **config: object) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class LocalFederation:
    """Hub and sites as subprocesses, logs in ``workdir``; stopped on exit."""

    def __init__(
        self,
        workdir: str | os.PathLike,
        dashboard: bool = True,
        tls: tuple[str, str, str] | None = None,
        hub_args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        hub_wrapper: tuple[str, ...] = (),
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.dashboard_port = free_port() if dashboard else None
        #: (CA file, certificate, key) of the hub, for a tls:// federation
        self.tls = tls
        self.hub_args = hub_args
        #: the hub listens here; sites in other network namespaces reach it there
        self.host = host
        #: prefixes the hub's command, e.g. ``("ip", "netns", "exec", "hub")``
        self.hub_wrapper = hub_wrapper
        self.address = f"{'tls' if tls else 'tcp'}://{host}:{self.port}"
        self.processes: dict[str, subprocess.Popen] = {}
        #: where each process's run starts in its (appended) log file
        self.log_offsets: dict[str, int] = {}

    @property
    def dashboard_url(self) -> str | None:
        if self.dashboard_port is None:
            return None
        return f"http://127.0.0.1:{self.dashboard_port}/status"

    @property
    def page_url(self) -> str | None:
        """The hub's federation page (sites, traffic, catalog), next to Dask's pages."""
        if self.dashboard_port is None:
            return None
        return f"http://127.0.0.1:{self.dashboard_port}/federation"

    def _spawn(
        self, name: str, *args: str, wrapper: tuple[str, ...] = ()
    ) -> subprocess.Popen:
        path = self.workdir / f"{name}.log"
        # the log is appended to: a reused work dir holds earlier runs' lines
        self.log_offsets[name] = path.stat().st_size if path.exists() else 0
        log = open(path, "ab")  # noqa: SIM115 - owned by the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "federation.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in a terminal reaches us, we stop them
        )
        self.processes[name] = proc
        return proc

    def log(self, name: str, current: bool = False) -> str:
        """The log of process ``name``; ``current``: only its latest run."""
        data = (self.workdir / f"{name}.log").read_bytes()
        if current:
            data = data[self.log_offsets.get(name, 0):]
        return data.decode(errors="replace")

    def start_hub(self) -> None:
        """Start the hub and wait until it listens. On its first start, ports that another
        process took between :func:`free_port` and the hub binding them are chosen again
        (twice at most); a restart keeps its address, which the sites reconnect to."""
        first = "hub" not in self.processes
        for attempt in range(3):
            try:
                return self._start_hub()
            except RuntimeError as e:
                if not first or attempt == 2 or "Address already in use" not in str(e):
                    raise
            self.port = free_port()
            self.dashboard_port = free_port() if self.dashboard_port else None
            self.address = f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    def _start_hub(self) -> None:
        # without a dashboard the HTTP server still listens (on any port), Bokeh is off
        dash = ["--dashboard-address", f"127.0.0.1:{self.dashboard_port or 0}",
                *([] if self.dashboard_port else ["--no-dashboard"])]
        tls = []
        if self.tls:
            ca, cert, key = map(str, self.tls)
            tls = ["--tls-ca-file", ca, "--tls-cert", cert, "--tls-key", key]
        self._spawn(
            "hub", "hub", "--host", self.host, "--port", str(self.port),
            "--relay-port", str(free_port()),
            *dash, *tls, *self.hub_args, wrapper=self.hub_wrapper,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.processes["hub"].poll() is not None:
                raise RuntimeError(f"hub exited:\n{self.log('hub', current=True)}")
            # its own log line first: a connection alone may reach another process that
            # took the port
            if "Federation hub at" in self.log("hub", current=True):
                try:
                    socket.create_connection((self.host, self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"hub did not start:\n{self.log('hub', current=True)}")

    def start_site(
        self, config: str | os.PathLike, *extra: str, name: str | None = None,
        wait: bool = True, wrapper: tuple[str, ...] = (),
    ) -> subprocess.Popen:
        """Start ``dask federation site CONFIG --hub <this hub>``; wait until its workers
        are connected (unless ``wait=False``). ``wrapper`` prefixes the command, e.g.
        ``("ip", "netns", "exec", "awi")`` to run the site in its own network namespace."""
        name = name or Path(config).stem
        proc = self._spawn(
            name, "site", str(config), "--hub", self.address, *extra, wrapper=wrapper
        )
        if wait:
            self.wait_for_site(name, proc)
        return proc

    def wait_for_site(self, name: str, proc: subprocess.Popen, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"site {name} exited:\n{self.log(name, current=True)}")
            if "serving" in self.log(name, current=True):
                return
            time.sleep(0.2)
        raise TimeoutError(f"site {name} did not start:\n{self.log(name, current=True)}")

    def connect(self, **client_kwargs) -> Federation:
        return connect(self.address, **{"timeout": "30s", **client_kwargs})

    def stop(self, *names: str, timeout: float = 20) -> None:
        """Stop the processes ``names``: SIGTERM to all of them at once (each shuts down
        gracefully in parallel), then SIGKILL to the process group of any still running
        after ``timeout`` seconds."""
        names = [name for name in names if name in self.processes]
        for name in names:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in names:  # each is forgotten only once reaped (an interrupted stop
            proc = self.processes[name]  # leaves the rest to close())
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            del self.processes[name]

    def close(self) -> None:
        """Stop the sites (together), then the hub."""
        self.stop(*[n for n in self.processes if n != "hub"])
        self.stop("hub")

    def __enter__(self) -> LocalFederation:
        self.start_hub()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
