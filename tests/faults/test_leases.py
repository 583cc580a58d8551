"""Leases through a real cluster (GFS §3.1): extensions ride on heartbeats,
a rename revokes leases, no second primary while a lease may be in use, and a
replica that missed writes is stale (never served, deleted, replaced)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from conftest import needs_fuse
from faultkit import (daemon, file_chunks, read_uncached, replica_ids, rpc, running,
                      servers, wait_for, write_fsync, chunk_files)
from gfsfs.tools.localcluster import Mount

LEASE = ["master.lease_seconds=3"]


def pwrite_fsync(fd: int, data: bytes, off: int) -> None:
    os.pwrite(fd, data, off)
    os.fsync(fd)


@needs_fuse
def test_lease_extended_by_heartbeats_keeps_primary_and_version(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, extra=LEASE, hosts=False) as (c, m):
        assert m is not None
        f = m.mountpoint / "hot"
        fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            pwrite_fsync(fd, b"x" * 4096, 0)
            ch = file_chunks(c.url, "hot")[0]
            primary, version = ch["primary"]["id"], ch["version"]
            t0 = time.monotonic()
            i = 0
            while time.monotonic() - t0 < 10:          # > 3 lease lengths
                i += 1
                pwrite_fsync(fd, bytes([i % 256]) * 4096, (i % 16) * 4096)
                ch = file_chunks(c.url, "hot")[0]
                assert ch["primary"] is not None and ch["primary"]["id"] == primary, ch
                assert ch["version"] == version, (ch, version)
                time.sleep(0.2)
        finally:
            os.close(fd)
        st = rpc(c.url, "cluster_status")
        assert st["lease_extensions"] > 0, st
        # written, then idle: the lease lapses (no extension without mutations)
        wait_for("lease lapses", lambda: file_chunks(c.url, "hot")[0]["primary"] is None, 10)


@needs_fuse
def test_rename_revokes_leases(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, hosts=False) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        (mnt / "d").mkdir()
        fds = {}
        for name in ("f", "d/a", "d/b"):
            fds[name] = os.open(mnt / name, os.O_RDWR | os.O_CREAT, 0o644)
            pwrite_fsync(fds[name], b"1" * 1000, 0)
        try:
            f = file_chunks(c.url, "f")[0]
            assert f["primary"] is not None
            os.rename(mnt / "f", mnt / "g")
            g = file_chunks(c.url, "g")[0]
            assert g["primary"] is None and g["version"] == f["version"] + 1, (f, g)
            d = rpc(c.url, "lookup", parent=1, name=b"d")["ino"]
            before = {n: rpc(c.url, "fileinfo", ino=rpc(c.url, "lookup", parent=d,
                                                        name=n)["ino"])["chunks"][0]
                      for n in (b"a", b"b")}
            os.rename(mnt / "d", mnt / "e")
            for n in (b"a", b"b"):
                after = rpc(c.url, "fileinfo", ino=rpc(c.url, "lookup", parent=d,
                                                       name=n)["ino"])["chunks"][0]
                assert after["primary"] is None
                assert after["version"] == before[n]["version"] + 1
            # the writers go on (STALE, then a new lease) and nothing is lost
            for name in ("f", "d/a", "d/b"):
                pwrite_fsync(fds[name], b"2" * 1000, 1000)
        finally:
            for fd in fds.values():
                os.close(fd)
        for name in ("g", "e/a", "e/b"):
            assert read_uncached(mnt / name) == b"1" * 1000 + b"2" * 1000


@needs_fuse
def test_no_second_primary_before_unfenced_lease_expires(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, extra=["master.lease_seconds=6"], hosts=False,
                 mount_opts=["--set", "client.chunkd_timeout=2",
                             "--set", "client.request_timeout=20"]) as (c, m):
        assert m is not None
        f = m.mountpoint / "f"
        fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
        stopped = []
        try:
            pwrite_fsync(fd, b"a" * 5000, 0)
            ch = file_chunks(c.url, "f")[0]
            primary = ch["primary"]["id"]
            other = sorted(replica_ids(ch) - {primary})
            # the primary and one secondary freeze: the master can fence neither
            for cid in (primary, other[0]):
                daemon(c, cid).signal(signal.SIGSTOP)
                stopped.append(cid)
            t0 = time.monotonic()
            pwrite_fsync(fd, b"b" * 5000, 5000)
            took = time.monotonic() - t0
            ch = file_chunks(c.url, "f")[0]
            assert ch["primary"]["id"] == other[1], ch
            st = rpc(c.url, "cluster_status")
            assert st["lease_waits"] >= 1, st
            print(f"write with the primary frozen took {took:.1f}s")
        finally:
            for cid in stopped:
                daemon(c, cid).signal(signal.SIGCONT)
            os.close(fd)
        assert read_uncached(f) == b"a" * 5000 + b"b" * 5000


@needs_fuse
def test_stale_replica_detected_never_served_deleted_and_replaced(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 4, hosts=False,
                 mount_opts=["--set", "client.chunkd_timeout=2"]) as (c, m):
        assert m is not None
        mnt = m.mountpoint
        wait_for("4 chunkds", lambda: rpc(c.url, "cluster_status")["chunkds_alive"] == 4, 10)
        old = b"old!" * 5000
        write_fsync(mnt / "f", old)
        ch = file_chunks(c.url, "f")[0]
        handle = ch["handle"]
        victim = sorted(replica_ids(ch) - {(ch["primary"] or {}).get("id")})[0]
        d = daemon(c, victim)
        d.signal(signal.SIGSTOP)
        try:
            wait_for("victim declared dead", lambda: not servers(c.url)[victim]["alive"], 15)
            new = b"NEW!" * 5000
            fd = os.open(mnt / "f", os.O_WRONLY)
            try:
                pwrite_fsync(fd, new, 0)
            finally:
                os.close(fd)
        finally:
            d.signal(signal.SIGCONT)
        wait_for("victim back", lambda: servers(c.url)[victim]["alive"], 15)
        wait_for("stale replica deleted on disk", lambda: handle not in chunk_files(c, victim),
                 15)
        ch = file_chunks(c.url, "f")[0]
        assert victim not in replica_ids(ch)
        wait_for("chunk back at its goal", lambda: len(file_chunks(c.url, "f")[0]["replicas"]) == 3,
                 30)
        for k in range(3):
            m2 = Mount(c.url, tmp_path / f"fresh{k}", c.logs / f"fresh{k}.out")
            try:
                m2.start()
                for _ in range(5):
                    assert read_uncached(m2.mountpoint / "f") == new
            finally:
                m2.stop()
