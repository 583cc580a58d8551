"""Short-circuit local reads: the chunkd hands its chunk files to a reader on
the same host over an abstract Unix socket, the reader checks versions and
CRCs itself and falls back to HTTP whenever the files cannot vouch for the
bytes. In-process tests drive a real DiskChunkStore and real sockets; cluster
tests run real daemons."""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from chunkd.storage.diskstore import DiskChunkStore
from chunkd.api.shortcircuit import ShortCircuitServer
from conftest import TEST_CHUNK_SIZE
from gfsfs.common import rpc
from gfsfs.client.core import ChunkLoc, Client, Replica
from gfsfs.client.local import LocalReads, NotLocal
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import Cluster
from gfsfs.common.shortcircuit import FRAME, socket_name, unpack
from test_client_cluster import config, new_file, pattern, server_at

ADDR = f"http://127.0.0.9:{os.getpid()}"      # only names the socket; nothing listens on it


async def serving_store(tmp: Path, nursery: trio.Nursery, sid: str = "sc1") -> tuple[DiskChunkStore, ShortCircuitServer]:
    store = DiskChunkStore(tmp / sid)
    await store.open()
    server = ShortCircuitServer(store, sid)
    await nursery.start(server.serve, ADDR)
    return store, server


def test_local_read_verifies_and_reads_back(tmp_path: Path) -> None:
    data = pattern(300_000)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store, server = await serving_store(tmp_path, nursery)
            await store.create(7, 3)
            await store.write(7, 0, data)
            reads = LocalReads(True)
            rep, loc = Replica("sc1", ADDR), ChunkLoc(7, 3, ())
            assert await reads.read(rep, loc, 0, len(data)) == data
            assert await reads.read(rep, loc, 70_000, 5) == data[70_000:70_005]
            assert await reads.read(rep, loc, 299_990, 100) == data[299_990:]   # short at the end
            assert reads.reads == 3 and server.opens == 1                     # files kept open
            assert reads.rank(ADDR) == 0
            # a newer version than the replica has: refused, the caller goes to HTTP
            assert await reads.read(rep, ChunkLoc(7, 4, ()), 0, 10) is None
            # a flipped byte on disk: never returned
            with open(tmp_path / "sc1" / f"{7:016x}.chunk", "r+b") as f:
                f.seek(100_000)
                f.write(b"\xff\x00\xff")
            assert await reads.read(rep, loc, 65_536, 65_536) is None
            assert reads.fallbacks == 1
            reads.close()
            nursery.cancel_scope.cancel()
    trio.run(main)


def test_delete_revokes_the_open_files(tmp_path: Path) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store, server = await serving_store(tmp_path, nursery)
            await store.create(9, 1)
            await store.write(9, 0, b"abc" * 1000)
            reads = LocalReads(True)
            rep, loc = Replica("sc1", ADDR), ChunkLoc(9, 1, ())
            assert await reads.read(rep, loc, 0, 3) == b"abc"
            opened = reads.files[(ADDR, 9)]
            assert opened.held() and server.holders[9]
            await store.delete(9)                  # garbage collected, stale or corrupt here
            with trio.fail_after(5):
                while opened.held():
                    await trio.sleep(0.01)
            assert 9 not in server.holders
            assert await reads.read(rep, loc, 0, 3) is None    # NOCHUNK: over to HTTP
            reads.close()
            nursery.cancel_scope.cancel()
    trio.run(main)


def test_wrong_chunkd_and_no_chunkd_are_not_local(tmp_path: Path) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store, _ = await serving_store(tmp_path, nursery)
            await store.create(5, 1)
            reads = LocalReads(True)
            with pytest.raises(NotLocal):        # same address, another chunkd's id
                await trio.to_thread.run_sync(reads._open, Replica("other", ADDR), ChunkLoc(5, 1, ()))
            assert await reads.read(Replica("x", ADDR + "1"), ChunkLoc(5, 1, ()), 0, 1) is None
            assert reads.rank(ADDR + "1") == 2
            nursery.cancel_scope.cancel()
    trio.run(main)


def test_malformed_requests_and_other_users_are_refused(tmp_path: Path) -> None:
    def ask(payload: bytes, uid: int | None = None) -> dict[str, object]:
        code = ("import socket,sys;s=socket.socket(socket.AF_UNIX);"
                f"s.connect({socket_name(ADDR)!r});s.sendall({payload!r});"
                "sys.stdout.buffer.write(s.recv(4096))")
        # another user cannot run our venv's interpreter; the system one will do
        python = sys.executable if uid is None else "/usr/bin/python3"
        proc = subprocess.run([python, "-c", code], capture_output=True, timeout=10,
                              user=uid, cwd="/")
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return unpack(proc.stdout)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            store, server = await serving_store(tmp_path, nursery)
            await store.create(5, 1)
            good = rpc.pack({"handle": 5, "version": 1})
            framed = FRAME.pack(len(good)) + good
            for payload, code in [(FRAME.pack(3) + b"\xc1\xc1\xc1", "BADREQ"),
                                  (FRAME.pack(1 << 30), "BADREQ"),
                                  (FRAME.pack(2) + b"\x91\x01", "BADREQ"),    # not a map
                                  (_framed({"handle": "x", "version": 1}), "BADREQ"),
                                  (_framed({"handle": 6, "version": 1}), "NOCHUNK"),
                                  (_framed({"handle": 5, "version": 2}), "STALE")]:
                reply = await trio.to_thread.run_sync(ask, payload)
                assert reply["code"] == code, (payload, reply)
            if os.getuid() == 0 and os.path.exists("/usr/bin/python3"):
                reply = await trio.to_thread.run_sync(ask, framed, 65534)
                assert reply["code"] == "EACCES"
            # still serving
            reads = LocalReads(True)
            assert await reads.read(Replica("sc1", ADDR), ChunkLoc(5, 1, ()), 0, 1) == b""
            assert server.opens == 1
            reads.close()
            nursery.cancel_scope.cancel()
    trio.run(main)


