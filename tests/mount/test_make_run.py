"""`make run`'s program: a local cluster mounted in the foreground, stopped
cleanly by Ctrl-C (SIGINT to its process group), finding its files again;
restarting a process that dies and giving up on one that keeps dying."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conftest import needs_fuse
from gfsfs.tools.localcluster import ROOT, is_mounted, unmount


def free_ports(n: int) -> list[int]:
    """``n`` ports the kernel says are free now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start(base: Path, mnt: Path, ports: list[int], *extra: str) -> subprocess.Popen[str]:
    return launch(["gfsfs.tools.localcluster", "--base", str(base), "--mountpoint", str(mnt),
                   "--master-port", str(ports[0]), "--chunk-base-port", str(ports[1]), *extra],
                  mnt)


def launch(args: list[str], mnt: Path, timeout: float = 60) -> subprocess.Popen[str]:
    """``python -m ARGS`` in a session of its own, once ``mnt`` is mounted."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not is_mounted(mnt):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, f"not mounted within {timeout:g} s"
        time.sleep(0.1)
    return proc


def interrupt(proc: subprocess.Popen[str]) -> str:
    os.killpg(proc.pid, signal.SIGINT)      # what Ctrl-C does
    out, _ = proc.communicate(timeout=60)
    return out


@needs_fuse
def test_run_mounts_stops_on_ctrl_c_and_keeps_files(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    ports = launcher_ports()
    proc = start(tmp_path, mnt, ports)
    try:
        (mnt / "kept.txt").write_text("still here")
        out = interrupt(proc)
        assert proc.returncode == 0, out
        assert f"mounted at {mnt}" in out and "stopped." in out
        assert not is_mounted(mnt)
        assert (tmp_path / "data" / "master").is_dir()
        assert sorted(p.name for p in (tmp_path / "data" / "chunks").iterdir()) == \
            ["chunk1", "chunk2", "chunk3"]
        proc = start(tmp_path, mnt, ports)
        assert (mnt / "kept.txt").read_text() == "still here"
        interrupt(proc)
    finally:
        cleanup(proc, tmp_path, mnt)


def launcher_ports() -> list[int]:
    """[master port, chunk base port]: the chunkds take base, +1, +2, all free now."""
    base_port = next(p for p in range(20000 + os.getpid() % 1000 * 30, 60000, 7)
                     if all(_free(p + i) for i in range(3)))
    return [free_ports(1)[0], base_port]


def cleanup(proc: subprocess.Popen[str], base: Path, mnt: Path) -> None:
    """Stop the launcher; if it could not stop its processes, stop them by their pid files."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
    for pidfile in (base / "logs").glob("*.pid"):
        try:
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
    unmount(mnt)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.2,
             describe: Callable[[], str] = lambda: "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"not {what} within {timeout} s {describe()}"
        time.sleep(every)


def tail_logs(base: Path, size: int = 3000) -> str:
    """The end of every daemon's log under ``base`` (for a failure message)."""
    return "\n".join(f"===== {p.name}\n{p.read_text(errors='replace')[-size:]}"
                     for p in sorted(base.glob("**/logs/*.out")))


