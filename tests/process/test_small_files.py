"""The small-file path against a real cluster: a file's first small write
rides on the creation of its chunk (one lease call instead of lease, commit
and extend), the parent's attributes come back with each create/unlink so the
kernel's next getattr of the directory needs no RPC, and a new chunk's files
reach the disk with its first sync (unit test on a real DiskChunkStore), and
an absent xattr is remembered for attr_timeout."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import chunkd.storage.diskstore as diskstore
from chunkd.storage.diskstore import DiskChunkStore
from conftest import TEST_CHUNK_SIZE
from gfsfs.common import rpc
from gfsfs.client.core import Client
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import Cluster
from test_client_cluster import config, master_chunks, pattern


def requests(url: str, route: str) -> float:
    """gfs_requests_total for ``route`` on the daemon at ``url``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "gfs_requests_total" and s.labels.get("route") == route)


def chunkd_requests(cluster: Cluster, route: str) -> float:
    return sum(requests(d.url, route) for d in cluster.servers)


async def replica_bytes(client: Client, ino: int, index: int) -> list[bytes]:
    """Chunk ``index`` of ``ino`` as stored on each replica (over HTTP)."""
    reply = await master_chunks(client, ino)
    chunk = next(c for c in reply["chunks"] if c["index"] == index)
    out = []
    for rep in chunk["replicas"]:
        resp = await client.http.get(f"{rep['addr']}/chunk/{chunk['handle']}", params={
            "offset": 0, "length": TEST_CHUNK_SIZE, "version": chunk["version"]})
        out.append(rpc.decode_reply(resp.status_code, resp.content)
                   if resp.status_code >= 400 else resp.content)
    return out


def run(cluster: Cluster, test: Any) -> None:
    async def main() -> None:
        with trio.fail_after(60):
            async with Client.open(config(cluster)) as client:
                await test(client)
    trio.run(main)


def test_first_small_write_rides_on_chunk_creation(cluster: Cluster) -> None:
    data = pattern(3000, seed=9)

    async def t(client: Client) -> None:
        commits = chunkd_requests(cluster, "/rpc/commit")
        extends = requests(cluster.url, "/rpc/extend")
        attr = await client.create(1, b"small", stat.S_IFREG | 0o644, 0, 0)
        ino = attr["ino"]
        await client.write(ino, 100, data)
        await client.flush(ino)
        # one lease call did it all: no commit at a chunkd, no extend at the master
        assert chunkd_requests(cluster, "/rpc/commit") == commits
        assert requests(cluster.url, "/rpc/extend") == extends
        assert (await client.getattr(ino))["size"] == 100 + len(data)
        copies = await replica_bytes(client, ino, 0)
        assert copies == [bytes(100) + data] * 3
        # a second client sees it all (close-to-open)
        async with Client.open(config(cluster)) as other:
            of = other.open_file(ino)
            assert await other.read(ino, 0, 10_000, of) == bytes(100) + data
        # later writes to the now existing chunk take the usual lease + commit
        await client.write(ino, 0, b"head")
        await client.fsync(ino)
        assert chunkd_requests(cluster, "/rpc/commit") == commits + 1
        assert await client.read(ino, 0, 8) == b"head" + bytes(4)
        # a chunk the client wrongly guesses is new (another client made it):
        # the master ignores the bytes and the usual commit follows
        async with Client.open(config(cluster)) as other:
            await other.write(ino, TEST_CHUNK_SIZE, b"B" * 10)
            await other.flush(ino)
        client.state(ino).size = TEST_CHUNK_SIZE       # stale view: chunk 1 looks new
        client.state(ino).leases.pop(1, None)
        await client.write(ino, TEST_CHUNK_SIZE + 5, b"cc")
        await client.flush(ino)
        assert await client.read(ino, TEST_CHUNK_SIZE, 10) == b"BBBBBccBBB"
        assert set(await replica_bytes(client, ino, 1)) == {b"BBBBBccBBB"}
    run(cluster, t)


