"""The chunkd's push buffers (chunkd/mutations/push.py): bounded in time and in bytes.

- :class:`PushBuffers` on its own: a push into full buffers waits, then gets
  EAGAIN; room comes from data already applied first; the expiry timer drops
  data nobody committed without waiting for another push;
- real daemons: after a burst of writes the chunkds' buffered bytes drop to 0
  on their own (short ``push_buffer_ttl``) and their RSS comes back down; a
  burst far bigger than ``push_buffer_bytes`` through a real client (the web
  upload's) still writes every byte right.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from chunkd.mutations.push import PushBuffers
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import Cluster

from conftest import make_cluster

MIB = 1 << 20
WEB = {"X-GFS-Web": "1"}


# ---------------------------------------------------------------- in process

def test_full_buffers_make_a_push_wait_then_eagain() -> None:
    async def go() -> None:
        b = PushBuffers(ttl=60, max_bytes=4 * MIB, wait=0.3)
        r1 = b.reservation()
        await r1.grow(3 * MIB)
        b.put("aa", bytes(3 * MIB), r1)
        r2 = b.reservation()
        start = trio.current_time()
        with pytest.raises(GFSError) as e:
            await r2.grow(2 * MIB)          # 5 MiB > 4: nothing to make room from
        assert e.value.code == "EAGAIN"
        assert trio.current_time() - start >= 0.3
        assert b.rejected == 1 and b.waits == 1 and b.get("aa")   # pending data kept

        async def commit_later() -> None:
            await trio.sleep(0.1)
            b.discard("aa")                 # its commit came

        async with trio.open_nursery() as nursery:
            nursery.start_soon(commit_later)
            await r2.grow(2 * MIB)          # waits for the commit, then fits
        assert b.held == 2 * MIB and b.reserved == 2 * MIB
        r2.release()
        assert b.held == 0
    trio.run(go)


def test_applied_data_goes_first_and_stale_data_only_for_a_starved_push() -> None:
    async def go() -> None:
        b = PushBuffers(ttl=2.0, max_bytes=4 * MIB, wait=0.6)     # idle: over 0.5 s
        for data_id in ("a1", "a2", "b1"):
            b.put(data_id, bytes(MIB + MIB // 2))      # 4.5 MiB: over the cap already
        b.mark_used("a1")
        r = b.reservation()
        await r.grow(MIB)               # at once: the applied a1 made room
        assert "a1" not in b._items and b.get("a2") and b.get("b1") and b.waits == 0
        r2 = b.reservation()
        await r2.grow(MIB)              # no applied data left: waited, then a2 (stale) went
        assert b.waits == 1 and b.rejected == 0 and "a2" not in b._items and b.get("b1")
        assert b.evicted_bytes == 3 * MIB
    trio.run(go)


def test_a_push_bigger_than_the_cap_passes_when_alone() -> None:
    async def go() -> None:
        b = PushBuffers(ttl=60, max_bytes=MIB, wait=0.1)
        r = b.reservation()
        await r.grow(3 * MIB)
        await r.grow(MIB)                # chunked bodies grow piece by piece
        b.put("big", bytes(4 * MIB), r)
        assert b.bytes == 4 * MIB and b.reserved == 0
    trio.run(go)


def test_expiry_timer_drops_unused_data_without_another_push() -> None:
    async def go() -> None:
        b = PushBuffers(ttl=0.4, max_bytes=64 * MIB)
        b.put("aa", bytes(2 * MIB))
        b.put("bb", bytes(MIB))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.run_expiry)
            await trio.sleep(0.2)
            assert b.bytes == 3 * MIB
            await trio.sleep(0.5)
            assert b.bytes == 0 and len(b) == 0 and b.expired_bytes == 3 * MIB
            nursery.cancel_scope.cancel()
    trio.run(go)


# ---------------------------------------------------------------- real daemons

def _addr(daemon: object) -> str:
    m = re.search(r"listening on (\S+)", daemon.log_tail(1 << 20))  # type: ignore[attr-defined]
    assert m is not None
    return m.group(1)


def _metric(addr: str, name: str) -> float:
    text = httpx.get(f"{addr}/metrics", timeout=10).text
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    assert m is not None, f"{name} not in /metrics of {addr}"
    return float(m.group(1))


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _upload(c: Cluster, path: str, size: int, seed: bytes) -> str:
    """Stream ``size`` pseudo-random bytes to ``path`` through the web upload
    (the master's own client writes them); their sha256."""
    block = hashlib.sha256(seed).digest() * (MIB // 32)
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for i in range(size // MIB):
            piece = i.to_bytes(8, "big") + block[8:]
            digest.update(piece)
            yield piece

    with httpx.Client(base_url=c.url, timeout=300) as http:
        r = http.put("/web/upload", params={"path": path}, content=body(),
                     headers={**WEB, "content-length": str(size)})
        assert r.status_code == 201, r.text
    return digest.hexdigest()


def _download_sha(c: Cluster, path: str) -> str:
    digest = hashlib.sha256()
    with httpx.Client(base_url=c.url, timeout=300) as http:
        with http.stream("GET", "/web/download", params={"path": path}) as resp:
            assert resp.status_code == 200
            for piece in resp.iter_bytes():
                digest.update(piece)
    return digest.hexdigest()


@pytest.mark.slow
def test_push_buffers_drain_after_a_write_burst(tmp_path: Path) -> None:
    """After 160 MiB of writes the chunkds hold tens of MiB of pushed data;
    with push_buffer_ttl=3 it is all gone a few seconds later, with no further
    push, and the chunkds' RSS falls back near where it started."""
    c = make_cluster(tmp_path, extra=["chunk_server.push_buffer_ttl=3"])
    try:
        c.start()
        addrs = [_addr(d) for d in c.servers]
        before = [_rss_mib(d.pid) for d in c.servers]
        sha = _upload(c, "/burst", 160 * MIB, b"burst")
        held = [_metric(a, "gfs_chunkd_push_buffered_bytes") for a in addrs]
        peak = [_rss_mib(d.pid) for d in c.servers]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = [_metric(a, "gfs_chunkd_push_buffered_bytes") for a in addrs]
            if not any(left):
                break
            time.sleep(0.5)
        time.sleep(2.0)                 # the timer's malloc_trim runs after the drop
        after = [_rss_mib(d.pid) for d in c.servers]
        print(f"RSS MiB before {before}, after the burst {peak}, after expiry {after}; "
              f"buffered MiB after the burst {[h / MIB for h in held]}")
        assert sum(held) > 0, "the burst left nothing buffered: the test measures nothing"
        assert left == [0.0, 0.0, 0.0], f"still buffered: {left}"
        for b, a in zip(before, after):
            assert a < b + 48, f"RSS {a:.0f} MiB after expiry, {b:.0f} MiB at start"
        assert _download_sha(c, "/burst") == sha
    except BaseException:
        print(c.logs_text())
        raise
    finally:
        c.stop()


@pytest.mark.slow
def test_a_burst_over_the_push_buffer_cap_is_written_right(tmp_path: Path) -> None:
    """push_buffer_bytes=4 MiB (four 1 MiB chunk pieces) against a 48 MiB
    upload of 4 MiB batches, four in flight, each push through a chain of
    three: pushes wait for room (or get EAGAIN and are retried) and the file
    reads back exactly; no chunkd ever held more than the cap."""
    c = make_cluster(tmp_path, extra=["chunk_server.push_buffer_bytes=4194304",
                                      "chunk_server.push_buffer_wait=2.0"])
    try:
        c.start()
        addrs = [_addr(d) for d in c.servers]
        peak = [0.0] * len(addrs)
        done = False

        async def watch() -> None:
            async with httpx.AsyncClient(timeout=10) as http:
                while not done:
                    for i, a in enumerate(addrs):
                        text = (await http.get(f"{a}/metrics")).text
                        held = sum(float(m.group(1)) for m in re.finditer(
                            r"^gfs_chunkd_push_(?:buffered|reserved)_bytes(?:{[^}]*})? (\S+)$",
                            text, re.M))
                        peak[i] = max(peak[i], held)
                    await trio.sleep(0.05)

        async def main() -> str:
            nonlocal done
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                sha = await trio.to_thread.run_sync(_upload, c, "/big", 48 * MIB, b"cap")
                done = True
            return sha

        sha = trio.run(main)
        waits = sum(_metric(a, "gfs_chunkd_push_waits_total") for a in addrs)
        rejected = sum(_metric(a, "gfs_chunkd_push_rejected_total") for a in addrs)
        print(f"peak held MiB {[p / MIB for p in peak]}, waits {waits}, EAGAIN {rejected}")
        assert waits > 0, "the cap never made a push wait: the test measures nothing"
        assert max(peak) <= 4 * MIB, peak
        assert _download_sha(c, "/big") == sha
    except BaseException:
        print(c.logs_text())
        raise
    finally:
        c.stop()


def test_a_refused_push_is_answered_eagain_not_reset() -> None:
    """In process (chunkd over ASGI): a chunkd whose buffers are full answers
    a push 503 EAGAIN after push_buffer_wait, having read the body."""
    from chunkd.api.server import ChunkServer
    from chunkd.storage.store import MemoryChunkStore
    from gfsfs.common.config import ChunkServerConfig
    from gfsfs.common.rpc import unpack

    async def go() -> None:
        cfg = ChunkServerConfig(push_buffer_bytes=2 * MIB, push_buffer_wait=0.2)
        server = ChunkServer(MemoryChunkStore(), cfg, None, "cs1", "http://cs1")  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=server.app),
                                     base_url="http://cs1") as http:
            server.http = http
            assert (await http.put("/data/aa", content=bytes(2 * MIB))).status_code == 200
            r = await http.put("/data/bb", content=bytes(MIB))
            assert r.status_code == 503 and unpack(r.content)["error"]["code"] == "EAGAIN"
            assert server.buffers.rejected == 1 and server.buffers.reserved == 0
            server.buffers.discard("aa")        # its commit came
            assert (await http.put("/data/bb", content=bytes(MIB))).status_code == 200
            assert server.buffers.held == MIB
    trio.run(go)
