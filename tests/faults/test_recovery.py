"""Re-replication, trimming, scrubbing and fsck against real processes (GFS §4.3,
§5.2): a chunkd killed with SIGKILL, a chunkd coming back with stale and extra
replicas, bytes flipped in a chunk file on disk, every replica of a chunk gone.

The ``cluster`` fixture runs a master and 3 chunkds (1 MiB chunks, heartbeats
every 0.5 s, so a chunkd is declared dead 1.5 s after its last one)."""
from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from conftest import TEST_CHUNK_SIZE, needs_fuse
from faultkit import read_uncached, rpc, wait_for
from gfsfs.client.core import Client
from gfsfs.common.config import ClientConfig
from gfsfs.tools.localcluster import ROOT, Cluster

CS = TEST_CHUNK_SIZE
GOAL = 3


# ---------------------------------------------------------------- helpers

def ino_of(cluster: Cluster, name: str) -> int:
    return int(rpc(cluster.url, "lookup", parent=1, name=name.encode())["ino"])


def chunks_of(cluster: Cluster, inos: list[int]) -> list[dict[str, Any]]:
    out = []
    for ino in inos:
        out += rpc(cluster.url, "fileinfo", ino=ino)["chunks"]
    return out


def replica_ids(chunk: dict[str, Any]) -> set[str]:
    return {r["id"] for r in chunk["replicas"]}


def chunk_files(cluster: Cluster, server_id: str) -> set[int]:
    d = cluster.data / "chunks" / server_id
    return {int(p.stem, 16) for p in d.glob("*.chunk")} if d.exists() else set()


def read_replica(url: str, handle: int, version: int) -> bytes:
    r = httpx.get(f"{url}/chunk/{handle}", params={"offset": 0, "length": CS,
                                                   "version": version}, timeout=10.0)
    assert r.status_code == 200, (url, handle, r.content[:200])
    return r.content


def check_replicas(chunks: list[dict[str, Any]], expected: dict[int, bytes]) -> None:
    """Every replica of every chunk serves exactly the expected bytes."""
    for c in chunks:
        for r in c["replicas"]:
            got = read_replica(r["addr"], c["handle"], c["version"])
            assert got == expected[c["handle"]], f"chunk {c['handle']} on {r['id']} differs"


def expected_chunks(cluster: Cluster, files: dict[str, bytes]) -> dict[int, bytes]:
    out = {}
    for name, data in files.items():
        for c in rpc(cluster.url, "fileinfo", ino=ino_of(cluster, name))["chunks"]:
            out[c["handle"]] = data[c["index"] * CS:(c["index"] + 1) * CS]
    return out


def all_at_goal(cluster: Cluster, inos: list[int], exclude: str | None = None) -> bool:
    chunks = chunks_of(cluster, inos)
    return bool(chunks) and all(len(c["replicas"]) == GOAL and exclude not in replica_ids(c)
                                for c in chunks)


