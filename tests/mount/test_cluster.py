"""Real processes: restarts, several mounts, a corrupt replica, bad input."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgpack
import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from gfsfs.tools.localcluster import ROOT, Cluster, Mount


def mount(cluster: Cluster, path: Path) -> Mount:
    return Mount(cluster.url, path, cluster.logs / f"mount-{path.name}.out").start()


def wait_for(cond, timeout: float = 20.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rpc(url: str, name: str, body: object) -> tuple[int, dict]:
    r = httpx.post(f"{url}/rpc/{name}", content=msgpack.packb(body, use_bin_type=True))
    return r.status_code, msgpack.unpackb(r.content, raw=False, strict_map_key=False)


@needs_fuse
def test_master_kill9_restart_keeps_everything(cluster: Cluster, tmp_path: Path) -> None:
    m = mount(cluster, tmp_path / "m1")
    try:
        data = os.urandom(3 * TEST_CHUNK_SIZE + 5)
        (m.mountpoint / "d").mkdir()
        (m.mountpoint / "d" / "f").write_bytes(data)
        os.chmod(m.mountpoint / "d" / "f", 0o604)
        os.utime(m.mountpoint / "d" / "f", ns=(1_000_000_000, 2_000_000_000))
        os.chown(m.mountpoint / "d" / "f", 42, 43)
        os.symlink("f", m.mountpoint / "d" / "s")
        os.rename(m.mountpoint / "d", m.mountpoint / "e")
    finally:
        m.stop()
    cluster.restart_master(kill=True)
    # chunkds re-register; locations are rebuilt from their reports
    m = mount(cluster, tmp_path / "m2")
    try:
        f = m.mountpoint / "e" / "f"
        wait_for(lambda: f.exists(), what="the file after restart")
        st = f.stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o604, 42, 43)
        assert st.st_mtime_ns == 2_000_000_000
        assert os.readlink(m.mountpoint / "e" / "s") == "f"
        assert hashlib.sha256(f.read_bytes()).digest() == hashlib.sha256(data).digest()
        assert not (m.mountpoint / "d").exists()
    finally:
        m.stop()


@needs_fuse
def test_mount_survives_master_restart(cluster: Cluster, tmp_path: Path) -> None:
    m = mount(cluster, tmp_path / "m")
    try:
        (m.mountpoint / "before").write_text("1")
        cluster.restart_master(kill=True)
        (m.mountpoint / "after").write_text("2")
        assert sorted(os.listdir(m.mountpoint)) == ["after", "before"]
        assert (m.mountpoint / "before").read_text() == "1"
    finally:
        m.stop()


@needs_fuse
def test_chunkd_restart_keeps_id_port_and_chunks(cluster: Cluster, tmp_path: Path) -> None:
    m = mount(cluster, tmp_path / "m")
    try:
        data = os.urandom(2 * TEST_CHUNK_SIZE)
        (m.mountpoint / "f").write_bytes(data)
        old_url = cluster.servers[0].url
        chunk_dir = cluster.data / "chunks" / "chunk1"
        before = sorted(p.name for p in chunk_dir.iterdir() if p.suffix == ".chunk")
        assert before, "chunk1 holds no chunks"
        cluster.restart_chunkd(0)
        assert cluster.servers[0].url == old_url
        after = sorted(p.name for p in chunk_dir.iterdir() if p.suffix == ".chunk")
        assert after == before
        for i in (1, 2):
            cluster.servers[i].stop()
        # only the restarted chunkd is left: reads must come from it
        wait_for(lambda: _readable(m.mountpoint / "f", data), timeout=30,
                 what="reading from the restarted chunkd alone")
    finally:
        m.stop()


def _readable(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except OSError:
        return False


@needs_fuse
def test_two_mounts_see_each_other(cluster: Cluster, tmp_path: Path) -> None:
    a = mount(cluster, tmp_path / "a")
    try:
        b = mount(cluster, tmp_path / "b")
        try:
            (a.mountpoint / "from_a").write_bytes(b"hello from a")
            wait_for(lambda: (b.mountpoint / "from_a").exists(), what="a's file in b")
            assert (b.mountpoint / "from_a").read_bytes() == b"hello from a"
            (b.mountpoint / "dir_b").mkdir()
            wait_for(lambda: (a.mountpoint / "dir_b").is_dir(), what="b's dir in a")
        finally:
            b.stop()
    finally:
        a.stop()


# a replica is corrupted on purpose (a read or the scrubber reports it at ERROR)
@pytest.mark.allow_errors
@needs_fuse
def test_corrupt_replica_is_never_served(cluster: Cluster, tmp_path: Path) -> None:
    m = mount(cluster, tmp_path / "m")
    try:
        data = os.urandom(TEST_CHUNK_SIZE)
        (m.mountpoint / "f").write_bytes(data)
        files = sorted((cluster.data / "chunks").glob("*/*.chunk"))
        assert len(files) == 3
        for path in files[:2]:  # corrupt two of the three replicas
            with open(path, "r+b") as fh:
                fh.seek(TEST_CHUNK_SIZE // 2)
                fh.write(b"CORRUPTED!!!")
        m.stop()
        m = mount(cluster, tmp_path / "m2")
        for _ in range(5):
            assert (m.mountpoint / "f").read_bytes() == data
    finally:
        m.stop()


def test_bad_requests_get_4xx_and_daemons_keep_serving(cluster: Cluster) -> None:
    targets = [cluster.url, cluster.servers[0].url]
    for url, name in zip(targets, ["lookup", "commit"]):
        r = httpx.post(f"{url}/rpc/{name}", content=b"\xc1\xff not msgpack")
        assert r.status_code == 400
        assert msgpack.unpackb(r.content)["error"]["code"] == "BADREQ"
        r = httpx.get(f"{url}/no/such/route")
        assert r.status_code == 404
        assert msgpack.unpackb(r.content)["error"]["code"] == "NOROUTE"
        r = httpx.post(f"{url}/rpc/nosuch", content=msgpack.packb({}))
        assert r.status_code == 404
    status, body = rpc(cluster.url, "getattr", {"ino": "one"})
    assert status == 400 and body["error"]["code"] == "BADREQ"
    status, body = rpc(cluster.url, "getattr", {"ino": 999999})
    assert status == 404 and body["error"]["code"] == "ENOENT"
    r = httpx.post(f"{cluster.url}/rpc/lookup", content=b"\x80" + b"x" * (17 << 20))
    assert r.status_code == 413
    r = httpx.get(f"{cluster.servers[0].url}/chunk/123456789?offset=0&length=10&version=1")
    assert r.status_code == 404
    assert msgpack.unpackb(r.content)["error"]["code"] == "NOCHUNK"
    r = httpx.get(f"{cluster.servers[0].url}/chunk/../../etc/passwd?offset=0&length=10")
    assert 400 <= r.status_code < 500
    for d in [cluster.master, *cluster.servers]:
        assert d is not None and d.alive()
    status, body = rpc(cluster.url, "getattr", {"ino": 1})
    assert status == 200 and body["ino"] == 1


@pytest.mark.parametrize("argv, needle", [
    (["-m", "master", "--set", "master.no_such_key=1"], "no_such_key"),
    (["-m", "master", "--set", "master.port='x'"], "port"),
    (["-m", "chunkd", "--set", "chunk_server.heartbeat_interval=-1"], "heartbeat_interval"),
    (["mount.py", "http://127.0.0.1:1", "/nonexistent", "--set", "client.bogus=1"], "bogus"),
])
def test_config_errors_name_the_key(argv: list[str], needle: str) -> None:
    r = subprocess.run([sys.executable] + argv, cwd=ROOT, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0
    assert needle in r.stderr


def test_every_command_has_help() -> None:
    for argv in (["-m", "master"], ["-m", "chunkd"], ["mount.py"], ["-m", "gfsfs.tools.localcluster"]):
        r = subprocess.run([sys.executable] + argv + ["--help"], cwd=ROOT, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0 and "usage" in r.stdout.lower()


def _fsyncs(url: str) -> int:
    r = httpx.get(f"{url}/status")
    return int(msgpack.unpackb(r.content, raw=False)["fsyncs"])


@needs_fuse
def test_fsync_reaches_every_replica(cluster: Cluster, tmp_path: Path) -> None:
    m = mount(cluster, tmp_path / "m")
    try:
        path = m.mountpoint / "f"
        with open(path, "wb") as f:
            f.write(os.urandom(100_000))
            f.flush()
            before = [_fsyncs(s.url) for s in cluster.servers]
            os.fsync(f.fileno())
            after = [_fsyncs(s.url) for s in cluster.servers]
        assert all(a > b for a, b in zip(after, before)), (before, after)
        # a close without fsync does not force the disks
        with open(path, "r+b") as f:
            f.write(b"x")
        assert [_fsyncs(s.url) for s in cluster.servers] == after
    finally:
        m.stop()


@needs_fuse
def test_logs_are_named_by_component_and_day(cluster: Cluster, tmp_path: Path) -> None:
    m = mount(cluster, tmp_path / "m")
    try:
        (m.mountpoint / "x").write_text("x")
    finally:
        m.stop()
    day = time.strftime("%Y-%m-%d")
    for component in ("master", "chunk_server", "client"):
        log = cluster.logs / f"{component}_{day}.log"
        assert log.exists() and log.stat().st_size > 0, log
