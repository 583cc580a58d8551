"""Snapshots (GFS §3.4) through real mounts of a real cluster: ``gfs snapshot``
of a file and of a tree, writes/appends/truncates on both sides isolated
byte for byte, ``rm -rf`` of a snapshot freeing only its own chunks, and a
master killed (kill -9) after and in the middle of a snapshot."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import TEST_CHUNK_SIZE, needs_fuse
from gfsfs.tools.localcluster import ROOT, Cluster
from test_cli import gfs, gfs_json

CS = TEST_CHUNK_SIZE
pytestmark = needs_fuse


def chunk_files(cluster: Cluster) -> set[str]:
    """Chunk data files on every chunkd's disk: 'server/handle'."""
    return {f"{p.parent.name}/{p.stem}" for p in (cluster.data / "chunks").glob("*/*.chunk")}


def snapshot(cluster: Cluster, src: Path | str, dst: Path | str) -> dict[str, Any]:
    reply = gfs_json(cluster, "snapshot", str(src), str(dst))
    print(f"snapshot {src} -> {dst}: {reply['inodes']} inodes, {reply['chunks']} chunks, "
          f"{reply['leases_revoked']} leases revoked, {reply['seconds'] * 1000:.1f} ms at the "
          "master")
    return reply


def pwrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def append(path: Path, record: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        assert os.write(fd, record) == len(record)
    finally:
        os.close(fd)


def put(model: bytearray, offset: int, data: bytes) -> None:
    if offset > len(model):
        model.extend(bytes(offset - len(model)))
    model[offset:offset + len(data)] = data


def fileinfo(cluster: Cluster, path: Path | str) -> dict[str, Any]:
    return gfs_json(cluster, "fileinfo", str(path))


def test_snapshot_file_isolated_both_ways(cluster: Cluster, mounted: Path) -> None:
    rnd = random.Random(1)
    orig = bytearray(rnd.randbytes(int(2.5 * CS)))
    f, s = mounted / "f", mounted / "f.snap"
    f.write_bytes(orig)
    # write again through a kept-open descriptor so a lease is outstanding
    fd = os.open(f, os.O_WRONLY)
    os.pwrite(fd, b"before", 10)
    os.fsync(fd)
    put(orig, 10, b"before")
    reply = snapshot(cluster, f, s)
    assert reply["files"] == 1 and reply["chunks"] == 3 and reply["leases_revoked"] >= 1
    # the descriptor opened before the snapshot writes to the original only
    snap = bytearray(orig)                      # what the snapshot holds
    os.pwrite(fd, b"after", 20)
    os.close(fd)
    put(orig, 20, b"after")
    assert s.read_bytes() == bytes(snap) and f.read_bytes() == bytes(orig)
    info = fileinfo(cluster, s)
    assert [c["refcount"] for c in info["chunks"]] == [1, 2, 2]   # chunk 0 was copied
    # writes to either side never show in the other
    a = rnd.randbytes(5000)
    pwrite(s, CS + 100, a)
    put(snap, CS + 100, a)
    b = rnd.randbytes(7000)
    pwrite(f, 2 * CS + 5, b)
    put(orig, 2 * CS + 5, b)
    for i in range(5):                         # record appends, O_APPEND
        ra, rb = f"orig-{i}|".encode() * 30, f"snap-{i}|".encode() * 20
        append(f, ra)
        orig += ra
        append(s, rb)
        snap += rb
    assert f.read_bytes() == bytes(orig)
    assert s.read_bytes() == bytes(snap)
    # truncates (inside a shared chunk, then growing again) stay on their side
    os.truncate(s, int(1.3 * CS))
    del snap[int(1.3 * CS):]
    os.truncate(f, 2 * CS + 10)
    del orig[2 * CS + 10:]
    os.truncate(f, 2 * CS + 50)
    orig += bytes(40)
    assert s.read_bytes() == bytes(snap)
    assert f.read_bytes() == bytes(orig)
    sinfo, finfo = fileinfo(cluster, s), fileinfo(cluster, f)
    shared = {c["handle"] for c in sinfo["chunks"]} & {c["handle"] for c in finfo["chunks"]}
    assert not shared, "every chunk was written on one side by now"
    # a snapshot of a snapshot, then the middle one removed: still readable
    snapshot(cluster, s, mounted / "f.snap2")
    s.unlink()
    assert (mounted / "f.snap2").read_bytes() == bytes(snap)
    assert f.read_bytes() == bytes(orig)


def make_tree(root: Path, rnd: random.Random, files: int) -> dict[str, bytes]:
    """``files`` files under ``root`` in nested directories, sizes from 0 to
    1.5 chunks; returns relative path -> content."""
    out: dict[str, bytes] = {}
    for i in range(files):
        d = root / f"d{i % 4}" / f"e{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        size = rnd.choice([0, 100, 4096, 70_000, int(1.5 * CS)])
        data = rnd.randbytes(size)
        (d / f"f{i}").write_bytes(data)
        out[str((d / f"f{i}").relative_to(root))] = data
    (root / "d0" / "link").symlink_to("e0/f0")
    os.link(root / "d1" / "e1" / "f1", root / "d1" / "hard")
    out["d1/hard"] = out["d1/e1/f1"]
    return out


def read_tree(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if not p.is_symlink():
                out[str(p.relative_to(root))] = p.read_bytes()
    return out


def test_snapshot_tree_isolation_rm_rf_and_restart(cluster: Cluster, mounted: Path) -> None:
    rnd = random.Random(2)
    tree = make_tree(mounted / "t", rnd, 40)
    before = chunk_files(cluster)
    reply = snapshot(cluster, mounted / "t", mounted / "t.snap")
    assert reply["files"] == 40
    assert chunk_files(cluster) == before               # metadata only
    snap = dict(tree)
    assert read_tree(mounted / "t.snap") == snap
    assert os.readlink(mounted / "t.snap" / "d0" / "link") == "e0/f0"
    assert os.stat(mounted / "t.snap" / "d1" / "hard").st_nlink == 2
    # change both sides
    for i, rel in enumerate(sorted(tree)):
        if not tree[rel] or rel == "d1/hard":
            continue
        data = rnd.randbytes(300)
        if i % 3 == 0:
            pwrite(mounted / "t" / rel, 50, data)
            tree[rel] = tree[rel][:50] + data + tree[rel][350:] if len(tree[rel]) > 350 else \
                tree[rel][:50] + data
        elif i % 3 == 1:
            append(mounted / "t.snap" / rel, data)
            snap[rel] = snap[rel] + data
    tree["d1/hard"] = tree["d1/e1/f1"]
    snap["d1/hard"] = snap["d1/e1/f1"]
    (mounted / "t.snap" / "new").write_bytes(b"only in the snapshot")
    snap["new"] = b"only in the snapshot"
    shutil.rmtree(mounted / "t" / "d3")
    tree = {k: v for k, v in tree.items() if not k.startswith("d3/")}
    assert read_tree(mounted / "t") == tree
    assert read_tree(mounted / "t.snap") == snap

    # the snapshot survives a master kill -9 and restart (op log replay)
    cluster.restart_master()
    time.sleep(1.5)                                      # chunkds register again
    assert read_tree(mounted / "t.snap") == snap
    assert read_tree(mounted / "t") == tree

    # rm -rf of the snapshot, purge: only the chunks it alone references go
    # (first the original's d3 files, trashed above: their chunks the
    # snapshot shares stay)
    first = gfs_json(cluster, "trash", "purge")
    assert first["purged"] > 0 and first["chunks_shared"] > 0
    own: set[int] = set()
    shared: set[int] = set()
    for rel in snap:
        if rel == "d1/hard":
            continue
        for c in fileinfo(cluster, mounted / "t.snap" / rel)["chunks"]:
            (own if c["refcount"] == 1 else shared).add(c["handle"])
    assert own and shared
    on_disk = chunk_files(cluster)
    shutil.rmtree(mounted / "t.snap")
    purged = gfs_json(cluster, "trash", "purge")
    assert purged["chunks_freed"] == len(own)
    gone = {f"{h:016x}" for h in own}
    expect = {f for f in on_disk if f.split("/")[1] not in gone}
    deadline = time.monotonic() + 15
    while chunk_files(cluster) != expect and time.monotonic() < deadline:
        time.sleep(0.2)
    assert chunk_files(cluster) == expect
    assert len(on_disk) - len(expect) == 3 * len(own)     # 3 replicas each
    assert read_tree(mounted / "t") == tree


def test_kill_master_in_the_middle_of_a_snapshot(cluster: Cluster, mounted: Path) -> None:
    """kill -9 while a snapshot of a large tree runs (its leases being revoked):
    after the restart the snapshot is whole or absent, and every acknowledged
    operation is there."""
    rnd = random.Random(3)
    n = 120
    big = mounted / "big"
    contents: dict[str, bytes] = {}
    outcomes = []
    for attempt, delay in enumerate((0.05, 0.25, 0.6)):
        # rewrite every file so each chunk has a fresh lease to revoke
        for i in range(n):
            data = rnd.randbytes(rnd.choice([10, 3000, 70_000]))
            p = big / f"d{i % 5}" / f"f{i}"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            contents[str(p.relative_to(big))] = data
        name = f"snap{attempt}"
        # the master is restarted only after the CLI is done: it need not wait long
        argv = [sys.executable, "-m", "gfsfs.tools.cli", "--master", cluster.url, "--json",
                "--set", "client.failover_timeout=2", "snapshot", "/big", f"/{name}"]
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        # acknowledged creates racing the snapshot, elsewhere in the tree
        acked = []
        deadline = t0 + 0.5 + delay
        while time.monotonic() < deadline:
            q = mounted / f"acked{attempt}-{len(acked)}"
            q.write_bytes(b"x")
            acked.append(q.name)
        assert cluster.master is not None
        cluster.master.kill()
        out, err = proc.communicate(timeout=60)
        cluster.restart_master()
        time.sleep(1.5)
        snapped = (mounted / name).exists()
        outcomes.append((delay, proc.returncode, snapped))
        print(f"kill after {time.monotonic() - t0:.2f}s (cli rc {proc.returncode}): "
              f"snapshot {'present' if snapped else 'absent'}; {len(acked)} acked creates")
        if proc.returncode == 0:
            assert snapped, "an acknowledged snapshot was lost"
        if snapped:
            assert read_tree(mounted / name) == contents
        for q in acked:
            assert (mounted / q).read_bytes() == b"x"
        assert read_tree(big) == contents
        listing = gfs_json(cluster, "fsck")
        assert listing["lost"] == 0
    print("outcomes (delay, cli rc, snapshot present):", outcomes)


def test_snapshot_errors(cluster: Cluster, mounted: Path) -> None:
    (mounted / "d").mkdir()
    (mounted / "d" / "x").write_bytes(b"1")
    r = gfs("snapshot", str(mounted / "d"), str(mounted / "d" / "inside"), master=cluster.url)
    assert r.returncode == 1 and "into itself" in r.stderr
    r = gfs("snapshot", str(mounted / "d"), str(mounted / "d" / "x"), master=cluster.url)
    assert r.returncode == 1 and "exists" in r.stderr
    r = gfs("snapshot", str(mounted / "nope"), str(mounted / "y"), master=cluster.url)
    assert r.returncode == 1 and "ENOENT" in r.stderr
    r = gfs("snapshot", str(mounted / "d"), str(mounted / "d2"), master=cluster.url)
    assert r.returncode == 0 and "snapshot /d -> /d2" in r.stdout
    assert (mounted / "d2" / "x").read_bytes() == b"1"
