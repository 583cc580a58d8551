"""Disk full, by configuration (``[chunk_server] capacity_bytes`` small,
``reserve_bytes`` 0): a full chunkd says so in its heartbeats and gets no new
chunks; when every chunkd is full, writes fail with ENOSPC through the mount;
nothing written before is damaged."""
from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from faultkit import (file_chunks, read_uncached, replica_ids, running, servers, sha, wait_for,
                      write_fsync)

CS = TEST_CHUNK_SIZE


@needs_fuse
def test_full_chunkd_gets_no_chunks_then_enospc(tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    small = [f"chunk_server.capacity_bytes={2 * CS}"]
    roomy = [f"chunk_server.capacity_bytes={4 * CS}"]
    with running(tmp_path, request, 3, hosts=False,
                 chunk_sets=[small, roomy, roomy]) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        a = os.urandom(2 * CS)                    # fills chunk1 exactly
        write_fsync(mnt / "a", a)
        assert all(len(ch["replicas"]) == 3 for ch in file_chunks(c.url, "a"))
        wait_for("chunk1's heartbeat says it is full",
                 lambda: servers(c.url)["chunk1"]["free_bytes"] == 0, 10)
        time.sleep(1.2)                           # past the master's allocation window

        b = os.urandom(2 * CS)                    # fills chunk2 and chunk3
        write_fsync(mnt / "b", b)
        for ch in file_chunks(c.url, "b"):
            assert "chunk1" not in replica_ids(ch), ch
            assert len(ch["replicas"]) == 2
        wait_for("every chunkd full",
                 lambda: all(s["free_bytes"] == 0 for s in servers(c.url).values()), 10)
        time.sleep(1.2)

        # now nothing fits anywhere: ENOSPC, at write, fsync or close
        seen: list[int] = []
        fd = os.open(mnt / "c", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            try:
                for _ in range(8):
                    os.write(fd, os.urandom(CS // 2))
                os.fsync(fd)
            except OSError as exc:
                seen.append(exc.errno)
        finally:
            try:
                os.close(fd)
            except OSError as exc:
                seen.append(exc.errno)
        assert seen and seen[0] == errno.ENOSPC, seen
        # a small new file (its first write rides on the chunk's creation): the same
        err = None
        try:
            (mnt / "small").write_bytes(b"s" * 4096)
        except OSError as exc:
            err = exc.errno
        assert err == errno.ENOSPC, err

        # an overwrite inside existing chunks needs no new space: still works
        patch = os.urandom(1000)
        fd = os.open(mnt / "b", os.O_WRONLY)
        os.pwrite(fd, patch, 10)
        os.fsync(fd)
        os.close(fd)
        b = b[:10] + patch + b[1010:]
        # growing a file on full chunkds: ENOSPC, and the file is undamaged
        fd = os.open(mnt / "a", os.O_WRONLY | os.O_APPEND)
        err = None
        try:
            os.write(fd, os.urandom(CS))
            os.fsync(fd)
        except OSError as exc:
            err = exc.errno
        finally:
            try:
                os.close(fd)
            except OSError as exc:
                err = err or exc.errno
        assert err == errno.ENOSPC, err
        assert sha(read_uncached(mnt / "a")) == sha(a)
        assert sha(read_uncached(mnt / "b")) == sha(b)
        assert os.stat(mnt / "a").st_size == len(a)
