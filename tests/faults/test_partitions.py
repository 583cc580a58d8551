"""Network partitions, cut with nftables rules the tests add and remove.

Every daemon is its own "host": the master on 127.0.0.1, chunkds on
127.0.0.2..., the mount connecting from 127.0.0.10 (``[client]
source_address``); chunkds connect out from their own address. A rule matches
source address, destination address and the service's port (both directions),
so it cuts exactly one link: (a) a chunkd from the master, (b) the mount from
one chunkd, (c) everyone from the master. See :class:`faultkit.Partition`.

How a partition meets each process: all of them share the host's loopback and
run as root, so neither the uid (``meta skuid``) nor the interface tells them
apart; their *addresses* do, once each process binds its outgoing connections
to its own address.
"""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from faultkit import (CLIENT_HOST, MASTER_HOST, Partition, between, bounded, chunk_files, daemon,
                      file_chunks, needs_nft, port_of, read_uncached, replica_ids, rpc, running,
                      servers, sha, wait_for, write_fsync)

CS = TEST_CHUNK_SIZE
GOAL = 3


def at_goal(url: str, names: list[str], exclude: str | None = None) -> bool:
    for name in names:
        for ch in file_chunks(url, name):
            if len(ch["replicas"]) != GOAL or exclude in replica_ids(ch):
                return False
    return True


# ---------------------------------------------------------------- (a)

@needs_fuse
@needs_nft
def test_chunkd_cut_from_master(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 4,
                 mount_opts=["--set", "client.chunkd_timeout=2"]) as (c, m), \
            Partition("a") as part:
        assert m is not None
        mnt = m.mountpoint
        files = {f"f{i}": os.urandom(2 * CS + 1000 * i) for i in range(3)}
        for name, data in files.items():
            write_fsync(mnt / name, data)
        holding: dict[str, int] = {}
        for name in files:
            for ch in file_chunks(c.url, name):
                for cid in replica_ids(ch):
                    holding[cid] = holding.get(cid, 0) + 1
        victim_id = max(sorted(holding), key=lambda k: holding[k])
        victim = daemon(c, victim_id)
        vhost, vport = victim.url.split("//")[1].rsplit(":", 1)
        mport = port_of(c.url)

        part.cut(between(vhost, MASTER_HOST, mport) + between(MASTER_HOST, vhost, int(vport)))
        cut_at = time.monotonic()
        wait_for("the master declares the cut-off chunkd dead",
                 lambda: not servers(c.url)[victim_id]["alive"], 10)
        wait_for("every chunk re-replicated without it",
                 lambda: at_goal(c.url, list(files), victim_id), 30)
        print(f"dead + re-replicated {holding[victim_id]} chunks "
              f"{time.monotonic() - cut_at:.1f}s after the cut")
        # the mount keeps working: reads, a new file, an overwrite (which
        # leaves the cut-off chunkd's copy of f0's first chunk stale)
        for name, data in files.items():
            got, _ = bounded(f"read {name}", lambda n=name: read_uncached(mnt / n), 15)
            assert got == data
        g = os.urandom(CS + 3)
        err, _ = bounded("new file", lambda: write_fsync(mnt / "g", g), 15)
        assert err is None, err
        new0 = os.urandom(1000)
        fd = os.open(mnt / "f0", os.O_WRONLY)
        os.pwrite(fd, new0, 0)
        os.fsync(fd)
        os.close(fd)
        files["f0"] = new0 + files["f0"][1000:]
        files["g"] = g
        assert victim.alive()

        part.heal()
        healed_at = time.monotonic()
        wait_for("it registers again", lambda: servers(c.url)[victim_id]["alive"], 20)
        print(f"re-registered {time.monotonic() - healed_at:.1f}s after the link came back")
        handles = {ch["handle"] for n in files for ch in file_chunks(c.url, n)}

        def settled() -> bool:
            if not at_goal(c.url, list(files)):
                return False
            st = rpc(c.url, "cluster_status")
            if st["over_goal"] or st["under_goal"]:
                return False
            on_disk = sum(len(chunk_files(c, d.name) & handles) for d in c.servers)
            return on_disk == GOAL * len(handles)
        wait_for("stale and extra replicas trimmed, on disk too", settled, 30)
        for name, data in files.items():
            assert read_uncached(mnt / name) == data


