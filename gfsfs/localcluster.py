"""Start and stop real gfsfs processes: a master, chunkds and mounts.

Used by ``make run`` (``python -m gfsfs.localcluster``: master + 3 chunkds on
loopback, mounted at ./mnt, in the foreground until Ctrl-C) and by the test
fixtures. Every process is started by us, remembered by PID and stopped by that
PID; mounts are unmounted with ``fusermount3 -u`` and then ``-uz``.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"listening on (http://\S+)")


@dataclass
class Daemon:
    """One process we started; its stdout and stderr go to ``logfile``."""

    name: str
    argv: list[str]
    logfile: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self, ready: re.Pattern[str] | None = READY, timeout: float = 30.0) -> None:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.logfile, "ab")
        start_size = self.logfile.stat().st_size
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=ROOT, env=env,
                                     start_new_session=True)
        out.close()
        if ready is not None:
            self.url = self._wait_ready(ready, start_size, timeout)

    def _wait_ready(self, ready: re.Pattern[str], offset: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            text = self.logfile.read_bytes()[offset:].decode("utf-8", "replace")
            m = ready.search(text)
            if m:
                return m.group(1) if m.groups() else ""
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.logfile}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL; always reaps."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, size: int = 4000) -> str:
        try:
            return self.logfile.read_bytes()[-size:].decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


def python() -> str:
    return sys.executable


@dataclass
class Cluster:
    """A master and chunkds under ``base`` (data/ and logs/ inside it)."""

    base: Path
    chunkds: int = 3
    host: str = "127.0.0.1"
    master_port: int = 0
    chunk_ports: list[int] = field(default_factory=list)
    chunk_hosts: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    # per chunkd (by index): more --set overrides, e.g. ['chunk_server.rack="r1"']
    chunk_sets: list[list[str]] = field(default_factory=list)
    master: Daemon | None = None
    servers: list[Daemon] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    @property
    def url(self) -> str:
        assert self.master is not None
        return self.master.url

    def sets(self) -> list[str]:
        out: list[str] = []
        for item in self.extra:
            out += ["--set", item]
        return out

    def start(self) -> Cluster:
        try:
            self.start_master()
            for i in range(self.chunkds):
                self.add_chunkd(i)
        except BaseException:
            self.stop()
            raise
        return self

    def start_master(self) -> Daemon:
        if self.master is None:
            argv = [python(), "-m", "master", "--host", self.host,
                    "--port", str(self.master_port), "--data-dir", str(self.data / "master"),
                    "--set", f"master.log_dir={str(self.logs)!r}"] + self.sets()
            self.master = Daemon("master", argv, self.logs / "master.out")
        self.master.start()
        # a restarted master keeps its port
        self.master_port = int(self.master.url.rsplit(":", 1)[1])
        return self.master

    def add_chunkd(self, i: int | None = None) -> Daemon:
        i = len(self.servers) if i is None else i
        host = self.chunk_hosts[i] if i < len(self.chunk_hosts) else self.host
        port = self.chunk_ports[i] if i < len(self.chunk_ports) else 0
        argv = [python(), "-m", "chunkd", "--id", f"chunk{i + 1}", "--host", host,
                "--port", str(port), "--data-dir", str(self.data / "chunks"),
                "--master", self.url,
                "--set", f"chunk_server.log_dir={str(self.logs)!r}"] + self.sets()
        for item in (self.chunk_sets[i] if i < len(self.chunk_sets) else []):
            argv += ["--set", item]
        d = Daemon(f"chunk{i + 1}", argv, self.logs / f"chunk{i + 1}.out")
        d.start()
        self.servers.append(d)
        return d

    def restart_chunkd(self, i: int) -> Daemon:
        self.servers[i].stop()
        self.servers[i].start()
        return self.servers[i]

    def restart_master(self, kill: bool = True) -> Daemon:
        assert self.master is not None
        if kill:
            self.master.kill()
        else:
            self.master.stop()
        self.master.argv[self.master.argv.index("--port") + 1] = str(self.master_port)
        return self.start_master()

    def stop(self) -> None:
        for d in self.servers:
            d.stop()
        if self.master is not None:
            self.master.stop()

    def logs_text(self) -> str:
        parts = []
        for d in ([self.master] if self.master else []) + self.servers:
            parts.append(f"===== {d.name} ({d.logfile}) =====\n{d.log_tail()}")
        return "\n".join(parts)


def is_mounted(path: Path) -> bool:
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == real for line in f)


def unmount(path: Path) -> None:
    """fusermount3 -u, then the lazy -uz if it is still mounted."""
    if not is_mounted(path):
        return
    subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


@dataclass
class Mount:
    """``mount.py MASTER_URL MOUNTPOINT --foreground`` in a subprocess."""

    master_url: str
    mountpoint: Path
    logfile: Path
    options: list[str] = field(default_factory=list)
    daemon: Daemon | None = None

    def start(self, timeout: float = 30.0) -> Mount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        argv = [python(), str(ROOT / "mount.py"), self.master_url, str(self.mountpoint),
                "--foreground", "--set", f"client.log_dir={str(self.logfile.parent)!r}"]
        argv += self.options
        self.daemon = Daemon("mount", argv, self.logfile)
        self.daemon.start(ready=None)
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mountpoint):
            if not self.daemon.alive():
                raise RuntimeError(f"mount.py exited:\n{self.daemon.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"not mounted after {timeout}s:\n{self.daemon.log_tail()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        unmount(self.mountpoint)
        if self.daemon is not None:
            self.daemon.stop()
        unmount(self.mountpoint)

    def kill(self) -> None:
        if self.daemon is not None:
            self.daemon.kill()
        unmount(self.mountpoint)


def main(argv: list[str] | None = None) -> int:
    """``make run``: master + 3 chunkds + a mount, in the foreground."""
    p = argparse.ArgumentParser(description="Run a local gfsfs cluster mounted at ./mnt")
    p.add_argument("--base", default=str(ROOT), help="directory holding data/ and logs/")
    p.add_argument("--mountpoint", default=str(ROOT / "mnt"))
    p.add_argument("--chunkds", type=int, default=3)
    p.add_argument("--master-port", type=int, default=5000)
    p.add_argument("--chunk-base-port", type=int, default=5001)
    args = p.parse_args(argv)
    base = Path(args.base).resolve()
    cluster = Cluster(base, args.chunkds, host="127.0.0.1", master_port=args.master_port,
                      chunk_ports=[args.chunk_base_port + i for i in range(args.chunkds)])
    mnt = Path(args.mountpoint).resolve()
    mount = Mount("", mnt, cluster.logs / "mount.out")
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        cluster.start()
        mount.master_url = cluster.url
        mount.start()
        print(f"gfsfs: master {cluster.url}, {args.chunkds} chunkds, data in {cluster.data}, "
              f"logs in {cluster.logs}", flush=True)
        print(f"gfsfs: mounted at {mnt} — use it from another shell; Ctrl-C unmounts and "
              "stops everything.", flush=True)
        while not stop["now"]:
            if not all(d.alive() for d in [cluster.master, *cluster.servers, mount.daemon]
                       if d is not None):
                print("gfsfs: a process died; see logs/ — stopping", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    finally:
        print("gfsfs: unmounting and stopping...", flush=True)
        mount.stop()
        cluster.stop()
        print("gfsfs: stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
