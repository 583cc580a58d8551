"""Record append (GFS §3.3) against real processes: O_APPEND writes from several
mounts and processes at once, racing O_CREAT|O_APPEND opens, records meeting a
chunk boundary, and the client library's ``append`` without a mount.

Records are self-checking (:func:`record`): writer id, sequence number, a
CRC32C and filler up to 1024 bytes, newline last. :func:`parse` walks a file,
skipping zero padding, and fails on any torn or interleaved record.
"""
from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import crc32c
import httpx
import pytest
import trio

from conftest import TEST_CHUNK_SIZE, needs_fuse
from gfsfs.common import rpc
from gfsfs.client.core import Client
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import Cluster, Mount

CS = TEST_CHUNK_SIZE
REC = 1024
# Records per writer process in the 12-writer test (GFS_APPEND_RECORDS to change).
# 1,000 each (12,000 records): ~80 s of appending on the 2-CPU test machine with
# other test runs beside it (153 appends/s; ~90/s under a load average of 20).
# 1 KiB records fill 1 MiB chunks exactly, so this file has no padding; the
# boundary tests below make some.
RECORDS = int(os.environ.get("GFS_APPEND_RECORDS", "1000"))

RECORD_CODE = '''
import crc32c
def record(wid, seq, size=1024):
    head = b"W%04d S%07d " % (wid, seq)
    fill = bytes(65 + (wid * 7 + seq + i) % 26 for i in range(size - len(head) - 10))
    body = head + fill
    return body + b" %08x\\n" % crc32c.crc32c(body)
'''
exec(RECORD_CODE)   # defines record(): the same code runs in the writer processes


def parse(data: bytes, size: int = REC) -> tuple[Counter[tuple[int, int]], int, list[str]]:
    """(count of each (writer, seq), zero padding bytes, problems)."""
    seen: Counter[tuple[int, int]] = Counter()
    padding = 0
    problems: list[str] = []
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0:
            nxt = pos
            while nxt < n and data[nxt] == 0:
                nxt += 1
            padding += nxt - pos
            pos = nxt
            continue
        rec = data[pos:pos + size]
        ok = (len(rec) == size and rec.startswith(b"W") and rec.endswith(b"\n")
              and b"\0" not in rec)
        if ok:
            body, tail = rec[:-10], rec[-10:]
            ok = tail == b" %08x\n" % crc32c.crc32c(body)
        if not ok:
            problems.append(f"torn/interleaved record at {pos}: {rec[:40]!r}...{rec[-16:]!r}")
            if len(problems) > 20:
                break
            nxt = data.find(b"\nW", pos)      # resynchronize on the next record
            pos = n if nxt < 0 else nxt + 1
            continue
        seen[(int(rec[1:5]), int(rec[7:14]))] += 1
        pos += size
    return seen, padding, problems


def report(name: str, seen: Counter[tuple[int, int]], padding: int, size: int) -> None:
    dups = sum(c - 1 for c in seen.values() if c > 1)
    print(f"{name}: {size} bytes, {len(seen)} distinct records, {dups} duplicates, "
          f"{padding} bytes of padding")


WRITER = RECORD_CODE + '''
import os, sys, time
path, wid, count, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
while time.time() < start:
    time.sleep(0.001)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
t0 = time.monotonic()
for seq in range(count):
    rec = record(wid, seq)
    n = os.write(fd, rec)
    assert n == len(rec), (n, len(rec))
os.close(fd)
print("%.3f" % (time.monotonic() - t0))
'''


