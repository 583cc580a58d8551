"""`make run`'s program: a local cluster mounted in the foreground, stopped
cleanly by Ctrl-C (SIGINT to its process group), finding its files again."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import needs_fuse
from gfsfs.localcluster import ROOT, is_mounted, unmount


def free_ports(n: int) -> list[int]:
    """``n`` ports the kernel says are free now."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start(base: Path, mnt: Path, ports: list[int]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "gfsfs.localcluster", "--base", str(base),
            "--mountpoint", str(mnt), "--master-port", str(ports[0]),
            "--chunk-base-port", str(ports[1])]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not is_mounted(mnt):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "not mounted within 60 s"
        time.sleep(0.1)
    return proc


def interrupt(proc: subprocess.Popen[str]) -> str:
    os.killpg(proc.pid, signal.SIGINT)      # what Ctrl-C does
    out, _ = proc.communicate(timeout=60)
    return out


@needs_fuse
def test_run_mounts_stops_on_ctrl_c_and_keeps_files(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    # the chunkds take chunk-base-port, +1, +2: three consecutive free ports
    base_port = next(p for p in range(20000 + os.getpid() % 1000 * 30, 60000, 7)
                     if all(_free(p + i) for i in range(3)))
    ports = [free_ports(1)[0], base_port]
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
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        unmount(mnt)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
