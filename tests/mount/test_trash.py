"""``gfs trash ls/restore/purge`` through a real mount of a real cluster:
restore to the old path or elsewhere, clear errors, and purge giving the
space back (chunk files gone from the chunkds' disks, ``df`` shows it)."""
from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import TEST_CHUNK_SIZE, mounted_cluster, needs_fuse
from gfsfs.tools.localcluster import Cluster
from test_cli import gfs, gfs_json


def secret_env(cluster) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """gfs's way to the secured cluster's secret."""
    return {"GFS_SECRET_FILE": str(cluster.secret_file)} if cluster.secret_file else {}
from test_snapshot import chunk_files

CAPACITY = 1 << 30
pytestmark = needs_fuse


@pytest.fixture
def cap_cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    """A cluster whose chunkds advertise a fixed capacity (free = capacity -
    used: df moves exactly with the chunk bytes), mounted."""
    with mounted_cluster(tmp_path, tmp_path / "mnt",
                         [f"chunk_server.capacity_bytes={CAPACITY}"]) as both:
        yield both


def free_bytes(mnt: Path) -> int:
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


def wait_for(pred, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


def test_trash_ls_restore_purge_and_df(cap_cluster: tuple[Cluster, Path]) -> None:
    cluster, mnt = cap_cluster
    data = random.Random(5).randbytes(3 * TEST_CHUNK_SIZE)
    (mnt / "dir").mkdir()
    big = mnt / "dir" / "big"
    before_write = free_bytes(mnt)
    big.write_bytes(data)
    # heartbeats carry the chunkds' used bytes to the master
    assert wait_for(lambda: before_write - free_bytes(mnt) >= 3 * len(data) * 0.99)
    full = free_bytes(mnt)
    files_before = chunk_files(cluster)
    assert len(files_before) == 9                      # 3 chunks x 3 replicas

    big.unlink()
    assert not big.exists()
    listing = gfs_json(cluster, "trash", "ls")
    [entry] = listing["entries"]
    assert entry["path"] == "/dir/big" and entry["size"] == len(data)
    assert abs(entry["deleted_ns"] - time.time_ns()) < 30e9
    assert entry["purge_ns"] - entry["deleted_ns"] == int(listing["trash_time"] * 1e9)
    text = gfs("trash", "ls", master=cluster.url, env=secret_env(cluster))
    assert text.returncode == 0 and "/dir/big" in text.stdout and "3.0 MiB" in text.stdout

    # restore to the old path (a mount path works as well as /dir/big)
    r = gfs("trash", "restore", str(big), master=cluster.url, env=secret_env(cluster))
    assert r.returncode == 0, r.stderr
    assert "restored /dir/big" in r.stdout
    assert big.read_bytes() == data
    assert gfs_json(cluster, "trash", "ls")["entries"] == []

    # the old path is taken: a clear error; --to puts it elsewhere
    big.unlink()
    big.write_bytes(b"a new file of that name")
    r = gfs("trash", "restore", "/dir/big", master=cluster.url, env=secret_env(cluster))
    assert r.returncode == 1 and "exists" in r.stderr and "--to" in r.stderr
    r = gfs("trash", "restore", "/dir/big", "--to", str(mnt / "restored"), master=cluster.url, env=secret_env(cluster))
    assert r.returncode == 0, r.stderr
    assert (mnt / "restored").read_bytes() == data
    assert big.read_bytes() == b"a new file of that name"
    r = gfs("trash", "restore", "/no/such", master=cluster.url, env=secret_env(cluster))
    assert r.returncode == 1 and "not in the trash" in r.stderr

    # a directory that is gone: restoring needs --to
    (mnt / "gone").mkdir()
    (mnt / "gone" / "f").write_bytes(b"x")
    (mnt / "gone" / "f").unlink()
    (mnt / "gone").rmdir()
    [e] = gfs_json(cluster, "trash", "ls")["entries"]
    assert e["path"] is None
    r = gfs("trash", "restore", "--ino", str(e["ino"]), master=cluster.url, env=secret_env(cluster))
    assert r.returncode == 1 and "no longer exists" in r.stderr
    r = gfs("trash", "restore", "--ino", str(e["ino"]), "--to", "/f-back", master=cluster.url, env=secret_env(cluster))
    assert r.returncode == 0 and (mnt / "f-back").read_bytes() == b"x"

    # purge: --older-than spares what was deleted recently; then everything
    (mnt / "restored").unlink()
    purged = gfs_json(cluster, "trash", "purge", "--older-than", "3600")
    assert purged["purged"] == 0
    assert len(gfs_json(cluster, "trash", "ls")["entries"]) == 1
    time.sleep(0.2)
    purged = gfs_json(cluster, "trash", "purge", "--older-than", "0.1")
    assert purged["purged"] == 1 and purged["bytes"] == len(data)
    assert purged["chunks_freed"] == 3
    assert gfs_json(cluster, "trash", "ls")["entries"] == []

    # the chunkds delete the chunks on their next heartbeat; df shows the space
    assert wait_for(lambda: not (chunk_files(cluster) & files_before))
    slack = 2 * os.statvfs(mnt).f_frsize                # df counts whole fragments
    assert wait_for(lambda: free_bytes(mnt) - full >= 3 * len(data) - slack)
    df = gfs_json(cluster, "df")
    assert df["total_bytes"] - df["free_bytes"] < 3 * len(data)
    print(f"df free: {full} before the purge, {free_bytes(mnt)} after")
    r = gfs("trash", "purge", master=cluster.url, env=secret_env(cluster))
    assert r.returncode == 0 and "purged 0 files" in r.stdout
    assert big.read_bytes() == b"a new file of that name"