def oplog_fsyncs(url: str) -> float:
    """gfs_master_oplog_fsyncs: group commits of the master's op log."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name in ("gfs_master_oplog_fsyncs", "gfs_master_oplog_fsyncs_total"))


def test_a_small_file_costs_two_op_log_fsyncs(cluster: Cluster) -> None:
    """create (one group commit), then write + close: the new chunk's record
    and the size ride on one group commit (they took two before)."""
    async def t(client: Client) -> None:
        parent = (await client.mkdir(1, b"two", stat.S_IFDIR | 0o755, 0, 0))["ino"]
        before = oplog_fsyncs(cluster.url)
        for i in range(10):
            ino = (await client.create(parent, b"f%d" % i, stat.S_IFREG | 0o644, 0, 0))["ino"]
            await client.write(ino, 0, pattern(4096, seed=i))
            await client.flush(ino)
        spent = oplog_fsyncs(cluster.url) - before
        assert 20 <= spent <= 22, f"{spent} op log fsyncs for 10 small files"
        async with Client.open(config(cluster)) as other:      # and the bytes are there
            for i in range(10):
                ino = (await other.lookup(parent, b"f%d" % i))["ino"]
                assert await other.read(ino, 0, 8192, other.open_file(ino)) == pattern(4096, seed=i)
    run(cluster, t)


def test_small_file_fsync_reaches_every_replica(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        before = {d.url: await status_fsyncs(client, d.url) for d in cluster.servers}
        attr = await client.create(1, b"synced", stat.S_IFREG | 0o644, 0, 0)
        await client.write(attr["ino"], 0, b"x" * 5000)
        await client.fsync(attr["ino"])
        for d in cluster.servers:
            assert await status_fsyncs(client, d.url) > before[d.url], d.name
    run(cluster, t)


async def status_fsyncs(client: Client, url: str) -> int:
    resp = await client.http.get(f"{url}/status")
    return int(rpc.decode_reply(resp.status_code, resp.content)["fsyncs"])


def test_parent_attrs_come_back_with_mutations(cluster: Cluster) -> None:
    async def t(client: Client) -> None:
        d = await client.mkdir(1, b"dir", 0o755, 0, 0)
        getattrs = requests(cluster.url, "/rpc/getattr")
        f = await client.create(d["ino"], b"f", stat.S_IFREG | 0o600, 0, 0)
        # the kernel asks for both right after a create: no RPC for either
        assert (await client.getattr(f["ino"]))["mode"] == stat.S_IFREG | 0o600
        parent = await client.getattr(d["ino"])
        assert parent["mtime_ns"] >= f["ctime_ns"]
        assert requests(cluster.url, "/rpc/getattr") == getattrs
        # answered once only; after that the master is asked again
        await client.getattr(d["ino"])
        assert requests(cluster.url, "/rpc/getattr") == getattrs + 1
        # our own change in between forgets what create answered
        await client.create(d["ino"], b"g", stat.S_IFREG | 0o600, 0, 0)
        await client.setattr(d["ino"], mode=0o700)
        assert stat.S_IMODE((await client.getattr(d["ino"]))["mode"]) == 0o700
        await client.unlink(d["ino"], b"g")
        after = await client.getattr(d["ino"])
        assert stat.S_IMODE(after["mode"]) == 0o700 and after["nlink"] == 2
    run(cluster, t)


def test_new_chunk_reaches_disk_with_its_first_sync(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(diskstore, "_fsync_dir", lambda path: synced.append(Path(path)))

    async def main() -> None:
        store = DiskChunkStore(tmp_path / "cs")
        await store.open()
        await store.create(1, 1)
        await store.create(2, 1)
        assert synced == []                 # creating fsyncs nothing
        await store.write(1, 0, b"abc")
        await store.sync(1)
        assert synced == [tmp_path / "cs"]  # both entries, one directory fsync
        await store.sync(2)
        await store.set_version(1, 2)
        assert synced == [tmp_path / "cs"]
        await store.create(3, 1)
        await store.set_version(3, 2)       # a version change makes it durable too
        assert synced == [tmp_path / "cs"] * 2
        again = DiskChunkStore(tmp_path / "cs")
        await again.open()
        assert sorted(h for h, _ in again.list()) == [1, 2, 3]
    trio.run(main)


def test_torn_new_chunk_is_ignored_at_start(tmp_path: Path) -> None:
    """What a crash before a new chunk's first sync can leave behind."""
    async def main() -> None:
        store = DiskChunkStore(tmp_path / "cs")
        await store.open()
        await store.create(1, 1)
        await store.create(2, 1)
        (tmp_path / "cs" / f"{1:016x}.meta").write_bytes(b"")     # header never landed
        (tmp_path / "cs" / f"{2:016x}.chunk").unlink()            # data file never landed
        again = DiskChunkStore(tmp_path / "cs")
        await again.open()
        assert again.list() == []
    trio.run(main)



def test_absent_xattr_is_remembered_until_a_change(cluster: Cluster) -> None:
    """The kernel asks for security.capability before every write(2)."""
    async def t(client: Client) -> None:
        attr = await client.create(1, b"x", stat.S_IFREG | 0o644, 0, 0)
        ino = attr["ino"]
        await client.setxattr(ino, b"user.a", b"1")       # not known to have none
        before = requests(cluster.url, "/rpc/getxattr")
        for _ in range(5):
            with pytest.raises(GFSError) as info:
                await client.getxattr(ino, b"security.capability")
            assert info.value.code == "ENODATA"
        assert requests(cluster.url, "/rpc/getxattr") == before + 1
        await client.setxattr(ino, b"security.capability", b"caps")
        assert await client.getxattr(ino, b"security.capability") == b"caps"
        await client.removexattr(ino, b"security.capability")
        with pytest.raises(GFSError):
            await client.getxattr(ino, b"security.capability")
        assert requests(cluster.url, "/rpc/getxattr") == before + 3
    run(cluster, t)
