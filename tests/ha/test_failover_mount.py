"""Failover under load through real mounts: two mounts create files, a cp
of a large file into the mount is under way, and the elected primary is
killed with SIGKILL. The mounts go on once the shadow is elected; every
create that returned is there, the cp succeeds with the same sha256."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import CLUSTER_SETTINGS, needs_fuse
from gfsfs.tools.etcd import Etcd, etcd_binary, free_port
from gfsfs.tools.localcluster import Cluster, Daemon, Mount
from test_failover import TTL, master, primary_of
from test_shadows import call, wait_for

pytestmark = [needs_fuse, pytest.mark.skipif(etcd_binary() is None, reason="needs etcd")]
CP_BYTES = int(os.environ.get("GFS_HA_CP_BYTES", str(64 << 20)))    # make soak: 1 GiB


@pytest.fixture
def ha_cluster(tmp_path: Path) -> Iterator[tuple[list[Daemon], list[Mount]]]:
    etcd = Etcd(tmp_path)
    masters: list[Daemon] = []
    cluster = Cluster(tmp_path, 3, extra=CLUSTER_SETTINGS)
    mounts: list[Mount] = []
    try:
        etcd.start()
        ports = [free_port("127.0.0.2"), free_port("127.0.0.3")]
        masters = [master(tmp_path, "master-a", "127.0.0.2", etcd.url, "primary"),
                   master(tmp_path, "master-b", "127.0.0.3", etcd.url, "shadow")]
        for d, port in zip(masters, ports):
            d.argv[d.argv.index("--port") + 1] = str(port)
            d.start()
        wait_for("master a to be elected", lambda: primary_of(masters[0]) is masters[0])
        cluster.master = masters[0]
        cluster.also_masters = [masters[1].url]
        for i in range(3):
            cluster.add_chunkd(i)
        spec = ",".join(d.url for d in masters)
        for name in ("m1", "m2"):
            mounts.append(Mount(spec, tmp_path / name, tmp_path / "logs" / f"{name}.out"))
            mounts[-1].start()
        wait_for("b in the synchronous set", lambda: any(
            s["synchronous"] for s in call(masters[0].url, "ha_status")["shadows"]))
        yield masters, mounts
    finally:
        for m in mounts:
            m.stop()
        for d in cluster.servers:
            d.stop()
        for d in masters:
            d.stop()
        etcd.stop()


@pytest.mark.allow_errors
def test_kill9_of_the_primary_under_creates_and_a_cp(ha_cluster: tuple[list[Daemon], list[Mount]],
                                                     tmp_path: Path) -> None:
    masters, mounts = ha_cluster
    src = tmp_path / "src.bin"
    with open(src, "wb") as f:
        for _ in range(CP_BYTES >> 20):
            f.write(os.urandom(1 << 20))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    acked: dict[int, list[str]] = {0: [], 1: []}
    errors: list[BaseException] = []
    stop = threading.Event()

    def storm(i: int) -> None:
        n = 0
        try:
            while not stop.is_set():
                name = f"w{i}-{n}"
                (mounts[i].mountpoint / name).write_bytes(name.encode() * 50)
                acked[i].append(name)
                n += 1
        except BaseException as exc:     # a create that failed: the test fails
            errors.append(exc)
    writers = [threading.Thread(target=storm, args=(i,), daemon=True) for i in (0, 1)]
    for t in writers:
        t.start()
    cp = subprocess.Popen(["cp", str(src), str(mounts[0].mountpoint / "big.bin")],
                          stderr=subprocess.PIPE, text=True)
    wait_for("some creates", lambda: min(len(v) for v in acked.values()) >= 10)
    masters[0].kill()
    killed = time.monotonic()
    before = {i: len(v) for i, v in acked.items()}
    wait_for("creates to go on after the failover",
             lambda: all(len(acked[i]) > before[i] + 5 for i in (0, 1)), timeout=6 * TTL)
    print(f"creates going on {time.monotonic() - killed:.1f} s after kill -9")
    stop.set()
    for t in writers:
        t.join(30)
    _, err = cp.communicate(timeout=300)
    assert cp.returncode == 0, err
    assert not errors, errors
    assert primary_of(masters[1]) is masters[1]
    for i in (0, 1):
        present = set(os.listdir(mounts[1 - i].mountpoint))       # seen from the other mount
        missing = [n for n in acked[i] if n not in present]
        assert not missing, f"{len(missing)} acknowledged creates missing: {missing[:5]}"
    got = hashlib.sha256((mounts[1].mountpoint / "big.bin").read_bytes()).hexdigest()
    assert got == digest
