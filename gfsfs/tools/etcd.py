"""Start and stop a real, single-member etcd on loopback (Debian ``etcd-server``).

For the tests of automatic failover (``tests/ha``) and a future ``make run-ha``:
:class:`Etcd` picks free ports for its client and peer URLs, runs
``/usr/bin/etcd`` with its data dir under ``base_dir`` and its output in
``base_dir/logs/etcd.out``, waits until ``GET /health`` answers healthy, and
exposes the client URL as ``.url``. :meth:`Etcd.stop` ends it by its PID
(SIGCONT, SIGTERM, then SIGKILL) and always reaps it (the
:class:`~gfsfs.tools.localcluster.Daemon` it runs as).

``python -m gfsfs.tools.etcd [BASE_DIR]`` runs one in the foreground until Ctrl-C
(BASE_DIR defaults to the checkout: data/etcd and logs/etcd.out there).
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import httpx

from gfsfs.tools.localcluster import ROOT, Daemon

ETCD = "etcd"       # /usr/bin/etcd, from the Debian package etcd-server


def free_port(host: str) -> int:
    """A port nothing listens on now (the kernel's pick; a race we retry on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def etcd_binary() -> str | None:
    return shutil.which(ETCD)


class Etcd:
    """One etcd member on ``host``; ``start()``, then ``.url``; ``stop()``."""

    def __init__(self, base_dir: Path | str, host: str = "127.0.0.1",
                 name: str = "gfsfs-etcd") -> None:
        self.base = Path(base_dir)
        self.host = host
        self.name = name
        self.client_port = 0
        self.peer_port = 0
        self.daemon: Daemon | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def data_dir(self) -> Path:
        return self.base / "data" / "etcd"

    @property
    def logfile(self) -> Path:
        return self.base / "logs" / "etcd.out"

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.pid

    def argv(self) -> list[str]:
        binary = etcd_binary()
        if binary is None:
            raise RuntimeError("no etcd on PATH: install the Debian package etcd-server "
                               "(.ci/bootstrap test does)")
        peer = f"http://{self.host}:{self.peer_port}"
        return [binary, "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"{self.name}={peer}",
                "--initial-cluster-state", "new", "--initial-cluster-token", self.name]

    def start(self, timeout: float = 30.0, attempts: int = 3) -> Etcd:
        """Start it on fresh free ports (again, if a port was taken meanwhile)."""
        for attempt in range(attempts):
            self.client_port, self.peer_port = free_port(self.host), free_port(self.host)
            self.daemon = Daemon("etcd", self.argv(), self.logfile)
            self.daemon.start(ready=None)
            try:
                self.wait_healthy(timeout)
                return self
            except RuntimeError:
                self.stop()
                if attempt == attempts - 1:
                    raise
        return self

    def wait_healthy(self, timeout: float) -> None:
        assert self.daemon is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=2.0, trust_env=False) as http:
            while time.monotonic() < deadline:
                if not self.daemon.alive():
                    raise RuntimeError(f"etcd exited:\n{self.daemon.log_tail()}")
                if self.healthy(http):
                    return
                time.sleep(0.1)
        raise RuntimeError(f"etcd not healthy after {timeout}s:\n{self.daemon.log_tail()}")

    def healthy(self, http: httpx.Client) -> bool:
        try:
            r = http.get("/health")             # etcd's route (not a gfsfs one)
            return r.status_code == 200 and json.loads(r.text).get("health") == "true"
        except (httpx.HTTPError, ValueError):
            return False

    def alive(self) -> bool:
        return self.daemon is not None and self.daemon.alive()

    def signal(self, sig: int) -> None:
        """E.g. SIGSTOP and SIGCONT, to freeze it for a while (``stop`` sends SIGCONT)."""
        if self.daemon is not None:
            self.daemon.signal(sig)

    def stop(self) -> None:
        """SIGTERM by its PID, then SIGKILL; always reaps."""
        if self.daemon is not None:
            self.daemon.stop()

    def log_tail(self, size: int = 4000) -> str:
        return self.daemon.log_tail(size) if self.daemon is not None else ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    etcd = Etcd(Path(args[0]).resolve() if args else ROOT)
    stopping = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        etcd.start()
        print(f"etcd {etcd.url} (pid {etcd.pid}; log {etcd.logfile}); Ctrl-C stops it",
              flush=True)
        while not stopping["now"] and etcd.alive():
            time.sleep(0.2)
        return 0 if stopping["now"] else 1
    finally:
        etcd.stop()


if __name__ == "__main__":
    sys.exit(main())
