"""Gray failure: a chunkd that is alive (its sockets accept) but does nothing
(SIGSTOP). The mount must not hang on it: reads time out on it after
``[client] chunkd_timeout`` and go to another replica, writes finish on a chain
without it (the master stops naming it once it misses heartbeats), and after
SIGCONT it registers again and gets replicas again."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from faultkit import (bounded, daemon, file_chunks, read_uncached, replica_ids, rpc, running,
                      servers, sha, wait_for, write_fsync)

CS = TEST_CHUNK_SIZE
CHUNKD_TIMEOUT = 1.5
BOUND = 12.0          # seconds any one file operation may take while the chunkd is stopped


@needs_fuse
def test_sigstop_chunkd_mount_never_hangs(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, extra=["chunk_server.peer_timeout=1.5"],
                 mount_opts=["--set", f"client.chunkd_timeout={CHUNKD_TIMEOUT}"]) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        a = os.urandom(3 * CS + 12345)
        write_fsync(mnt / "a", a)
        chunks = file_chunks(c.url, "a")
        assert all(len(ch["replicas"]) == 3 for ch in chunks)
        victim_id = sorted(replica_ids(chunks[0]))[0]
        victim = daemon(c, victim_id)
        # the mount has a's locations (with the victim) cached from writing it

        victim.signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            # reads: each op bounded, the victim tried at most once per chunk
            got, took = bounded("read while stopped", lambda: read_uncached(mnt / "a"), BOUND)
            assert not isinstance(got, Exception), got
            assert sha(got) == sha(a)
            print(f"read with a stopped replica: {took:.2f}s")

            # writes to an existing file (cached lease/chain include the victim)
            patch = os.urandom(CS + 777)

            def overwrite() -> None:
                fd = os.open(mnt / "a", os.O_WRONLY)
                try:
                    os.pwrite(fd, patch, CS // 2)
                    os.fsync(fd)
                finally:
                    os.close(fd)

            err, took_w = bounded("overwrite while stopped", overwrite, BOUND)
            assert err is None, err
            a = a[:CS // 2] + patch + a[CS // 2 + len(patch):]
            print(f"overwrite + fsync with a stopped replica: {took_w:.2f}s")

            # a new file
            b = os.urandom(2 * CS + 99)
            err, took_b = bounded("new file while stopped",
                                  lambda: write_fsync(mnt / "b", b), BOUND)
            assert err is None, err
            print(f"new file + fsync with a stopped replica: {took_b:.2f}s")

            wait_for("the master declares the stopped chunkd dead",
                     lambda: not servers(c.url)[victim_id]["alive"], 10)
            for name in ("a", "b"):
                for ch in file_chunks(c.url, name):
                    assert victim_id not in replica_ids(ch)
            got, _ = bounded("read b", lambda: read_uncached(mnt / "b"), BOUND)
            assert got == b
            got, _ = bounded("read a", lambda: read_uncached(mnt / "a"), BOUND)
            assert got == a
        finally:
            victim.signal(signal.SIGCONT)
        print(f"stopped for {time.monotonic() - stopped_at:.1f}s")

        # back: registered again, and used again (b's chunks get their third
        # replica on it: it is the only chunkd that lacks one)
        wait_for("the chunkd is alive again", lambda: servers(c.url)[victim_id]["alive"], 15)

        def all_three() -> bool:
            return all(len(ch["replicas"]) == 3 and victim_id in replica_ids(ch)
                       for name in ("a", "b") for ch in file_chunks(c.url, name))
        wait_for("every chunk back at 3 replicas, the resumed chunkd among them", all_three, 30)
        cc = os.urandom(CS + 5)
        write_fsync(mnt / "c", cc)
        assert all(victim_id in replica_ids(ch) for ch in file_chunks(c.url, "c"))
        # its stale copies of a (overwritten meanwhile) were replaced, not served
        for name, data in (("a", a), ("b", b), ("c", cc)):
            assert read_uncached(mnt / name) == data
        for ch in file_chunks(c.url, "a"):
            for r in ch["replicas"]:
                import httpx
                got = httpx.get(f"{r['addr']}/chunk/{ch['handle']}",
                                params={"offset": 0, "length": CS, "version": ch["version"]},
                                timeout=10).content
                assert got == a[ch["index"] * CS:(ch["index"] + 1) * CS], (r["id"], ch["index"])
        st = rpc(c.url, "cluster_status")
        assert st["lost"] == 0
