"""Fixtures: a real cluster (master + chunkd processes on free loopback ports in a
temp dir) and real mounts of it (mount.py in a subprocess).

Everything started here is stopped here by PID, and every mount is unmounted
(fusermount3 -u, then -uz), even when a test fails; a failing test prints the
daemons' logs.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gfsfs.localcluster import Cluster, Mount, is_mounted

# Small chunks so that modest files cross many chunk boundaries.
TEST_CHUNK_SIZE = 1 << 20
CLUSTER_SETTINGS = [
    f"master.chunk_size={TEST_CHUNK_SIZE}",
    "master.heartbeat_interval=0.5",
    "chunk_server.heartbeat_interval=0.5",
    "chunk_server.reserve_bytes=0",
]

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return any(getattr(node, f"rep_{w}", None) is not None and getattr(node, f"rep_{w}").failed
               for w in ("setup", "call"))


def make_cluster(base: Path, chunkds: int = 3, extra: list[str] | None = None,
                 **kw: object) -> Cluster:
    return Cluster(base, chunkds, extra=CLUSTER_SETTINGS + list(extra or []), **kw)  # type: ignore[arg-type]


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A fresh master + 3 chunkds for one test."""
    c = make_cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        if _failed(request):
            print(c.logs_text())
        c.stop()


@pytest.fixture
def mounted(cluster: Cluster, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """``cluster`` mounted at tmp_path/mnt; yields the mount point."""
    m = Mount(cluster.url, tmp_path / "mnt", cluster.logs / "mount.out")
    try:
        m.start()
        yield m.mountpoint
    finally:
        if _failed(request) and m.daemon is not None:
            print(f"===== mount =====\n{m.daemon.log_tail()}")
        m.stop()


@contextlib.contextmanager
def mounted_cluster(base: Path, mountpoint: Path,
                    extra: list[str] | None = None) -> Iterator[tuple[Cluster, Path]]:
    """A cluster under ``base`` mounted at ``mountpoint``; both stopped on exit."""
    c = make_cluster(base, extra=extra)
    m = Mount("", mountpoint, base / "logs" / "mount.out")
    try:
        c.start()
        m.master_url = c.url
        m.start()
        yield c, m.mountpoint
    finally:
        m.stop()
        c.stop()


@pytest.fixture(scope="module")
def shared_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, Path]]:
    """One cluster and mount shared by a module's tests (each test uses its own
    directory inside it)."""
    base = tmp_path_factory.mktemp("cluster")
    # world-traversable, so tests can act as a non-root user on the mount
    mountpoint = Path(tempfile.mkdtemp(prefix="gfsfs-mnt-"))
    mountpoint.chmod(0o755)
    try:
        with mounted_cluster(base, mountpoint) as both:
            yield both
    finally:
        if not is_mounted(mountpoint):
            shutil.rmtree(mountpoint, ignore_errors=True)


@pytest.fixture
def mnt(shared_mount: tuple[Cluster, Path], request: pytest.FixtureRequest) -> Iterator[Path]:
    """A fresh directory on the module's shared mount."""
    c, mountpoint = shared_mount
    d = mountpoint / request.node.name.replace("[", "_").replace("]", "")[:100]
    d.mkdir()
    try:
        yield d
    finally:
        if _failed(request):
            print(c.logs_text())
            print(f"===== mount =====\n{(c.logs / 'mount.out').read_text()[-4000:]}")
