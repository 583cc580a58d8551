"""The client library (gfsfs.client.core.Client) against a real cluster: a master and
three chunkd processes per test (the ``cluster`` fixture). Write/read round
trips, chunk boundaries, holes, truncate, replica failover on real corruption
and a dead chunkd, lease renewal after the primary is killed, read-ahead and
early write-back."""
from __future__ import annotations

import dataclasses
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from conftest import TEST_CHUNK_SIZE
from gfsfs.common import rpc
from gfsfs.client.core import Client
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import Cluster, Daemon

CS = TEST_CHUNK_SIZE


def config(cluster: Cluster, **cfg: Any) -> ClientConfig:
    base = dict(upload_chunk_size=CS // 2, retries=3, request_timeout=5.0)
    base.update(cfg)
    return dataclasses.replace(ClientConfig(), master_url=cluster.url, **base)


def run(cluster: Cluster, test: Callable[[Client], Awaitable[Any]], timeout: float = 30.0,
        **cfg: Any) -> None:
    async def main() -> None:
        with trio.fail_after(timeout):
            async with Client.open(config(cluster, **cfg)) as client:
                await test(client)
    trio.run(main)


async def new_file(client: Client, name: bytes = b"f") -> int:
    attr = await client.create(1, name, stat.S_IFREG | 0o644, 0, 0)
    return attr["ino"]


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


async def master_chunks(client: Client, ino: int) -> dict[str, Any]:
    """The master's own view of a file's chunks (not the client's cache)."""
    return await rpc.call(client.http, client.master, "chunks",
                          {"ino": ino, "first": 0, "count": 1024})


def server_at(cluster: Cluster, addr: str) -> Daemon:
    for d in cluster.servers:
        if d.url.rstrip("/") == addr.rstrip("/"):
            return d
    raise AssertionError(f"no chunkd at {addr}; have {[d.url for d in cluster.servers]}")


async def chunkd_reads(client: Client, cluster: Cluster) -> int:
    """GET /chunk requests served so far, summed over the live chunkds."""
    total = 0
    for d in cluster.servers:
        if not d.alive():
            continue
        resp = await client.http.get(f"{d.url}/status")
        total += int(rpc.decode_reply(resp.status_code, resp.content)["reads"])
    return total


def test_namespace_roundtrip(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        d = await client.mkdir(1, b"dir", 0o755, 0, 0)
        await client.create(d["ino"], b"a", stat.S_IFREG | 0o600, 0, 0)
        await client.symlink(d["ino"], b"l", b"a", 0, 0)
        names = [n for n, _, _ in await client.readdir(d["ino"])]
        assert names == [b"a", b"l"]
        link = await client.lookup(d["ino"], b"l")
        assert await client.readlink(link["ino"]) == b"a"
        with pytest.raises(GFSError) as info:
            await client.lookup(d["ino"], b"nope")
        assert info.value.code == "ENOENT"
        st = await client.statfs()
        assert st["chunk_size"] == CS
    run(cluster, t)


def test_write_read_across_chunks(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        ino = await new_file(client)
        data = pattern(3 * CS + 12345)
        for off in range(0, len(data), 128 * 1024):          # FUSE-sized writes
            await client.write(ino, off, data[off:off + 128 * 1024])
        await client.flush(ino)
        assert (await client.getattr(ino))["size"] == len(data)
        assert await client.read(ino, 0, len(data)) == data
        assert await client.read(ino, CS - 10, 20) == data[CS - 10:CS + 10]
        assert await client.read(ino, len(data) - 5, 100) == data[-5:]
        assert await client.read(ino, len(data) + 5, 100) == b""
        assert [c["index"] for c in (await master_chunks(client, ino))["chunks"]] == [0, 1, 2, 3]
    run(cluster, t)


def test_read_sees_unflushed_writes_and_size(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        ino = await new_file(client)
        await client.write(ino, 0, b"hello")
        assert (await client.getattr(ino))["size"] == 5      # overlay before flush
        assert await client.read(ino, 0, 100) == b"hello"
    run(cluster, t)


def test_holes_read_as_zeros(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        ino = await new_file(client)
        await client.write(ino, 3 * CS + 10, b"end")
        await client.flush(ino)
        assert (await client.getattr(ino))["size"] == 3 * CS + 13
        assert await client.read(ino, 0, 100) == bytes(100)
        assert await client.read(ino, 3 * CS, 13) == bytes(10) + b"end"
        reply = await master_chunks(client, ino)
        assert reply["size"] == 3 * CS + 13
        assert [c["index"] for c in reply["chunks"]] == [3]   # no chunks for the hole
    run(cluster, t)


def test_truncate_then_grow_reads_zeros(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        ino = await new_file(client)
        await client.write(ino, 0, pattern(CS + 1000))
        await client.flush(ino)
        await client.truncate(ino, CS + 10)
        await client.truncate(ino, CS + 500)
        got = await client.read(ino, CS, 500)
        assert got == pattern(CS + 1000)[CS:CS + 10] + bytes(490)
        await client.truncate(ino, 0)
        assert await client.read(ino, 0, 10) == b""
        assert (await master_chunks(client, ino))["chunks"] == []
    run(cluster, t)


# replicas are corrupted on purpose
@pytest.mark.allow_errors
def test_failover_to_another_replica(cluster: Cluster) -> None:
    data = b"x" * 1000

    async def t(client: Client) -> None:
        ino = await new_file(client)
        await client.write(ino, 0, data)
        await client.flush(ino)
        loc = await client.locate(ino, 0)
        assert loc is not None and len(loc.replicas) == 3
        # Corrupt the two replicas the client tries first, on disk: the chunkds'
        # block checksums catch it and the client fails over to the third.
        order = client._order(loc.replicas)
        bad, good = order[:2], order[2]
        for rep in bad:
            path = cluster.data / "chunks" / rep.id / f"{loc.handle:016x}.chunk"
            with open(path, "r+b") as f:
                f.seek(len(data) // 2 - 6)
                f.write(b"CORRUPTED!!!")
        assert await client.read(ino, 0, len(data)) == data
        assert {r.addr for r in bad} <= set(client.failed_addrs)
        assert good.addr not in client.failed_addrs
        # the corrupt replicas were dropped by their chunkds, never served
        for rep in bad:
            assert not (cluster.data / "chunks" / rep.id / f"{loc.handle:016x}.chunk").exists()
        # now the only good replica goes away too
        server_at(cluster, good.addr).kill()
        with pytest.raises(GFSError) as info:
            await client.read(ino, 0, len(data))
        assert info.value.errno == 5
    run(cluster, t)


async def kill_primary_then_write(cluster: Cluster, client: Client, sync_first: bool) -> None:
    ino = await new_file(client)
    await client.write(ino, 0, b"a" * 100)
    if sync_first:
        await client.fsync(ino)
    else:
        await client.flush(ino)
    old = client.state(ino).leases[0]
    # kill -9 the primary our cached lease names: the next write must get a
    # fresh lease (once the master notices the death) from a live replica
    server_at(cluster, old.primary.addr).kill()
    await client.write(ino, 100, b"b" * 100)
    await client.fsync(ino)
    new = client.state(ino).leases[0]
    assert new.handle == old.handle
    assert new.version > old.version
    assert new.primary.addr != old.primary.addr
    assert old.primary.addr not in {s.addr for s in new.secondaries}
    assert await client.read(ino, 0, 200) == b"a" * 100 + b"b" * 100


# retries=5 (the default): the master declares a chunkd dead only after 3 missed
# heartbeats (1.5 s here); until then its lease RPC keeps naming the dead primary.

def test_write_retries_with_fresh_lease(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        await kill_primary_then_write(cluster, client, sync_first=True)
    run(cluster, t, retries=5)


def test_fsync_after_primary_death_with_unsynced_data(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        await kill_primary_then_write(cluster, client, sync_first=False)
    run(cluster, t, retries=5)


def test_sequential_reads_use_readahead(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        ino = await new_file(client)
        data = pattern(4 * CS, seed=3)
        await client.write(ino, 0, data)
        await client.flush(ino)
        of = client.open_file(ino)
        out = bytearray()
        step = 128 * 1024
        before = await chunkd_reads(client, cluster) + client.local_reads.reads
        for off in range(0, len(data), step):
            out += await client.read(ino, off, step, of)
        reads = await chunkd_reads(client, cluster) + client.local_reads.reads - before
        assert bytes(out) == data
        assert 0 < reads < len(data) // step, f"{reads} chunk reads: read-ahead should fetch larger ranges"
    run(cluster, t, readahead_bytes=2 * CS, readahead_pieces=2)


def test_large_buffered_writes_are_sent_early(cluster: Cluster) -> None:
    async def main() -> None:
        with trio.fail_after(30):
            async with Client.open(config(cluster)) as client, \
                    Client.open(config(cluster)) as other:
                ino = await new_file(client)
                for i in range(8):
                    await client.write(ino, i * 256 * 1024, b"z" * 256 * 1024)
                await trio.sleep(0.5)
                # another client sees the master's size: extended before any flush
                assert (await other.getattr(ino))["size"] >= CS // 2
                await client.flush(ino)
                assert (await other.getattr(ino))["size"] == 2 * CS
                assert await other.read(ino, 0, 2 * CS) == b"z" * 2 * CS
    trio.run(main)



def test_a_failed_background_append_reaches_every_open_file(cluster: Cluster) -> None:
    """errseq semantics: a queued append that failed after write(2) returned
    is reported by the fsync of every open file of the inode -- even when
    another descriptor's close (a forked child's, sharing the open file)
    heard of it first -- and once per open file; a close reports without
    consuming, and a reader's close is told nothing."""
    import os as _os
    from gfsfs.common.errors import GFSError

    async def test(c: Client) -> None:
        ino = (await c.create(1, b"log", stat.S_IFREG | 0o644, 0, 0))["ino"]
        await c.appender.append(ino, b"first record\n")
        a = c.open_file(ino, _os.O_WRONLY | _os.O_APPEND)
        b = c.open_file(ino, _os.O_WRONLY | _os.O_APPEND)
        reader = c.open_file(ino, _os.O_RDONLY)
        cluster.master.kill()                       # the next append cannot get its lease
        await c.appender.enqueue(ino, b"lost record\n")
        with pytest.raises(GFSError):
            await c.flush(ino, b)                   # the first to hear of it
        with pytest.raises(GFSError):
            await c.flush(ino, a)                   # a close reports it ...
        with pytest.raises(GFSError):
            await c.fsync(ino, a)                   # ... and does not consume it
        cluster.restart_master()                    # the same port: the cluster is back
        await c.fsync(ino, a)                       # once per open file
        with pytest.raises(GFSError):
            await c.fsync(ino, b)
        await c.flush(ino, reader)                  # a reader's close: nothing
        with pytest.raises(GFSError):
            await c.fsync(ino, reader)              # its fsync: as Linux's
    run(cluster, test, failover_timeout=1.0, retries=1)