def spawn(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_all(procs: list[subprocess.Popen[str]], timeout: float) -> list[tuple[int, str, str]]:
    deadline = time.monotonic() + timeout
    out = []
    try:
        for p in procs:
            o, e = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            out.append((p.returncode, o, e))
    finally:
        for p in procs:              # ours, by pid
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


@pytest.fixture
def mounts(cluster: Cluster, tmp_path: Path) -> Any:
    """Three mounts of ``cluster``."""
    ms: list[Mount] = []
    try:
        for i in range(3):
            ms.append(Mount(cluster.url, tmp_path / f"mnt{i}", cluster.logs / f"mount{i}.out").start())
        yield [m.mountpoint for m in ms]
    finally:
        for m in ms:
            m.stop()


# ---------------------------------------------------------------- through mounts

@needs_fuse
def test_twelve_writers_three_mounts(cluster: Cluster, mounts: list[Path]) -> None:
    """3 mounts x 4 processes, each appending RECORDS 1 KiB records to one
    file: every record present and whole; duplicates and padding reported."""
    start = time.time() + 1.0
    procs = [spawn(WRITER, mounts[w % 3] / "log", w, RECORDS, start) for w in range(12)]
    results = wait_all(procs, timeout=300)
    for rc, out, err in results:
        assert rc == 0, err
    per_writer = [float(o.strip()) for _, o, _ in results]
    wall = max(per_writer)
    total = 12 * RECORDS
    print(f"12 writers x {RECORDS} records of {REC} bytes: {wall:.1f} s, "
          f"{total / wall:.0f} appends/s, {total * REC / wall / 1e6:.2f} MB/s")
    time.sleep(1.5)                     # past attr_timeout: every mount sees the final size
    data = (mounts[0] / "log").read_bytes()
    seen, padding, problems = parse(data)
    report("12-writer file", seen, padding, len(data))
    assert not problems, problems[:5]
    missing = [(w, s) for w in range(12) for s in range(RECORDS) if (w, s) not in seen]
    assert not missing, f"{len(missing)} records missing, e.g. {missing[:5]}"
    assert set(seen) == {(w, s) for w in range(12) for s in range(RECORDS)}
    # every mount reads the same bytes
    for m in mounts[1:]:
        assert (m / "log").read_bytes() == data


RACER = RECORD_CODE + '''
import os, sys, time
base, wid, names, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
for k in range(names):
    while time.time() < start + 0.2 * k:
        time.sleep(0.0005)
    fd = os.open(os.path.join(base, "f%d" % k), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, record(wid, k))
    os.close(fd)
'''


@needs_fuse
def test_racing_create_append(cluster: Cluster, mounts: list[Path]) -> None:
    """open(O_CREAT|O_APPEND) of one new name from 3 mounts at once: every
    open succeeds and all three append to the same file."""
    names = 10
    start = time.time() + 1.0
    procs = [spawn(RACER, mounts[w], w, names, start) for w in range(3)]
    for rc, _, err in wait_all(procs, timeout=60):
        assert rc == 0, err
    time.sleep(1.5)                    # attr/entry caches of the mounts expire
    listing = sorted(os.listdir(mounts[0]))
    assert listing == sorted(f"f{k}" for k in range(names))
    for k in range(names):
        inos = {os.stat(m / f"f{k}").st_ino for m in mounts}
        assert len(inos) == 1, f"f{k}: {inos}"
        seen, padding, problems = parse((mounts[1] / f"f{k}").read_bytes())
        assert not problems and padding == 0
        assert sorted(seen) == [(w, k) for w in range(3)], (k, seen)


@needs_fuse
def test_create_excl_still_exclusive(cluster: Cluster, mounts: list[Path]) -> None:
    fd = os.open(mounts[0] / "x", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    os.close(fd)
    with pytest.raises(FileExistsError):
        os.open(mounts[1] / "x", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)


def chunkd_appends(cluster: Cluster) -> int:
    """Record appends the chunkds' primaries answered (from their /metrics)."""
    total = 0
    for d in cluster.servers:
        for line in httpx.get(f"{d.url}/metrics", timeout=10).text.splitlines():
            if line.startswith('gfs_requests_total{route="/rpc/append",status="200"}'):
                total += int(float(line.split()[-1]))
    return total


@needs_fuse
def test_queued_appends_of_four_processes_batch_and_stay_whole(
        cluster: Cluster, mounts: list[Path]) -> None:
    """4 processes x 300 records through one mount: write(2) returns once its
    record is queued, and the mount sends what queued up behind each append
    as one batch -- fewer appends reach the primaries than records were
    written -- yet every record is whole and there exactly once, and another
    mount sees them all after close."""
    path = mounts[0] / "queued"
    before = chunkd_appends(cluster)
    start = time.time() + 1.0
    out = wait_all([spawn(WRITER, path, wid, 300, start) for wid in range(4)], 300)
    assert all(rc == 0 for rc, _, _ in out), out
    sent = chunkd_appends(cluster) - before
    data = (mounts[1] / "queued").read_bytes()
    seen, padding, problems = parse(data)
    report("queued appends", seen, padding, len(data))
    assert not problems, problems[:3]
    assert set(seen) == {(w, s) for w in range(4) for s in range(300)}
    assert max(seen.values()) == 1
    assert 0 < sent <= 4 * 300 // 2, f"{sent} appends for 1200 records: no batching"
    print(f"1200 records in {sent} appends; writers took {[o for _, o, _ in out]} s")


@needs_fuse
def test_a_queued_append_reads_back_in_place_at_once(cluster: Cluster,
                                                      mounts: list[Path]) -> None:
    """This mount sees a record it queued at once, where it lands: a read,
    a size and a plain write after it wait for the queue."""
    path = mounts[0] / "readback"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for seq in range(40):
            rec = record(0, seq)
            assert os.write(fd, rec) == len(rec)
            assert os.pread(fd, REC, seq * REC) == rec
            assert os.fstat(fd).st_size == (seq + 1) * REC
    finally:
        os.close(fd)
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"X", 0)                  # a plain write after queued records
    finally:
        os.close(fd)
    data = (mounts[1] / "readback").read_bytes()
    assert data[:1] == b"X" and data[1:REC] == record(0, 0)[1:] and len(data) == 40 * REC


def test_a_failed_queued_append_is_raised_at_flush(cluster: Cluster) -> None:
    """With every chunkd gone, queuing a record still succeeds (as a buffered
    write does), and the failure is raised by the flush (close) after it."""
    async def main() -> None:
        with trio.fail_after(120):
            cfg = dataclasses.replace(_config(cluster), retries=2, chunkd_timeout=2.0)
            async with Client.open(cfg) as c:
                ino = (await c.create(1, b"lost", stat.S_IFREG | 0o644, 0, 0))["ino"]
                assert await c.append_records(ino, record(0, 0)) == REC
                await c.flush(ino)
                assert await c.read(ino, 0, REC) == record(0, 0)
                for d in cluster.servers:
                    d.kill()
                assert await c.append_records(ino, record(0, 1)) == REC
                while c.appender.queues[ino].error is None:     # the sender gave up
                    await trio.sleep(0.1)
                # later records are refused, and that does not hide the failure
                # from the flush (a write(2) cut short by it must not)
                with pytest.raises(GFSError):
                    await c.append_records(ino, record(0, 2))
                with pytest.raises(GFSError) as err:
                    await c.flush(ino)
                assert err.value.code in ("EIO", "UNAVAILABLE"), err.value
                await c.flush(ino)              # raised once: the queue is empty again

    trio.run(main)


@needs_fuse
def test_append_ignores_stale_kernel_size(cluster: Cluster, mounts: list[Path]) -> None:
    """Two mounts alternate appends within their attribute caches' lifetime:
    no record overwrites another (the kernel's cached size is not used)."""
    a, b = mounts[0] / "alt", mounts[1] / "alt"
    fa = os.open(a, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    fb = os.open(b, os.O_WRONLY | os.O_APPEND)
    try:
        for seq in range(20):
            os.write(fa, record(0, seq))
            os.write(fb, record(1, seq))
    finally:
        os.close(fa)
        os.close(fb)
    time.sleep(1.5)
    seen, padding, problems = parse(a.read_bytes())
    assert not problems and padding == 0
    assert set(seen) == {(w, s) for w in range(2) for s in range(20)}
    assert os.stat(b).st_size == 40 * REC


@needs_fuse
def test_record_meets_chunk_boundary(cluster: Cluster, mounts: list[Path]) -> None:
    """Records of 200 KiB (1 MiB chunks): the one that does not fit in chunk 0
    goes whole to chunk 1; chunk 0 is padded to the chunk size on every
    replica (its files are chunk_size long)."""
    size = 200 * 1024
    path = mounts[0] / "big"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for seq in range(8):                      # 5 per chunk: 1000 KiB, then padding
            assert os.write(fd, record(seq % 3, seq, size)) == size
    finally:
        os.close(fd)
    data = path.read_bytes()
    seen, padding, problems = parse(data, size)
    assert not problems
    assert sorted(s for _, s in seen) == list(range(8))
    assert padding == CS - 5 * size                # chunk 0's tail
    assert len(data) == CS + 3 * size
    for k in range(5, 8):                           # chunk 1 starts with record 5
        assert data[CS + (k - 5) * size:][:14] == record(k % 3, k, size)[:14]
    handle = _handles(cluster, path)[0]
    files = list(cluster.data.glob(f"chunks/*/{handle:016x}.chunk"))
    assert len(files) == 3
    assert all(f.stat().st_size == CS for f in files)


@needs_fuse
def test_big_write_becomes_several_records(cluster: Cluster, mounts: list[Path]) -> None:
    """A write() over chunk_size/4 is appended as several records, in order."""
    blob = bytes(range(1, 256)) * 2000                # 510,000 bytes > 256 KiB
    path = mounts[0] / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        assert os.write(fd, blob) == len(blob)
    finally:
        os.close(fd)
    assert path.read_bytes() == blob


def _handles(cluster: Cluster, path: Path) -> list[int]:
    async def main() -> list[int]:
        async with rpc.make_http() as http:
            info = await rpc.call(http, cluster.url, "fileinfo", {"ino": os.stat(path).st_ino})
            return [c["handle"] for c in info["chunks"]]
    return trio.run(main)


# ---------------------------------------------------------------- client library

def _config(cluster: Cluster) -> ClientConfig:
    return dataclasses.replace(ClientConfig(), master_url=cluster.url, retries=3,
                               request_timeout=5.0)


def test_client_append(cluster: Cluster) -> None:
    """Two clients, 8 tasks each, appending 1 KiB and 100 KiB records
    concurrently: each append returns a distinct offset at which the whole
    record reads back; nothing overlaps; records larger than chunk_size/4
    are EINVAL; a record never crosses a chunk boundary."""
    per_task = 20

    async def main() -> None:
        with trio.fail_after(120):
            async with Client.open(_config(cluster)) as c1, Client.open(_config(cluster)) as c2:
                ino = (await c1.create(1, b"lib", stat.S_IFREG | 0o644, 0, 0))["ino"]
                assert await c1.max_record() == CS // 4
                with pytest.raises(GFSError) as err:
                    await c1.append(ino, b"x" * (CS // 4 + 1))
                assert err.value.code == "EINVAL"
                with pytest.raises(GFSError):
                    await c1.append(ino, b"")
                placed: dict[int, bytes] = {}

                async def task(client: Client, wid: int) -> None:
                    for seq in range(per_task):
                        size = 100 * 1024 if seq % 5 == 4 else REC
                        rec = record(wid, seq, size)
                        off = await client.append(ino, rec)
                        assert off not in placed
                        placed[off] = rec

                async with trio.open_nursery() as nursery:
                    for wid in range(16):
                        nursery.start_soon(task, c1 if wid % 2 else c2, wid)
                spans = sorted((off, off + len(r)) for off, r in placed.items())
                for (_, e1), (s2, _) in zip(spans, spans[1:]):
                    assert e1 <= s2, "overlapping records"
                for off, rec in placed.items():
                    assert off // CS == (off + len(rec) - 1) // CS, "record split across chunks"
                # close-to-open: once both writers flushed, the size covers every record
                await c1.flush(ino)
                await c2.flush(ino)
                reader = c2
                size = (await reader.getattr(ino))["size"]
                assert size == spans[-1][1]
                for off, rec in placed.items():
                    assert await reader.read(ino, off, len(rec)) == rec
                # a fresh client sees every record where append said
                async with Client.open(_config(cluster)) as c3:
                    data = await c3.read(ino, 0, size)
                seen = Counter()
                pos = 0
                for off, rec in sorted(placed.items()):
                    assert data[pos:off].strip(b"\0") == b""
                    assert data[off:off + len(rec)] == rec
                    seen[rec[:14]] += 1
                    pos = off + len(rec)
                assert len(placed) == 16 * per_task
                print(f"client appends: {c1.appender.appends + c2.appender.appends} records, "
                      f"{c1.appender.paddings + c2.appender.paddings} chunk paddings, "
                      f"{c1.appender.retries + c2.appender.retries} retries, file {size} bytes")

    trio.run(main)


def test_client_append_after_write(cluster: Cluster) -> None:
    """Appends go after data written with plain writes (and after a file size
    that ends beyond the last chunk's data, e.g. a hole from truncate)."""
    async def main() -> None:
        with trio.fail_after(60):
            async with Client.open(_config(cluster)) as c:
                ino = (await c.create(1, b"mixed", stat.S_IFREG | 0o644, 0, 0))["ino"]
                await c.write(ino, 0, b"a" * 1000)
                off = await c.append(ino, b"record-1")
                assert off == 1000
                await c.truncate(ino, CS + 5000)          # a hole up to 1 MiB + 5000
                off = await c.append(ino, b"record-2")
                assert off == CS + 5000
                assert await c.read(ino, off, 8) == b"record-2"
                assert (await c.getattr(ino))["size"] == CS + 5008
                await c.fsync(ino)

    trio.run(main)


def test_client_append_survives_dead_chunkd(cluster: Cluster) -> None:
    """kill -9 a chunkd while 8 tasks append: every acknowledged record is
    present and whole at the offset append returned, and there once: a retry
    carries its record id and lands where the failed attempt did (issue 12)."""
    placed: dict[int, bytes] = {}

    async def main() -> None:
        with trio.fail_after(120):
            cfg = dataclasses.replace(_config(cluster), retries=5)   # 7.5 s: past death detection
            async with Client.open(cfg) as c:
                ino = (await c.create(1, b"fault", stat.S_IFREG | 0o644, 0, 0))["ino"]

                async def task(wid: int) -> None:
                    for seq in range(60):
                        rec = record(wid, seq)
                        placed[await c.append(ino, rec)] = rec

                async def killer() -> None:
                    while len(placed) < 150:
                        await trio.sleep(0.01)
                    cluster.servers[1].kill()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(killer)
                    for wid in range(8):
                        nursery.start_soon(task, wid)
                await c.flush(ino)
                size = (await c.getattr(ino))["size"]
                data = await c.read(ino, 0, size)
                for off, rec in placed.items():
                    assert data[off:off + len(rec)] == rec
                seen, padding, problems = parse(data)
                report("after a chunkd died", seen, padding, len(data))
                print(f"retries {c.appender.retries}")
                assert not problems, problems[:3]
                assert set(seen) == {(w, s) for w in range(8) for s in range(60)}
                twice = {r: n for r, n in seen.items() if n > 1}
                assert not twice, f"appended more than once: {twice}"

    trio.run(main)
