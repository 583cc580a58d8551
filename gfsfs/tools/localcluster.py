"""Start and stop real gfsfs processes: a master, chunkds and mounts.

Used by ``make run`` (``python -m gfsfs.tools.localcluster``: master + 3 chunkds on
loopback, mounted at ./mnt, in the foreground until Ctrl-C, restarting whatever
dies; see Supervisor) and by the test fixtures. Every process is started by us, remembered by PID and stopped by that
PID; mounts are unmounted with ``fusermount3 -u`` and then ``-uz``.
"""
from __future__ import annotations

import argparse
import os
import re
import secrets as secrets_random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth import web as webauth
from gfsfs.common.auth.private import write_private
from gfsfs.common.auth.secret import Secret

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"listening on (https?://\S+)")


class Cancelled(RuntimeError):
    """A start given up because we are stopping (Ctrl-C while a daemon came up)."""


@dataclass
class Daemon:
    """One process we started; its stdout and stderr go to ``logfile``."""

    name: str
    argv: list[str]
    logfile: Path
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    # polled while waiting for readiness: True stops the process and raises Cancelled
    cancel: Callable[[], bool] | None = None

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
            if self.cancel is not None and self.cancel():
                self.stop()
                raise Cancelled(f"{self.name}: start cancelled")
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
    # more masters (shadows) the chunkds register with, after this cluster's own
    also_masters: list[str] = field(default_factory=list)
    # a cluster secret (data/secret, made at start): every daemon and mount signs
    # its requests and the chunkds want chunk tokens (docs/security.md)
    secure: bool = False
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

    @property
    def secret_file(self) -> Path | None:
        return self.data / "secret" if self.secure else None

    def secret(self) -> Secret | None:
        """The cluster secret (made if it does not exist yet); None if not secure."""
        return secrets.ensure(self.secret_file) if self.secret_file is not None else None

    def secret_sets(self) -> list[str]:
        """The ``--set`` a mount or tool needs to talk to this cluster."""
        if self.secret_file is None:
            return []
        self.secret()
        return ["--set", f"cluster.secret_file={str(self.secret_file)!r}"]

    @property
    def web_users_file(self) -> Path | None:
        return self.data / "web-users" if self.secure else None

    @property
    def admin_password_file(self) -> Path | None:
        return self.data / "web-admin-password" if self.secure else None

    @property
    def admin_token_file(self) -> Path | None:
        return self.data / "web-admin-token" if self.secure else None

    def web_login(self) -> None:
        """A secured cluster's web login: the user ``admin`` with a random
        password in data/web-admin-password, and an admin token in
        data/web-admin-token (both mode 0600, made once, kept after)."""
        users, pw_file, token_file = (self.web_users_file, self.admin_password_file,
                                      self.admin_token_file)
        if users is None or pw_file is None or token_file is None:
            return
        webauth.ensure_token(token_file)
        if not users.exists():
            password = secrets_random.token_urlsafe(16)
            write_private(pw_file, password + "\n")
            webauth.set_user(users, "admin", "admin", password)

    def web_sets(self) -> list[str]:
        """The master's ``--set`` for :meth:`web_login`."""
        if self.web_users_file is None:
            return []
        self.web_login()
        return ["--set", f"web.users_file={str(self.web_users_file)!r}",
                "--set", f"web.admin_token_file={str(self.admin_token_file)!r}"]

    def sets(self) -> list[str]:
        out: list[str] = self.secret_sets()
        for item in self.extra:
            out += ["--set", item]
        return out

    def start(self) -> Cluster:
        try:
            self.secret()
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
                    "--set", f"master.log_dir={str(self.logs)!r}"] + self.web_sets() \
                + self.sets()
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
                "--master", ",".join([self.url, *self.also_masters]),
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


