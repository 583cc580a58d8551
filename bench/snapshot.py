#!/usr/bin/env python3
"""Snapshot speed: ``snapshot`` RPC time for a tree of --files files (default
10,000) in --dirs directories, each file with one chunk (goal 3, 3 chunkds).

Workload: a master and 3 chunkds on loopback in a temp dir; the files are made
through master RPCs (``create``, then ``lease`` -- which allocates the chunk on
3 chunkds -- and ``extend``), so every chunk has an outstanding lease. Measured,
each through the RPC (what ``gfs snapshot`` waits for):

1. a snapshot right after the writes: every lease is revoked first (version
   raised on every replica), then the one metadata record;
2. a second snapshot of the same tree: the leases are gone by then (only the
   metadata record and the reference counts);
3. master restart (kill -9) with both snapshots in the op log: replay time.

Printed, never asserted.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gfsfs.tools.localcluster import Cluster
from gfsfs.common.rpc import call

SETTINGS = ["master.chunk_size=1048576", "master.heartbeat_interval=0.5",
            "chunk_server.heartbeat_interval=0.5", "chunk_server.reserve_bytes=0",
            "master.checkpoint_every=1000000"]


async def build(url: str, files: int, dirs: int) -> float:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=64)) as http:
        top = (await call(http, url, "mkdir", {"parent": 1, "name": b"tree", "mode": 0o755,
                                                "uid": 0, "gid": 0}))["ino"]
        dir_inos = []
        for d in range(dirs):
            dir_inos.append((await call(http, url, "mkdir", {
                "parent": top, "name": f"d{d}".encode(), "mode": 0o755, "uid": 0,
                "gid": 0}))["ino"])
        limiter = trio.CapacityLimiter(48)
        t0 = time.monotonic()

        async def one(i: int) -> None:
            async with limiter:
                ino = (await call(http, url, "create", {
                    "parent": dir_inos[i % dirs], "name": f"f{i}".encode(), "mode": 0o644,
                    "uid": 0, "gid": 0}))["ino"]
                await call(http, url, "lease", {"ino": ino, "index": 0})
                await call(http, url, "extend", {"ino": ino, "size": 4096,
                                                 "mtime_ns": time.time_ns()})

        async with trio.open_nursery() as nursery:
            for i in range(files):
                nursery.start_soon(one, i)
        return time.monotonic() - t0


async def snap(url: str, name: str) -> tuple[float, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=600) as http:
        tree = (await call(http, url, "lookup", {"parent": 1, "name": b"tree"}))["ino"]
        t0 = time.monotonic()
        reply = await call(http, url, "snapshot", {"src": tree, "parent": 1,
                                                   "name": name.encode()})
        return time.monotonic() - t0, reply


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--dirs", type=int, default=100)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="gfs-snapbench-"))
    cluster = Cluster(base, 3, extra=SETTINGS)
    try:
        cluster.start()
        time.sleep(1.5)
        made = trio.run(build, cluster.url, args.files, args.dirs)
        print(f"made {args.files} files (1 chunk each, goal 3) in {made:.1f} s")
        t1, r1 = trio.run(snap, cluster.url, "snap1")
        print(f"snapshot 1 (every chunk leased): {t1:.2f} s through the RPC; "
              f"{r1['inodes']} inodes, {r1['chunks']} chunks shared, "
              f"{r1['leases_revoked']} leases revoked; {r1['seconds']:.2f} s at the master")
        t2, r2 = trio.run(snap, cluster.url, "snap2")
        print(f"snapshot 2 (no leases left):     {t2:.2f} s through the RPC; "
              f"{r2['inodes']} inodes, {r2['leases_revoked']} leases revoked")
        t0 = time.monotonic()
        cluster.restart_master()
        print(f"master kill -9 + restart (op log replay incl. both snapshots): "
              f"{time.monotonic() - t0:.2f} s to listening")
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
