"""Fixtures: a real cluster (master + chunkd processes on free loopback ports in a
temp dir) and real mounts of it (mount.py in a subprocess).

Everything started here is stopped here by PID, and every mount is unmounted
(fusermount3 -u, then -uz), even when a test fails; a failing test prints the
daemons' logs.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gfsfs.tools.localcluster import Cluster, Mount, is_mounted

# tiers, by directory: unit (pure logic, in-process), http (apps driven
# in-process), process (real daemons), ops (the FUSE Operations driven
# in-process against real daemons, no kernel mount), mount (real mounts),
# faults, ha (shadow masters, failover, the election through a real etcd);
# their modules share helpers (test_master_http.Harness, test_cli.gfs, opskit, ...)
TIERS = ("unit", "http", "process", "ops", "mount", "faults", "ha")
for _tier in TIERS:
    sys.path.insert(0, str(Path(__file__).parent / _tier))

# Small chunks so that modest files cross many chunk boundaries.
TEST_CHUNK_SIZE = 1 << 20
CLUSTER_SETTINGS = [
    f"master.chunk_size={TEST_CHUNK_SIZE}",
    "master.heartbeat_interval=0.5",
    "chunk_server.heartbeat_interval=0.5",
    "chunk_server.reserve_bytes=0",
]

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="needs /dev/fuse")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its tier (its directory): ``-m unit`` etc."""
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "faults":            # every test there breaks something on purpose
            item.add_marker(pytest.mark.allow_errors)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request: pytest.FixtureRequest) -> bool:
    node = request.node
    return any(getattr(node, f"rep_{w}", None) is not None and getattr(node, f"rep_{w}").failed
               for w in ("setup", "call"))


# what a daemon's log shows when a request or a loop hit a bug
LOG_BUGS = ("Traceback (most recent call last)", "Error in ASGI")
# a line logged at ERROR (gfsfs.common.logs.FORMAT: "date time LEVEL name[pid]: ...")
LOG_ERROR = re.compile(r"^\S+ \S+ ERROR ")


def _daemon_logs(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in root.glob("**/logs/*.out")}


def _new_lines(before: dict[Path, int], root: Path) -> list[tuple[Path, str]]:
    out = []
    for path, size in _daemon_logs(root).items():
        with open(path, "rb") as f:
            f.seek(before.get(path, 0) if before.get(path, 0) <= size else 0)
            text = f.read().decode("utf-8", "replace")
        out += [(path, line) for line in text.splitlines()]
    return out


@pytest.fixture(autouse=True)
def no_tracebacks_in_daemon_logs(request: pytest.FixtureRequest,
                                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fail a test during which any daemon it started (or shares) logged a
    traceback or an ERROR: a bug, even when the test's own checks passed. A
    test that provokes errors on purpose is marked ``allow_errors`` (and one
    that provokes a traceback ``allow_traceback``, which allows both); the
    faults tier, whose every test breaks something, allows errors."""
    root = tmp_path_factory.getbasetemp()
    before = _daemon_logs(root)
    yield
    if request.node.get_closest_marker("allow_traceback"):
        return
    errors_ok = request.node.get_closest_marker("allow_errors") is not None
    found = [f"{path}: {line}" for path, line in _new_lines(before, root)
             if any(b in line for b in LOG_BUGS) or (not errors_ok and LOG_ERROR.match(line))]
    if found:
        pytest.fail("daemons logged tracebacks or errors during the test:\n"
                    + "\n".join(found[:20]), pytrace=False)


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


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One master + 3 chunkds shared by a module's tests."""
    c = make_cluster(tmp_path_factory.mktemp("module"))
    try:
        c.start()
        yield c
    finally:
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
def mounted_cluster(base: Path, mountpoint: Path, extra: list[str] | None = None,
                    secure: bool = True) -> Iterator[tuple[Cluster, Path]]:
    """A cluster under ``base`` mounted at ``mountpoint``; both stopped on exit.
    Secured (a cluster secret, chunk tokens) unless told otherwise: every
    POSIX test then goes through the authenticated paths, as ``make run`` does."""
    c = make_cluster(base, extra=extra, secure=secure)
    m = Mount("", mountpoint, base / "logs" / "mount.out", options=c.secret_sets())
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
