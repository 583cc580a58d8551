"""Crashes (kill -9) in the middle of work; nothing acknowledged may be lost.

- the master during a create-and-write storm from several processes: each
  records the files whose create, write and fsync all returned success; after
  the master restarts every one of them is there with its content;
- mount.py during writes: after a remount every file fsync'd before the kill is
  intact;
- a chunkd in the middle of a client write: the write completes through the
  other replicas and the chunk is re-replicated.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from faultkit import (bounded, daemon, file_chunks, read_uncached, replica_ids, rpc, running,
                      servers, sha, wait_for, write_fsync)
from gfsfs.tools.localcluster import Mount

CS = TEST_CHUNK_SIZE

# One writer process: create, write, fsync, close files until told to stop;
# a line "name sha256" is appended (and fsync'd, on the local disk) for every
# file whose every step returned success. Failures (the master is down) are
# counted and the writer goes on.
WRITER = r"""
import hashlib, os, random, sys, time
mnt, tag, log, stop = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rnd = random.Random(tag)
ok = failed = 0
i = 0
with open(log, "a") as out:
    while not os.path.exists(stop):
        name = f"{tag}-{i}"
        i += 1
        data = rnd.randbytes(rnd.choice([100, 5000, 300000, 1100000]))
        try:
            fd = os.open(os.path.join(mnt, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            failed += 1
            time.sleep(0.05)
            continue
        out.write(f"{name} {hashlib.sha256(data).hexdigest()} {len(data)}\n")
        out.flush()
        os.fsync(out.fileno())
        ok += 1
print(f"{tag}: {ok} ok, {failed} failed", flush=True)
"""


def read_acked(logs: list[Path]) -> dict[str, tuple[str, int]]:
    out = {}
    for p in logs:
        if p.exists():
            for line in p.read_text().splitlines():
                name, digest, size = line.split()
                out[name] = (digest, int(size))
    return out


@needs_fuse
def test_master_kill9_during_create_write_storm(tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, hosts=False,
                 mount_opts=["--set", "client.request_timeout=3", "--set", "client.retries=6",
                             "--set", "client.chunkd_timeout=3"]) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        work = tmp_path / "writers"
        work.mkdir()
        stop = work / "stop"
        logs = [work / f"w{k}.log" for k in range(4)]
        procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(mnt), f"w{k}", str(logs[k]),
                                   str(stop)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for k in range(4)]
        try:
            time.sleep(3)
            before = len(read_acked(logs))
            c.restart_master(kill=True)          # kill -9, then start on the same port
            print(f"{before} files acknowledged before the master was killed")
            time.sleep(5)
        finally:
            stop.touch()
            outs = []
            for p in procs:
                try:
                    outs.append(p.communicate(timeout=60)[0])
                except subprocess.TimeoutExpired:
                    p.kill()
                    outs.append(p.communicate()[0])
        print("".join(outs))
        acked = read_acked(logs)
        assert len(acked) > before > 0, (before, len(acked))
        wait_for("chunkds registered with the new master",
                 lambda: rpc(c.url, "cluster_status")["chunkds_alive"] == 3, 20)
        bad = []
        for name, (digest, size) in sorted(acked.items()):
            data = read_uncached(mnt / name)
            if len(data) != size or sha(data) != digest:
                bad.append((name, size, len(data)))
        assert not bad, bad[:10]
        print(f"{len(acked)} acknowledged files, all intact after the master's kill -9")


@needs_fuse
def test_mount_kill9_during_writes_then_remount(tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, hosts=False) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        acked: dict[str, bytes] = {}
        stop = threading.Event()
        errors: list[str] = []

        def writer(k: int) -> None:
            i = 0
            while not stop.is_set():
                name = f"t{k}-{i}"
                i += 1
                data = os.urandom([1000, 200000, 1500000][i % 3])
                try:
                    write_fsync(mnt / name, data)
                except OSError as exc:
                    errors.append(repr(exc))
                    return
                acked[name] = data

        threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(2.5)
        m.kill()                               # kill -9 mount.py, then fusermount3 -u
        stop.set()
        for t in threads:
            t.join(15)
        assert not any(t.is_alive() for t in threads), "a writer is stuck on the dead mount"
        assert acked, errors
        m2 = Mount(c.url, mnt, c.logs / "mount2.out")
        try:
            m2.start()
            for name, data in acked.items():
                got = read_uncached(mnt / name)
                assert sha(got) == sha(data), name
        finally:
            m2.stop()
        print(f"{len(acked)} fsync'd files intact after kill -9 of mount.py ({errors[:1]})")


@needs_fuse
def test_chunkd_kill9_during_client_write(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 4, hosts=False,
                 mount_opts=["--set", "client.chunkd_timeout=3",
                             "--set", f"client.upload_chunk_size={CS // 4}"]) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        wait_for("4 chunkds", lambda: rpc(c.url, "cluster_status")["chunkds_alive"] == 4, 10)
        data = os.urandom(8 * CS + 123)
        progress = {"written": 0}

        def slow_write() -> None:
            fd = os.open(mnt / "big", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                step = CS // 4
                for off in range(0, len(data), step):
                    os.pwrite(fd, data[off:off + step], off)
                    progress["written"] = off + step
                    if (off + step) % CS == 0:
                        os.fsync(fd)        # so chunks exist on chunkds as we go
                    time.sleep(0.05)
                os.fsync(fd)
            finally:
                os.close(fd)

        result: dict[str, object] = {}
        t = threading.Thread(target=lambda: result.update(
            out=bounded("slow write", slow_write, 60)), daemon=True)
        t.start()
        wait_for("half written", lambda: progress["written"] >= 3 * CS, 30, every=0.02)
        # the master lists a chunk as soon as it allocates it, before the
        # chunkds have made it: wait for the last one to have its replicas
        chunks = wait_for("chunks on chunkds", lambda: (
            (cs := file_chunks(c.url, "big")) and cs[-1]["replicas"] and cs), 10)
        victim_id = sorted(replica_ids(chunks[-1]))[0]
        daemon(c, victim_id).kill()
        t.join(70)
        err, took = result["out"]  # type: ignore[misc]
        assert err is None, err
        print(f"write finished {took:.1f}s after it started, a chunkd killed midway")
        assert read_uncached(mnt / "big") == data

        def healed() -> bool:
            chs = file_chunks(c.url, "big")
            return all(len(ch["replicas"]) == 3 and victim_id not in replica_ids(ch)
                       for ch in chs)
        wait_for("every chunk re-replicated without the killed chunkd", healed, 30)
        assert not servers(c.url)[victim_id]["alive"]
        assert read_uncached(mnt / "big") == data
