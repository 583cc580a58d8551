"""A real FUSE mount of a secured cluster under mutual TLS: the mount
verifies the master and chunkds against [tls] ca and shows its cert, and
signs its requests with the cluster secret; write, read back."""
from __future__ import annotations

import os
from pathlib import Path

from conftest import TEST_CHUNK_SIZE, make_cluster, needs_fuse
from gfsfs.tools.localcluster import Mount
from tlskit import make_pki


@needs_fuse
def test_a_mount_over_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    cluster = make_cluster(tmp_path, 2, extra=pki.sets(mutual=True)
                           + ["master.replication_factor=2"], secure=True)
    mount = None
    try:
        cluster.start()
        assert cluster.url.startswith("https://")
        # TLS and the cluster secret (signed requests, chunk tokens) together
        sets = sum((["--set", s] for s in pki.sets()), cluster.secret_sets())
        mount = Mount(cluster.url, tmp_path / "mnt", cluster.logs / "mount.out",
                      options=sets + ["--set", "client.short_circuit=false"])
        mount.start()
        data = os.urandom(TEST_CHUNK_SIZE * 2 + 12345)
        (mount.mountpoint / "f").write_bytes(data)
        assert (mount.mountpoint / "f").read_bytes() == data
        assert os.listdir(mount.mountpoint) == ["f"]
    finally:
        if mount is not None:
            mount.stop()
        cluster.stop()


@needs_fuse
def test_a_mount_without_the_ca_fails_cleanly(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    cluster = make_cluster(tmp_path, 1, extra=pki.sets())
    try:
        cluster.start()
        import subprocess
        import sys
        from gfsfs.tools.localcluster import ROOT
        (tmp_path / "mnt").mkdir()
        r = subprocess.run([sys.executable, str(ROOT / "mount.py"), cluster.url,
                            str(tmp_path / "mnt"), "--foreground",
                            "--set", f"client.log_dir={str(cluster.logs)!r}",
                            "--set", "client.failover_timeout=1"],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 1
        assert "certificate verify failed" in r.stderr, r.stderr
    finally:
        cluster.stop()