def _framed(msg: dict[str, object]) -> bytes:
    body = rpc.pack(msg)
    return FRAME.pack(len(body)) + body


# a replica is corrupted on purpose
@pytest.mark.allow_errors
def test_cluster_reads_locally_and_survives_corruption_and_death(cluster: Cluster) -> None:
    data = pattern(2 * TEST_CHUNK_SIZE + 999, seed=5)

    async def main() -> None:
        with trio.fail_after(60):
            async with Client.open(config(cluster)) as client:
                ino = await new_file(client)
                await client.write(ino, 0, data)
                await client.flush(ino)
                assert await client.read(ino, 0, len(data)) == data
                assert client.local_reads.reads >= 3           # every chunk, no GET /chunk
                loc = await client.locate(ino, 0)
                assert loc is not None
                first = client._order(loc.replicas)[0]
                assert client.local_reads.rank(first.addr) == 0
                status = await _status(client, first.addr)
                assert status["local_opens"] >= 1
                # corrupt the replica read locally: the chunkd itself confirms it
                # over HTTP, drops it, and the read fails over to a good copy
                path = cluster.data / "chunks" / first.id / f"{loc.handle:016x}.chunk"
                with open(path, "r+b") as f:
                    f.write(b"CORRUPT")
                assert await client.read(ino, 0, 4096) == data[:4096]
                assert not path.exists()
                assert first.addr in client.failed_addrs
                # kill a chunkd the client holds files of: it stops using them
                loc = await client.locate(ino, 1)
                assert loc is not None
                assert await client.read(ino, TEST_CHUNK_SIZE, 10) == data[TEST_CHUNK_SIZE:][:10]
                held = [(addr, h) for addr, h in client.local_reads.files if h == loc.handle]
                victim = held[0][0]
                server_at(cluster, victim).kill()
                opened = client.local_reads.files[(victim, loc.handle)]
                with trio.fail_after(5):
                    while opened.held():
                        await trio.sleep(0.01)
                assert await client.read(ino, TEST_CHUNK_SIZE, 10) == data[TEST_CHUNK_SIZE:][:10]
    trio.run(main)


async def _status(client: Client, addr: str) -> dict[str, object]:
    resp = await client.http.get(f"{addr}/status")
    return rpc.decode_reply(resp.status_code, resp.content)


def test_short_circuit_off_reads_over_http(cluster: Cluster) -> None:
    data = b"q" * 5000

    async def main() -> None:
        with trio.fail_after(30):
            cfg = dataclasses.replace(config(cluster), short_circuit=False)
            async with Client.open(cfg) as client:
                ino = await new_file(client)
                await client.write(ino, 0, data)
                await client.flush(ino)
                assert await client.read(ino, 0, len(data)) == data
                assert client.local_reads.reads == 0
                total = 0
                for d in cluster.servers:
                    total += int((await _status(client, d.url))["reads"])
                assert total >= 1
    trio.run(main)


def test_socket_name_is_abstract_and_bounded() -> None:
    name = socket_name("http://127.0.0.1:5001/")
    assert name.startswith(b"\0") and name.endswith(b"127.0.0.1:5001")
    assert len(socket_name("http://" + "h" * 300)) < 108
    with socket.socket(socket.AF_UNIX) as s:       # bindable as is
        s.bind(socket_name(f"http://test-{os.getpid()}"))
    with pytest.raises(GFSError):
        unpack(b"\x01")


def test_mount_reads_locally_while_another_mount_writes(cluster: Cluster, tmp_path: Path) -> None:
    """A reader on one mount (short-circuit) never sees a byte nobody wrote in
    a file another mount keeps overwriting and growing: every block it reads
    either checks out against its CRC or is read again over HTTP."""
    from gfsfs.tools.localcluster import Mount

    size, piece = 3 * TEST_CHUNK_SIZE, 48 * 1024
    writer = Mount(cluster.url, tmp_path / "w", cluster.logs / "mount-w.out").start()
    try:
        reader = Mount(cluster.url, tmp_path / "r", cluster.logs / "mount-r.out").start()
        try:
            path_w, path_r = writer.mountpoint / "f", reader.mountpoint / "f"
            proc = subprocess.Popen([sys.executable, "-c", (
                "import os,sys\n"
                "fd=os.open(sys.argv[1],os.O_WRONLY|os.O_CREAT,0o644)\n"
                f"for v in (1,2,3):\n"
                f"    for off in range(0,{size},{piece}):\n"
                f"        os.pwrite(fd,bytes([v])*{piece},off); os.fsync(fd)\n"
                "os.close(fd)\n"), str(path_w)])
            reads = 0
            try:
                while proc.poll() is None or reads < 3:
                    try:
                        got = path_r.read_bytes()      # close-to-open: a fresh view each time
                    except FileNotFoundError:
                        continue
                    reads += 1
                    # every byte below the size is one the writer wrote: never a
                    # zero, never garbage (a read racing a write may mix old and
                    # new blocks, as on a local file system; GFS calls that
                    # consistent but undefined)
                    assert not got.translate(None, b"\1\2\3"), "a byte nobody wrote"
            finally:
                assert proc.wait(timeout=120) == 0
            assert path_r.read_bytes() == b"\3" * size
            opens = sum(int(rpc.decode_reply(r.status_code, r.content)["local_opens"])
                        for r in (httpx.get(f"{d.url}/status", timeout=10)
                                  for d in cluster.servers))
            assert opens >= 3 and reads >= 3        # the reader did read locally
        finally:
            reader.stop()
    finally:
        writer.stop()