def url_scheme(extra: list[str] | tuple[str, ...] = ()) -> str:
    """"https" when the daemons started from ROOT with the ``--set``
    overrides ``extra`` serve TLS (``[tls]`` cert in configs/config.toml or
    in ``extra``), else "http": the scheme of URLs built before they print theirs."""
    from gfsfs.common import config, tls
    path = ROOT / "configs" / "config.toml"
    return tls.scheme(config.load(path if path.exists() else None, list(extra)).tls)


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
    cancel: Callable[[], bool] | None = None

    def start(self, timeout: float = 30.0) -> Mount:
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        argv = [python(), str(ROOT / "mount.py"), self.master_url, str(self.mountpoint),
                "--foreground", "--set", f"client.log_dir={str(self.logfile.parent)!r}"]
        argv += self.options
        self.daemon = Daemon("mount", argv, self.logfile, cancel=self.cancel)
        self.daemon.start(ready=None)
        deadline = time.monotonic() + timeout
        while not is_mounted(self.mountpoint):
            if not self.daemon.alive():
                raise RuntimeError(f"mount.py exited:\n{self.daemon.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"not mounted after {timeout}s:\n{self.daemon.log_tail()}")
            if self.cancel is not None and self.cancel():
                self.stop()
                raise Cancelled("mount: start cancelled")
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


def unmount_lazy(path: Path) -> None:
    """``fusermount3 -uz``: detach a mount whose FUSE process is gone, even if busy."""
    if is_mounted(path):
        subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


def exit_reason(returncode: int | None) -> str:
    """``killed by SIGKILL`` or ``exited with status 1``."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def start_failure(d: Daemon | None, e: Exception) -> str:
    """Why a restart failed: its exit status, or the error (e.g. not ready in time)."""
    first = (str(e).splitlines() or [type(e).__name__])[0]
    if d is not None and d.proc is not None and "exited" in first:
        return f"pid {d.pid} {exit_reason(d.proc.returncode)} while starting"
    return f"while starting: {first}"


def last_lines(path: Path, n: int = 10) -> list[str]:
    try:
        text = path.read_bytes()[-16384:].decode("utf-8", "replace")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if line.strip()][-n:]


@dataclass
class Policy:
    """When the launcher restarts a dead process and when it gives up."""

    backoff: float = 1.0        # seconds before a restart; doubles per recent death
    max_backoff: float = 10.0
    max_deaths: int = 5         # more deaths than this of one process within window: give up
    window: float = 60.0

    def delay(self, recent_deaths: int) -> float:
        return min(self.max_backoff, self.backoff * 2 ** max(0, recent_deaths - 1))


@dataclass
class Child:
    """One supervised process: how to find and restart it, and when it died."""

    name: str
    daemon: Callable[[], Daemon | None]
    restart: Callable[[], None]
    deaths: list[float] = field(default_factory=list)
    restart_at: float | None = None


class GiveUp(Exception):
    """A process died too often; the launcher stops everything."""


class Supervisor:
    """Keeps ``make run``'s master, chunkds and mount running.

    A process that dies is logged (exit status or signal, the last lines of its
    .out file) and restarted after a backoff with the same argv: a chunkd keeps
    its --id and data dir (so its chunks), the master its data dir and port (it
    replays its op log; chunkds and the mount reconnect), the mount is detached
    with ``fusermount3 -uz`` and mounted again. A process that dies more than
    ``policy.max_deaths`` times within ``policy.window`` seconds raises GiveUp.
    """

    def __init__(self, cluster: Cluster, mount: Mount, policy: Policy,
                 stopping: Callable[[], bool], pid_dir: Path,
                 more: list[Daemon] | None = None) -> None:
        self.cluster = cluster
        self.mount = mount
        self.more = list(more or [])        # more daemons to keep running (shadow masters)
        self.policy = policy
        self.stopping = stopping
        self.pid_dir = pid_dir
        self.children = self._children()
        for ch in self.children:
            d = ch.daemon()
            if d is not None:
                d.cancel = stopping
        mount.cancel = stopping

    def _children(self) -> list[Child]:
        c = self.cluster
        kids = [Child("master", lambda: c.master, self._restart_master)]
        for d in c.servers + self.more:
            kids.append(Child(d.name, lambda d=d: d, d.start))
        kids.append(Child("mount", lambda: self.mount.daemon, self._restart_mount))
        return kids

    def _restart_master(self) -> None:
        self.cluster.restart_master(kill=True)      # same data dir and port

    def _restart_mount(self) -> None:
        unmount_lazy(self.mount.mountpoint)
        self.mount.start()

    def run(self, poll: float = 0.2) -> None:
        """Until ``stopping()``; raises GiveUp."""
        self.write_pids()
        while not self.stopping():
            for ch in self.children:
                if self.stopping():
                    return
                self._check(ch, time.monotonic())
            time.sleep(poll)

    def _check(self, ch: Child, now: float) -> None:
        d = ch.daemon()
        if ch.restart_at is None:
            if d is not None and not d.alive():
                self._died(ch, d, now)
        elif now >= ch.restart_at:
            self._restart(ch)

    def _died(self, ch: Child, d: Daemon | None, now: float, why: str = "") -> None:
        ch.deaths = [t for t in ch.deaths if now - t < self.policy.window] + [now]
        if d is not None and not why:
            why = f"pid {d.pid} {exit_reason(d.proc.returncode if d.proc else None)}"
        say(f"gfsfs: {ch.name} died: {why}", err=True)
        if d is not None and (tail := last_lines(d.logfile)):
            say(f"gfsfs: last lines of {d.logfile}:\n"
                + "\n".join("    " + line for line in tail), err=True)
        self._remove_pid(ch.name)
        n = len(ch.deaths)
        if n > self.policy.max_deaths:
            raise GiveUp(f"{ch.name} died {n} times within {self.policy.window:g}s")
        delay = self.policy.delay(n)
        ch.restart_at = now + delay
        say(f"gfsfs: restarting {ch.name} in {delay:g}s "
            f"({n} of {self.policy.max_deaths} allowed deaths in {self.policy.window:g}s)",
            err=True)

    def _restart(self, ch: Child) -> None:
        ch.restart_at = None
        try:
            ch.restart()
        except Cancelled:
            return
        except RuntimeError as e:           # exited or not ready while starting
            self._died(ch, ch.daemon(), time.monotonic(), why=start_failure(ch.daemon(), e))
            return
        d = ch.daemon()
        if d is not None:
            d.cancel = self.stopping
            say(f"gfsfs: {ch.name} restarted, pid {d.pid}", err=True)
        self.write_pids()

    def write_pids(self) -> None:
        """logs/NAME.pid for every running process (``kill -9 $(cat logs/chunk2.pid)``)."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        for ch in self.children:
            d = ch.daemon()
            if d is not None and d.alive():
                (self.pid_dir / f"{ch.name}.pid").write_text(f"{d.pid}\n")

    def _remove_pid(self, name: str) -> None:
        (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)

    def remove_pids(self) -> None:
        for ch in self.children:
            self._remove_pid(ch.name)


def say(msg: str, err: bool = False) -> None:
    print(msg, file=sys.stderr if err else sys.stdout, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Run a local gfsfs cluster mounted at ./mnt; a process that dies is "
                    "restarted; Ctrl-C unmounts and stops everything")
    p.add_argument("--base", default=str(ROOT), help="directory holding data/ and logs/")
    p.add_argument("--mountpoint", default=str(ROOT / "mnt"))
    p.add_argument("--chunkds", type=int, default=3)
    p.add_argument("--master-port", type=int, default=5000)
    p.add_argument("--chunk-base-port", type=int, default=5001)
    p.add_argument("--restart-backoff", type=float, default=Policy.backoff, metavar="SECS",
                   help="wait before restarting a dead process; doubles per recent death "
                        "(default %(default)s)")
    p.add_argument("--max-deaths", type=int, default=Policy.max_deaths, metavar="N",
                   help="give up (stop everything, unmount) when one process dies more than "
                        "N times within --death-window (default %(default)s)")
    p.add_argument("--death-window", type=float, default=Policy.window, metavar="SECS",
                   help="(default %(default)s)")
    p.add_argument("--insecure", action="store_true",
                   help="no cluster secret: anyone who reaches the ports may do anything")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``make run``: master + 3 chunkds + a mount, in the foreground, supervised."""
    args = parse_args(argv)
    base = Path(args.base).resolve()
    cluster = Cluster(base, args.chunkds, host="127.0.0.1",
                      master_port=args.master_port,
                      chunk_ports=[args.chunk_base_port + i for i in range(args.chunkds)],
                      secure=not args.insecure)
    mnt = Path(args.mountpoint).resolve()
    mount = Mount("", mnt, cluster.logs / "mount.out", options=cluster.secret_sets())
    policy = Policy(backoff=args.restart_backoff, max_deaths=args.max_deaths,
                    window=args.death_window)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sup: Supervisor | None = None
    try:
        cluster.start()
        mount.master_url = cluster.url
        mount.start()
        sup = Supervisor(cluster, mount, policy, lambda: stop["now"], cluster.logs)
        say(f"gfsfs: master {cluster.url}, {args.chunkds} chunkds, data in {cluster.data}, "
            f"logs in {cluster.logs}")
        say("gfsfs: pids: " + ", ".join(f"{ch.name} {d.pid}" for ch in sup.children
                                        if (d := ch.daemon()) is not None)
            + f" (also in {cluster.logs}/NAME.pid)")
        if cluster.admin_password_file is not None:
            say(f"gfsfs: web page {cluster.url}/ — log in as admin with the password in "
                f"{cluster.admin_password_file}; admin token (Authorization: Bearer, "
                f"GFS_ADMIN_TOKEN_FILE for gfs) in {cluster.admin_token_file}")
        say(f"gfsfs: mounted at {mnt} — use it from another shell; a process that dies is "
            "restarted; Ctrl-C unmounts and stops everything.")
        sup.run()
        return 0
    except GiveUp as e:
        bar = "!" * 72
        say(f"{bar}\ngfsfs: GIVING UP: {e} — stopping everything and unmounting; "
            f"see {cluster.logs}\n{bar}", err=True)
        return 1
    finally:
        say("gfsfs: unmounting and stopping...")
        mount.stop()
        cluster.stop()
        if sup is not None:
            sup.remove_pids()
        say("gfsfs: stopped.")


if __name__ == "__main__":
    sys.exit(main())
