"""kill -9 of the master in the middle of a rename storm and of an O_APPEND
storm from two mounts: after the restart every acknowledged rename and append
is there, and fsck is clean."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from conftest import needs_fuse
from faultkit import read_uncached, rpc, running, wait_for
from gfsfs.tools.localcluster import Mount

# failover_timeout: restarting the master forks this process while the
# appenders hold files open on the mounts, and the child's closing of those
# descriptors sends FUSE flushes that wait for the master being restarted:
# each waits until the mount gives up on it
OPTS = ["--set", "client.request_timeout=3", "--set", "client.retries=8",
        "--set", "client.chunkd_timeout=3", "--set", "client.failover_timeout=10"]


@needs_fuse
def test_master_kill9_during_rename_storm(tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, hosts=False, mount_opts=OPTS) as (c, m):
        assert m is not None
        root = m.mountpoint
        for d in ("x", "y"):
            (root / d).mkdir()
        files = [f"f{i}" for i in range(20)]
        for f in files:
            (root / "x" / f).write_bytes(f.encode())
        where = {f: "x" for f in files}          # last acknowledged place
        unsure: set[str] = set()
        stop = threading.Event()

        def storm() -> None:
            while not stop.is_set():
                for f in files:
                    if stop.is_set():
                        return
                    src = where[f]
                    dst = "y" if src == "x" else "x"
                    try:
                        os.rename(root / src / f, root / dst / f)
                    except OSError:
                        # unacknowledged: it may or may not have happened
                        src, dst = dst, src
                        try:
                            os.rename(root / src / f, root / dst / f)
                        except OSError:
                            unsure.add(f)
                            time.sleep(0.05)
                            continue
                    where[f] = dst
                    unsure.discard(f)
        t = threading.Thread(target=storm, daemon=True)
        t.start()
        time.sleep(1.5)
        c.restart_master(kill=True)
        time.sleep(3)
        stop.set()
        t.join(60)
        assert not t.is_alive()
        for f, d in where.items():
            if f in unsure:
                assert (root / "x" / f).exists() != (root / "y" / f).exists(), f
                continue
            other = "y" if d == "x" else "x"
            assert (root / d / f).exists() and not (root / other / f).exists(), (f, d)
        wait_for("chunkds back", lambda: rpc(c.url, "cluster_status")["chunkds_alive"] == 3, 20)
        wait_for("fsck clean", lambda: (lambda r: r["lost"] == 0 and r["under_goal"] == 0)(
            rpc(c.url, "fsck")), 30)


@needs_fuse
def test_master_kill9_during_append_storm(tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, hosts=False, mount_opts=OPTS) as (c, m):
        assert m is not None
        m2 = Mount(c.url, tmp_path / "mnt2", c.logs / "mount2.out", options=OPTS)
        m2.start()
        try:
            (m.mountpoint / "log").write_bytes(b"")
            acked: list[bytes] = []
            stop = threading.Event()

            def appender(root: Path, tag: str) -> None:
                i = 0
                while not stop.is_set():
                    rec = f"<{tag}-{i:06d}-{'z' * 200}>\n".encode()
                    i += 1
                    try:
                        fd = os.open(root / "log", os.O_WRONLY | os.O_APPEND)
                        try:
                            assert os.write(fd, rec) == len(rec)
                            os.fsync(fd)
                        finally:
                            os.close(fd)
                    except OSError:
                        time.sleep(0.05)
                        continue
                    acked.append(rec)
            ts = [threading.Thread(target=appender, args=(r, t), daemon=True)
                  for r, t in ((m.mountpoint, "a"), (m2.mountpoint, "b"))]
            for t in ts:
                t.start()
            time.sleep(1.5)
            c.restart_master(kill=True)
            time.sleep(3)
            stop.set()
            for t in ts:
                t.join(60)
            assert acked
            data = read_uncached(m.mountpoint / "log")
            missing = [r for r in acked if r not in data]
            assert not missing, (len(missing), len(acked), missing[:3])
            print(f"{len(acked)} acknowledged appends, all present and whole")
            wait_for("fsck clean", lambda: (lambda r: r["lost"] == 0 and r["under_goal"] == 0)(
                rpc(c.url, "fsck")), 30)
        finally:
            m2.stop()