def pid_of(base: Path, name: str) -> int | None:
    """What the launcher wrote to logs/NAME.pid (None while it is restarting NAME)."""
    try:
        return int((base / "logs" / f"{name}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (killed, not yet reaped by the launcher) counts as dead
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def gfs_json(base: Path, master: str, *args: str) -> Any:
    """``gfs --master URL ARGS --json`` (fsck exits 1 only on lost chunks),
    with the secret ``make run`` made under ``base``."""
    env = {**os.environ, "GFS_SECRET_FILE": str(base / "data" / "secret")}
    r = subprocess.run([sys.executable, "-m", "gfsfs.tools.cli", "--master", master, *args, "--json"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)     # through the mount
        while piece := os.read(fd, 1 << 20):
            h.update(piece)
    finally:
        os.close(fd)
    return h.hexdigest()


def restarted(base: Path, name: str, old: int) -> int | None:
    pid = pid_of(base, name)
    return pid if pid is not None and pid != old and alive(pid) else None


# the killed chunkd's torn last write is found corrupt by its scrubber after the restart
@pytest.mark.allow_errors
@needs_fuse
def test_chunkd_kill9_during_cp_is_restarted_and_cp_succeeds(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    ports = launcher_ports()
    master = f"http://127.0.0.1:{ports[0]}"
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        for _ in range(256):
            f.write(os.urandom(1 << 20))
    want = sha256_file(src)
    proc = start(tmp_path, mnt, ports, "--restart-backoff", "0.5")
    try:
        victim = wait_for("chunk2.pid", lambda: pid_of(tmp_path, "chunk2"), 10)
        t0 = time.monotonic()
        cp = subprocess.Popen(["cp", str(src), str(mnt / "big")], stderr=subprocess.PIPE,
                              text=True)
        wait_for("64 MiB copied", lambda: cp.poll() is not None or (
            (mnt / "big").exists() and (mnt / "big").stat().st_size >= 64 << 20), 60, 0.02)
        os.kill(victim, signal.SIGKILL)
        assert cp.poll() is None, "cp finished before the chunkd was killed"
        _, err = cp.communicate(timeout=120)
        took = time.monotonic() - t0
        assert cp.returncode == 0, err
        assert sha256_file(mnt / "big") == want

        new = wait_for("chunk2 restarted", lambda: restarted(tmp_path, "chunk2", victim), 30)
        wait_for("3 live chunkds, none dead", lambda: (
            (st := gfs_json(tmp_path, master, "status"))["chunkds_alive"] == 3
            and st["chunkds_dead"] == 0), 30)
        chunk2 = next(s for s in gfs_json(tmp_path, master, "chunkd", "list")["servers"]
                      if s["id"] == "chunk2")
        assert chunk2["alive"] and chunk2["addr"].endswith(f":{ports[1] + 1}")
        t1 = time.monotonic()
        last: list[dict] = [{}]

        def fsck_clean() -> dict | None:
            """No chunk lost or under its goal: what fsck may still list is
            history (a replica found stale or corrupt within the hour -- e.g. a
            block torn by the kill, caught by the scrubber and copied anew)."""
            last[0] = r = gfs_json(tmp_path, master, "fsck")
            healed = all(set(p["states"]) <= {"stale", "corrupt"} and p["live"] >= p["goal"]
                         for p in r["problems"])
            return r if r["lost"] == 0 and r["under_goal"] == 0 and healed else None

        report = wait_for("fsck clean", fsck_clean, 120, 1, describe=lambda: (
            f"last fsck: {last[0]}\nlogs:\n" + tail_logs(tmp_path)))
        assert report["chunks"] >= 4
        print(f"cp of 256 MiB with chunk2 killed midway: {took:.1f} s; "
              f"fsck clean {time.monotonic() - t1:.1f} s after chunk2 came back as pid {new}")

        # the mount itself dies: the launcher detaches it and mounts again
        mount_pid = wait_for("mount.pid", lambda: pid_of(tmp_path, "mount"), 10)
        os.kill(mount_pid, signal.SIGKILL)
        wait_for("remounted", lambda: restarted(tmp_path, "mount", mount_pid), 30)
        wait_for("mounted", lambda: is_mounted(mnt), 10)
        assert sha256_file(mnt / "big") == want

        out = interrupt(proc)
        assert proc.returncode == 0, out
        assert f"chunk2 died: pid {victim} killed by SIGKILL" in out, out
        assert f"chunk2 restarted, pid {new}" in out, out
        assert f"mount died: pid {mount_pid} killed by SIGKILL" in out, out
        # nothing else died: the cp went on through the same mount and master
        assert out.count(" died: ") == 2, out
        assert not is_mounted(mnt)
        assert not list((tmp_path / "logs").glob("*.pid"))
    finally:
        cleanup(proc, tmp_path, mnt)


# the chunkd it restarts cannot listen (the test holds its port), and says so
@pytest.mark.allow_errors
@needs_fuse
def test_a_process_that_keeps_dying_makes_the_launcher_give_up(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    ports = launcher_ports()
    proc = start(tmp_path, mnt, ports, "--restart-backoff", "0.3", "--max-deaths", "2",
                 "--death-window", "60")
    try:
        (mnt / "before").write_text("before")
        pids = {n: wait_for(f"{n}.pid", lambda n=n: pid_of(tmp_path, n), 10)
                for n in ("master", "chunk1", "chunk2", "chunk3", "mount")}
        # a master killed once comes back on its port with its op log; the mount reconnects
        os.kill(pids["master"], signal.SIGKILL)
        pids["master"] = wait_for("master restarted",
                                  lambda: restarted(tmp_path, "master", pids["master"]), 30)
        assert (mnt / "before").read_text() == "before"
        (mnt / "after").write_text("after")
        assert (mnt / "after").read_text() == "after"

        # chunk3 killed, and its port taken: every restart dies at once
        chunk3_port = ports[1] + 2
        os.kill(pids["chunk3"], signal.SIGKILL)
        blocker = wait_for("chunk3's port", lambda: _listen(chunk3_port), 5, 0.01)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:
            blocker.close()
        assert proc.returncode == 1, out
        assert "GIVING UP: chunk3 died 3 times within 60s" in out, out
        assert "Address already in use" in out, out           # the log's last lines
        assert "stopped." in out
        assert not is_mounted(mnt)
        for name, pid in pids.items():
            assert not alive(pid), name
        assert not list((tmp_path / "logs").glob("*.pid"))
    finally:
        cleanup(proc, tmp_path, mnt)


def _listen(port: int) -> socket.socket | None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # past TIME_WAIT connections
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.listen()
    return s