def gfs(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GFS_MASTER"}
    return subprocess.run([sys.executable, "-m", "gfsfs.tools.cli", "--master", cluster.url, *args],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)


# ---------------------------------------------------------------- (a) + (b)

@needs_fuse
def test_kill9_rereplicates_then_restart_trims_to_goal(cluster: Cluster, mounted: Path) -> None:
    cluster.add_chunkd()                                   # chunk4
    wait_for("4 live chunkds", lambda: rpc(cluster.url, "cluster_status")["chunkds_alive"] == 4,
             10)
    files = {f"f{i}": os.urandom(CS * 5 // 2 + 1000 * i) for i in range(3)}   # 9 chunks
    for name, data in files.items():
        (mounted / name).write_bytes(data)
    inos = [ino_of(cluster, n) for n in files]
    chunks = chunks_of(cluster, inos)
    assert len(chunks) == 9 and all(len(c["replicas"]) == GOAL for c in chunks)
    expected = expected_chunks(cluster, files)

    # kill -9 the chunkd holding the most replicas
    holding: dict[str, int] = {}
    for c in chunks:
        for cid in replica_ids(c):
            holding[cid] = holding.get(cid, 0) + 1
    victim_id = max(sorted(holding), key=lambda cid: holding[cid])
    victim = next(d for d in cluster.servers if d.name == victim_id)
    victim.kill()
    killed_at = time.monotonic()

    # (a) every chunk back at 3 live replicas, none on the dead chunkd
    wait_for("every chunk back at goal", lambda: all_at_goal(cluster, inos, victim_id), 20)
    print(f"re-replicated {holding[victim_id]} chunks in {time.monotonic() - killed_at:.1f}s")
    check_replicas(chunks_of(cluster, inos), expected)
    for name, data in files.items():
        assert read_uncached(mounted / name) == data
    st = rpc(cluster.url, "cluster_status")
    assert st["under_goal"] == 0 and st["lost"] == 0 and st["chunkds_alive"] == 3

    # (b) the dead chunkd comes back with stale or extra replicas: they go, and
    # every chunk settles at exactly its goal
    assert chunk_files(cluster, victim_id)                 # still on its disk
    victim.start()

    def settled() -> bool:
        st = rpc(cluster.url, "cluster_status")
        if st["chunkds_alive"] != 4 or st["under_goal"] or st["over_goal"]:
            return False
        handles = set(expected)
        on_disk = sum(len(chunk_files(cluster, f"chunk{i}") & handles) for i in range(1, 5))
        return all_at_goal(cluster, inos) and on_disk == GOAL * len(handles)

    wait_for("replicas trimmed to the goal, extra copies deleted from disk", settled, 20)
    check_replicas(chunks_of(cluster, inos), expected)
    report = json.loads(gfs(cluster, "fsck", "--json").stdout)
    assert report["lost"] == report["under_goal"] == report["over_goal"] == 0


# ---------------------------------------------------------------- (c)

@needs_fuse
def test_corrupt_replica_is_scrubbed_and_rereplicated(cluster: Cluster, mounted: Path) -> None:
    a, b = os.urandom(3 * CS), os.urandom(2 * CS + 777)
    (mounted / "a").write_bytes(a)
    (mounted / "b").write_bytes(b)
    files = {"a": a, "b": b}
    expected = expected_chunks(cluster, files)
    ca = rpc(cluster.url, "fileinfo", ino=ino_of(cluster, "a"))["chunks"][1]
    cb = rpc(cluster.url, "fileinfo", ino=ino_of(cluster, "b"))["chunks"][0]
    # a replica of a chunk of "a" (read all along) and of "b" (never read, so
    # only the scrubber can find it), on different chunkds
    bad_a = sorted(replica_ids(ca))[0]
    bad_b = sorted(replica_ids(cb) - {bad_a})[0]
    for server_id, c in ((bad_a, ca), (bad_b, cb)):
        path = cluster.data / "chunks" / server_id / f"{c['handle']:016x}.chunk"
        with open(path, "r+b") as f:
            f.seek(CS // 2 - 6)
            good = f.read(12)
            f.seek(CS // 2 - 6)
            f.write(bytes(x ^ 0xFF for x in good))
            f.flush()
            os.fsync(f.fileno())

    failures: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                if read_uncached(mounted / "a") != a:
                    failures.append("wrong bytes")
            except OSError as exc:
                failures.append(repr(exc))
            time.sleep(0.05)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        def repaired() -> bool:
            for server_id, c in ((bad_a, ca), (bad_b, cb)):
                path = cluster.data / "chunks" / server_id / f"{c['handle']:016x}.chunk"
                now = rpc(cluster.url, "fileinfo", ino=ino_of(cluster, "a" if c is ca else "b"))
                cur = next(x for x in now["chunks"] if x["handle"] == c["handle"])
                if len(cur["replicas"]) != GOAL:
                    return False
                # the bad copy is gone; 3 good ones again (the chunkd that had
                # the bad one may hold the new copy: then its file is good)
                if server_id in replica_ids(cur) and (
                        not path.exists() or path.read_bytes() != expected[c["handle"]]):
                    return False
            return True

        wait_for("both corrupt replicas replaced", repaired, 25)
    finally:
        stop.set()
        t.join(10)
    assert not failures, failures[:5]
    check_replicas(chunks_of(cluster, [ino_of(cluster, "a"), ino_of(cluster, "b")]), expected)
    log_b = cluster.servers[int(bad_b.removeprefix("chunk")) - 1].logfile.read_text()
    assert f"scrub: chunk {cb['handle']:016x} is corrupt" in log_b
    report = rpc(cluster.url, "fsck")
    corrupt = {p["handle"]: p for p in report["problems"] if "corrupt" in p["states"]}
    assert {c["id"] for c in corrupt[cb["handle"]]["corrupt"]} == {bad_b}
    assert report["lost"] == report["under_goal"] == 0


# ---------------------------------------------------------------- (d)

def test_fsck_exit_status_lost_and_healthy(cluster: Cluster) -> None:
    data = os.urandom(CS + 100)

    async def write() -> None:
        cfg = dataclasses.replace(ClientConfig(), master_url=cluster.url, retries=3,
                                  request_timeout=5.0)
        with trio.fail_after(30):
            async with Client.open(cfg) as client:
                d = await client.mkdir(1, b"dir", 0o755, 0, 0)
                ino = (await client.create(d["ino"], b"precious", stat.S_IFREG | 0o644,
                                           0, 0))["ino"]
                await client.write(ino, 0, data)
                await client.fsync(ino)

    trio.run(write)
    r = gfs(cluster, "fsck")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "HEALTHY" in r.stdout
    assert json.loads(gfs(cluster, "fsck", "--json").stdout)["lost"] == 0

    for d in cluster.servers:                      # every replica of every chunk
        d.kill()
    wait_for("the master declares the chunkds dead",
             lambda: rpc(cluster.url, "cluster_status")["chunkds_alive"] == 0, 10)
    r = gfs(cluster, "fsck")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "LOST" in r.stdout and "/dir/precious[0]" in r.stdout and "/dir/precious[1]" in r.stdout
    r = gfs(cluster, "fsck", "--json")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["lost"] == 2 and report["chunks"] == 2
    assert all(p["states"] == ["lost"] and p["files"][0]["path"] == "/dir/precious"
               for p in report["problems"])
