"""Directory quotas through a real mount of a real cluster (docs/quotas.md):
EDQUOT at the inode limit and at the byte limit, a rename into a full tree
refused (one within it free), a snapshot into the tree accounted, ``df`` of a
mount whose root has a quota, and the usage exact right after a kill -9 of
the master and its restart."""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from gfsfs.tools.localcluster import Cluster
from test_cli import gfs, gfs_json, rpc

MiB = 1 << 20
pytestmark = needs_fuse
assert TEST_CHUNK_SIZE == MiB


def quota_of(cluster: Cluster, path: str) -> dict[str, Any]:
    """The quota row of ``path`` (inside the file system), from the master."""
    return next(r for r in rpc(cluster.url, "quota_list")["quotas"] if r["path"] == path)


def set_quota(cluster: Cluster, local: Path, **limits: Any) -> None:
    """quota_set on the directory at ``local`` (a path on the mount): the RPC the
    CLI uses (the CLI itself is run a few times below; each run costs a process)."""
    rpc(cluster.url, "quota_set", ino=os.stat(local).st_ino, **limits)


def edquot(fn: Any, *args: Any) -> None:
    with pytest.raises(OSError) as info:
        fn(*args)
    assert info.value.errno == errno.EDQUOT, info.value


def write_file(path: Path, size: int) -> None:
    """Write ``size`` bytes in 256 KiB pieces and close: EDQUOT (from a write
    or the close) as OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        piece = b"q" * (256 * 1024)
        left = size
        while left:
            left -= os.write(fd, piece[:left])
    finally:
        os.close(fd)


def test_quotas_through_the_mount(cluster: Cluster, mounted: Path) -> None:
    q = mounted / "q"
    q.mkdir()
    r = gfs("quota", "set", str(q), "--inodes", "4", "--bytes", "3M", master=cluster.url)
    assert r.returncode == 0, r.stderr
    assert "quota on /q" in r.stdout

    # inodes: files, directories, symlinks count; the fifth is refused
    (q / "f1").touch()
    (q / "d").mkdir()
    (q / "f2").symlink_to("f1")
    (q / "f3").write_bytes(b"")
    edquot((q / "f4").touch)
    edquot((q / "d2").mkdir)
    edquot((q / "s").symlink_to, "f1")
    os.link(q / "f1", q / "d" / "f1-link")       # a hard link within the tree: free
    assert quota_of(cluster, "/q")["used_inodes"] == 4
    for name in ("f2", "f3"):
        (q / name).unlink()

    # bytes: 2 MiB fit, the next 2 MiB do not: EDQUOT, and no more than the limit used
    write_file(q / "a", 2 * MiB)
    edquot(write_file, q / "b", 2 * MiB)
    row = quota_of(cluster, "/q")
    assert 2 * MiB <= row["used_bytes"] <= 3 * MiB and row["used_inodes"] == 4
    (q / "b").unlink()
    assert quota_of(cluster, "/q")["used_bytes"] == 2 * MiB

    # a rename into the tree costs the moved subtree; within the tree, nothing
    out = mounted / "out"
    (out / "t").mkdir(parents=True)
    (out / "t" / "big").write_bytes(b"z" * (MiB + 1))
    edquot(os.rename, out / "t", q / "t")
    assert (out / "t" / "big").exists() and not (q / "t").exists()
    (out / "t" / "big").unlink()
    (out / "t" / "x").write_bytes(b"x")
    edquot(os.rename, out / "t", q / "t")        # 2 inodes (t, x): one too many
    (out / "t" / "x").unlink()
    os.rename(out / "t", q / "t")                # 1 inode, 0 bytes: fits, the tree is full
    os.rename(q / "a", q / "t" / "a")            # within the tree: free even when full
    os.rename(q / "t", out / "t")                # out of it: given back
    assert quota_of(cluster, "/q")["used_inodes"] == 2 and quota_of(cluster, "/q")["used_bytes"] == 0

    # a snapshot into the tree is accounted: 3 inodes (t, a, y) do not fit
    (out / "t" / "y").touch()
    snap = gfs("snapshot", str(out / "t"), str(q / "snap"), master=cluster.url)
    assert snap.returncode == 1 and "quota" in snap.stderr.lower(), snap.stderr
    gfs_json(cluster, "quota", "set", str(q), "--inodes", "10", "--bytes", "10M",
             "--soft-bytes", "3M", "--grace", "1h")
    gfs_json(cluster, "snapshot", str(out / "t"), str(q / "snap"))
    row = quota_of(cluster, "/q")
    assert (row["used_bytes"], row["used_inodes"]) == (2 * MiB, 5)
    write_file(q / "c", 2 * MiB)                 # over the soft limit, in its grace
    row = quota_of(cluster, "/q")
    assert row["used_bytes"] == 4 * MiB and row["since_bytes"] > 0

    # record appends (O_APPEND) are held to it too
    set_quota(cluster, q, inodes=10, bytes=row["used_bytes"] + 100)

    def append(n: int) -> None:
        fd = os.open(q / "c", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"r" * n)
        finally:
            os.close(fd)
    append(60)
    edquot(append, 200)
    assert quota_of(cluster, "/q")["used_bytes"] == 4 * MiB + 60
    set_quota(cluster, q, inodes=10, bytes=10 * MiB, soft_bytes=3 * MiB, grace=3600.0)
    row = quota_of(cluster, "/q")

    # kill -9 of the master: the usage is the same once it is back
    before = rpc(cluster.url, "quota_list")["quotas"]
    cluster.restart_master()
    time.sleep(1.0)
    assert rpc(cluster.url, "quota_list")["quotas"] == before
    set_quota(cluster, q, inodes=row["used_inodes"])
    edquot((q / "one-more").touch)

    # df of the mount: the root's quota is its size
    set_quota(cluster, mounted, bytes=100 * MiB, inodes=1000)
    st = os.statvfs(mounted)
    used = quota_of(cluster, "/")
    assert st.f_blocks * st.f_frsize == 100 * MiB
    assert st.f_bavail * st.f_frsize <= 100 * MiB - used["used_bytes"]
    assert (st.f_files, st.f_ffree) == (1000, 1000 - used["used_inodes"])
    listing = gfs("quota", "ls", master=cluster.url)
    assert listing.returncode == 0 and "/q" in listing.stdout, listing.stderr
    r = gfs("quota", "rm", "/", master=cluster.url)
    assert r.returncode == 0, r.stderr
    assert os.statvfs(mounted).f_files != 1000
