"""Hot-plug, rebalancing, racks and drain (master/services/rebalance.py, placement in
master/chunks/registry.py): a chunkd that joins takes new chunks; replicas move
gradually from the fullest to the emptiest chunkds; replicas spread over
racks; ``gfs chunkd drain ID`` moves everything off a chunkd."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from faultkit import (file_chunks, read_uncached, replica_ids, rpc, running, servers, sha,
                      wait_for, write_fsync)
from gfsfs.tools.localcluster import ROOT, Cluster

CS = TEST_CHUNK_SIZE


def gfs(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GFS_MASTER"}
    return subprocess.run([sys.executable, "-m", "gfsfs.tools.cli", "--master", c.url, *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def counts(c: Cluster) -> dict[str, int]:
    return {cid: s["chunks"] for cid, s in servers(c.url).items() if s["alive"]}


@needs_fuse
def test_new_chunkd_takes_chunks_and_rebalancing_fills_it(tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    cap = [f"chunk_server.capacity_bytes={32 * CS}"]
    with running(tmp_path, request, 2, hosts=False,
                 extra=["master.replication_factor=2", "master.rebalance_threshold=0.05",
                        "master.rebalance_moves=2"],
                 chunk_sets=[cap] * 4) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        files = {f"f{i}": os.urandom(4 * CS) for i in range(3)}       # 12 chunks x 2
        for name, data in files.items():
            write_fsync(mnt / name, data)
        assert counts(c) == {"chunk1": 12, "chunk2": 12}

        c.add_chunkd()                                               # hot-plug chunk3
        wait_for("chunk3 registered", lambda: "chunk3" in counts(c), 10)
        new = os.urandom(2 * CS)
        write_fsync(mnt / "new", new)
        files["new"] = new
        assert all("chunk3" in replica_ids(ch) for ch in file_chunks(c.url, "new")), \
            "the emptiest chunkd takes new chunks"
        c.add_chunkd()                                               # chunk4

        def balanced() -> bool:
            got = counts(c)
            return len(got) == 4 and max(got.values()) - min(got.values()) <= 2
        wait_for("replicas spread over the 4 chunkds", balanced, 60, every=0.5)
        got = counts(c)
        print(f"after rebalancing: {got}")
        assert sum(got.values()) == 2 * 14
        for name, data in files.items():
            for ch in file_chunks(c.url, name):
                assert len(ch["replicas"]) == 2
            assert sha(read_uncached(mnt / name)) == sha(data)
        st = rpc(c.url, "cluster_status")
        assert st["under_goal"] == st["over_goal"] == st["lost"] == 0


@needs_fuse
def test_placement_spreads_over_racks(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    racks = [["chunk_server.rack=\"r1\""], ["chunk_server.rack=\"r1\""],
             ["chunk_server.rack=\"r2\""], ["chunk_server.rack=\"r2\""]]
    with running(tmp_path, request, 4, hosts=False, extra=["master.replication_factor=2"],
                 chunk_sets=racks) as (c, m):
        assert m is not None
        rack_of = {cid: s["rack"] for cid, s in servers(c.url).items()}
        assert sorted(rack_of.values()) == ["r1", "r1", "r2", "r2"]
        write_fsync(m.mountpoint / "f", os.urandom(8 * CS))
        for ch in file_chunks(c.url, "f"):
            assert {rack_of[r] for r in replica_ids(ch)} == {"r1", "r2"}, ch
        # losing one chunkd: the new copies still land on the missing rack
        victim = next(d for d in c.servers if d.name == "chunk3")
        victim.kill()

        def healed() -> bool:
            return all(len(ch["replicas"]) == 2 and "chunk3" not in replica_ids(ch)
                       and {rack_of[r] for r in replica_ids(ch)} == {"r1", "r2"}
                       for ch in file_chunks(c.url, "f"))
        wait_for("re-replicated across racks", healed, 30)


@needs_fuse
def test_drain_moves_everything_off(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 4, hosts=False,
                 extra=["master.rebalance_threshold=0"]) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        files = {f"d{i}": os.urandom(3 * CS + i) for i in range(3)}
        for name, data in files.items():
            write_fsync(mnt / name, data)
        before = counts(c)["chunk1"]
        assert before > 0
        r = gfs(c, "chunkd", "drain", "chunk1", "--timeout", "60")
        assert r.returncode == 0, r.stdout + r.stderr
        print(r.stdout)
        assert "drained" in r.stdout
        assert "replicas to move" in r.stdout            # progress was shown
        for name in files:
            for ch in file_chunks(c.url, name):
                assert "chunk1" not in replica_ids(ch) and len(ch["replicas"]) == 3
        st = json.loads(gfs(c, "chunkd", "list", "--json").stdout)
        s1 = next(s for s in st["servers"] if s["id"] == "chunk1")
        assert s1["draining"] and s1["chunks"] == 0
        # a draining chunkd gets no new chunks
        write_fsync(mnt / "later", os.urandom(2 * CS))
        assert all("chunk1" not in replica_ids(ch) for ch in file_chunks(c.url, "later"))
        # its files are deleted from its disk; it can be stopped with nothing lost
        wait_for("chunk files gone from chunk1's disk",
                 lambda: not list((c.data / "chunks" / "chunk1").glob("*.chunk")), 15)
        c.servers[0].stop()
        for name, data in files.items():
            assert read_uncached(mnt / name) == data
        r = gfs(c, "chunkd", "undrain", "chunk1")
        assert r.returncode == 0 and "not draining" in r.stdout, r.stdout + r.stderr