# ---------------------------------------------------------------- (b)

@needs_fuse
@needs_nft
def test_client_cut_from_one_chunkd(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3,
                 mount_opts=["--set", "client.chunkd_timeout=1.5"]) as (c, m), \
            Partition("b") as part:
        assert m is not None
        mnt = m.mountpoint
        f = os.urandom(3 * CS + 10)
        write_fsync(mnt / "f", f)
        victim_id = sorted(replica_ids(file_chunks(c.url, "f")[0]))[0]
        victim = daemon(c, victim_id)
        vhost, vport = victim.url.split("//")[1].rsplit(":", 1)
        part.cut(between(CLIENT_HOST, vhost, int(vport)))
        try:
            got, took = bounded("read, one replica unreachable", lambda: read_uncached(mnt / "f"), 15)
            assert not isinstance(got, Exception), got
            assert sha(got) == sha(f)
            print(f"read with one replica unreachable: {took:.2f}s")
            # writes: the master still sees the chunkd alive; the mount asks
            # for a lease avoiding it as primary, pushes via the others and has
            # a reachable replica relay the fsync
            outcomes = {}
            for i in range(3):
                data = os.urandom(CS + 100 * i)
                err, took = bounded(f"write w{i}", lambda d=data, n=i: write_fsync(mnt / f"w{n}", d),
                                    25)
                outcomes[f"w{i}"] = (data, err, took)
                print(f"w{i}: {'ok' if err is None else err!r} in {took:.2f}s")
            for name, (data, err, _) in outcomes.items():
                assert err is None or (isinstance(err, OSError) and err.errno == errno.EIO), err
            assert all(err is None for _, err, _ in outcomes.values()), outcomes
        finally:
            part.heal()
        for name, (data, err, _) in outcomes.items():
            if err is None:
                assert read_uncached(mnt / name) == data
        assert read_uncached(mnt / "f") == f
        assert servers(c.url)[victim_id]["alive"]


# ---------------------------------------------------------------- (c)

@needs_fuse
@needs_nft
def test_master_unreachable_then_back(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3,
                 mount_opts=["--set", "client.request_timeout=2", "--set", "client.retries=3",
                             "--set", "client.chunkd_timeout=2",
                             "--set", "client.failover_timeout=6"]) as (c, m), \
            Partition("c") as part:
        assert m is not None
        mnt = m.mountpoint
        before = os.urandom(2 * CS + 1)
        write_fsync(mnt / "before", before)
        mport = port_of(c.url)
        part.cut([f"ip daddr {MASTER_HOST} tcp dport {mport}",
                  f"ip saddr {MASTER_HOST} tcp sport {mport}"])
        try:
            # a lookup the kernel has not cached, a create: each returns, with
            # an error, within the bound (failover_timeout + request_timeout + backoff)
            res, took = bounded("stat while the master is unreachable",
                                lambda: os.stat(mnt / "nothere"), 20)
            print(f"stat with the master unreachable: {res!r} after {took:.2f}s")
            assert isinstance(res, OSError) and res.errno in (errno.EIO, errno.ENOENT), res
            res, took = bounded("create while the master is unreachable",
                                lambda: write_fsync(mnt / "during", b"x" * 100), 20)
            print(f"create with the master unreachable: {res!r} after {took:.2f}s")
            assert isinstance(res, OSError) and res.errno == errno.EIO, res
            time.sleep(2)           # the chunkds miss heartbeats too
        finally:
            part.heal()
        healed = time.monotonic()

        def works() -> bool:
            write_fsync(mnt / "after", b"after" * 1000)
            return read_uncached(mnt / "after") == b"after" * 1000
        wait_for("the mount works again by itself", lambda: bounded("write after", works, 20)[0]
                 is True, 30, every=0.5)
        print(f"mount usable again {time.monotonic() - healed:.1f}s after the link came back")
        wait_for("chunkds registered again",
                 lambda: rpc(c.url, "cluster_status")["chunkds_alive"] == 3, 20)
        assert read_uncached(mnt / "before") == before
        big = os.urandom(2 * CS)
        write_fsync(mnt / "big", big)
        assert read_uncached(mnt / "big") == big
