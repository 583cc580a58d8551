#!/usr/bin/env python3
"""Re-replication speed: MiB/s of lost replicas restored after a chunkd dies.

Workload: a master and 4 chunkds (goal 3) on loopback in a temp dir; --mib MiB
(default 2048) written through the client library in files of --file-mib; then
the chunkd holding the most replicas is killed with SIGKILL. Measured:

- detection: kill -> the master declares it dead (missed heartbeats);
- recovery: declared dead -> every chunk back at its goal (``cluster_status``
  ``under_goal`` 0), and the figure MiB restored / recovery seconds;
- for comparison, a local copy of as many bytes (file to file, fsync'd) on
  the same disk, measured in the same run.

Throttles and other settings can be changed with --set SECTION.KEY=VALUE (e.g.
--set master.replication_per_chunkd=2). Speed is printed, never asserted.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgpack
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gfsfs.client.core import Client
from gfsfs.common.config import ClientConfig
from gfsfs.tools.localcluster import Cluster

MIB = 1 << 20


def rpc(url: str, name: str, **body: Any) -> Any:
    r = httpx.post(f"{url}/rpc/{name}", content=msgpack.packb(body, use_bin_type=True),
                   timeout=30.0)
    reply = msgpack.unpackb(r.content, raw=False, strict_map_key=False)
    if r.status_code != 200:
        raise RuntimeError(f"{name}: {reply}")
    return reply


async def write_files(url: str, total: int, file_size: int, piece: int) -> list[int]:
    cfg = dataclasses.replace(ClientConfig(), master_url=url, upload_chunk_size=piece,
                              request_timeout=120.0)
    block = os.urandom(piece)
    inos = []
    async with Client.open(cfg) as client:
        written, n = 0, 0
        while written < total:
            size = min(file_size, total - written)
            ino = (await client.create(1, f"f{n:04d}".encode(), stat.S_IFREG | 0o644, 0, 0))["ino"]
            for off in range(0, size, piece):
                await client.write(ino, off, block[:min(piece, size - off)])
            await client.fsync(ino)
            inos.append(ino)
            written += size
            n += 1
    return inos


def victim_and_bytes(url: str, inos: list[int]) -> tuple[str, int, int]:
    """The chunkd holding the most replica bytes: (id, bytes, chunks)."""
    held: dict[str, list[int]] = {}
    for ino in inos:
        info = rpc(url, "fileinfo", ino=ino)
        size, cs = info["attr"]["size"], info["chunk_size"]
        for c in info["chunks"]:
            length = max(0, min(cs, size - c["index"] * cs))
            for r in c["replicas"]:
                held.setdefault(r["id"], []).append(length)
    cid = max(sorted(held), key=lambda k: sum(held[k]))
    return cid, sum(held[cid]), len(held[cid])


def local_copy_rate(base: Path, nbytes: int) -> float:
    """MiB/s of a file-to-file copy of ``nbytes`` on the same disk, fsync'd."""
    src, dst = base / "local-src", base / "local-dst"
    block = os.urandom(8 * MIB)
    with open(src, "wb") as f:
        left = nbytes
        while left > 0:
            f.write(block[:min(left, len(block))])
            left -= len(block)
        os.fsync(f.fileno())
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass
    start = time.perf_counter()
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        shutil.copyfileobj(fi, fo, 8 * MIB)
        fo.flush()
        os.fsync(fo.fileno())
    took = time.perf_counter() - start
    src.unlink()
    dst.unlink()
    return nbytes / MIB / took


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=2048, help="MiB of file data (default 2048)")
    p.add_argument("--file-mib", type=int, default=256, help="MiB per file (default 256)")
    p.add_argument("--chunk-mib", type=int, default=64, help="chunk size in MiB (default 64)")
    p.add_argument("--dir", default=None, help="where the cluster lives (default: a temp dir)")
    p.add_argument("--timeout", type=float, default=1800.0, help="give up after this many s")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="extra config for master and chunkds")
    args = p.parse_args(argv)

    base = Path(tempfile.mkdtemp(prefix="gfsfs-recovery-", dir=args.dir))
    extra = [f"master.chunk_size={args.chunk_mib * MIB}", "master.heartbeat_interval=0.5",
             "chunk_server.heartbeat_interval=0.5", "chunk_server.reserve_bytes=0",
             "chunk_server.scrub_bytes_per_sec=0", "master.log_level=\"WARNING\"",
             "chunk_server.log_level=\"WARNING\""] + args.set
    cluster = Cluster(base, 4, extra=extra)
    try:
        cluster.start()
        url = cluster.url
        deadline = time.monotonic() + 30
        while rpc(url, "cluster_status")["chunkds_alive"] < 4:
            if time.monotonic() > deadline:
                raise RuntimeError("chunkds did not register")
            time.sleep(0.1)
        total = args.mib * MIB
        print(f"workload: {args.mib} MiB in files of {args.file_mib} MiB, chunks of "
              f"{args.chunk_mib} MiB, goal 3, 4 chunkds on loopback in {base}", flush=True)
        start = time.perf_counter()
        inos = trio.run(write_files, url, total, args.file_mib * MIB, 8 * MIB)
        took = time.perf_counter() - start
        print(f"written: {args.mib} MiB in {took:.1f}s ({args.mib / took:.0f} MiB/s of file "
              f"data, x3 replicas)", flush=True)
        st = rpc(url, "cluster_status")
        assert st["under_goal"] == 0, st
        cid, nbytes, nchunks = victim_and_bytes(url, inos)
        victim = next(d for d in cluster.servers if d.name == cid)
        print(f"killing {cid} (kill -9): {nchunks} replicas, {nbytes / MIB:.0f} MiB", flush=True)
        victim.kill()
        t_kill = time.perf_counter()
        t_dead = t_done = None
        most_under = 0
        while time.perf_counter() - t_kill < args.timeout:
            st = rpc(url, "cluster_status")
            if t_dead is None and st["chunkds_alive"] == 3:
                t_dead = time.perf_counter()
            if t_dead is not None:
                most_under = max(most_under, st["under_goal"])
                if st["under_goal"] == 0:
                    t_done = time.perf_counter()
                    break
            time.sleep(0.05)
        if t_done is None or t_dead is None:
            print(f"not recovered within {args.timeout}s", file=sys.stderr)
            return 1
        if st["lost"]:
            print(f"{st['lost']} chunks lost!", file=sys.stderr)
        recovery = t_done - t_dead
        rate = nbytes / MIB / recovery if recovery > 0 else float("inf")
        print(f"detection: {t_dead - t_kill:.2f}s (heartbeat 0.5 s x 3 missed)")
        print(f"recovery:  {nchunks} chunks ({most_under} seen under goal), "
              f"{nbytes / MIB:.0f} MiB restored in {recovery:.2f}s after the master "
              f"declared {cid} dead ({t_done - t_kill:.2f}s after the kill)")
        print(f"re-replication: {rate:.0f} MiB/s restored")
        local = local_copy_rate(base, nbytes)
        print(f"local copy of {nbytes / MIB:.0f} MiB on the same disk: {local:.0f} MiB/s "
              f"(ratio re-replication/local {rate / local:.2f})")
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
