"""``make run-ha``'s program: etcd, three masters, three chunkds and a mount
that follows the primary; kill -9 of the primary costs a wait, not a byte:
a cp into the mount after it succeeds with the same bytes, the killed master
is restarted and rejoins as a shadow; Ctrl-C stops everything."""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import needs_fuse
from gfsfs.tools.etcd import etcd_binary
from gfsfs.tools.localcluster import is_mounted
from test_make_run import cleanup, free_ports, interrupt, launch, launcher_ports
from test_shadows import call, wait_for

pytestmark = [needs_fuse, pytest.mark.skipif(etcd_binary() is None, reason="needs etcd")]


def start_ha(base: Path, mnt: Path, masters: list[int], chunk_base: int) -> subprocess.Popen[str]:
    return launch(["gfsfs.tools.localha", "--base", str(base), "--mountpoint", str(mnt),
                   "--master-ports", ",".join(map(str, masters)),
                   "--chunk-base-port", str(chunk_base), "--insecure"], mnt, timeout=90)


@pytest.mark.allow_errors
def test_run_ha_survives_kill9_of_the_primary(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    masters = free_ports(3)
    chunk_base = launcher_ports()[1]
    urls = [f"http://127.0.0.1:{p}" for p in masters]
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 << 20))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    proc = start_ha(tmp_path, mnt, masters, chunk_base)
    try:
        wait_for("a primary", lambda: call(urls[0], "ha_status")["primary"], timeout=30)
        subprocess.run(["cp", str(src), str(mnt / "before.bin")], check=True, timeout=60)
        os.kill(int((tmp_path / "logs" / "master.pid").read_text()), signal.SIGKILL)
        started = time.monotonic()
        subprocess.run(["cp", str(src), str(mnt / "after.bin")], check=True, timeout=60)
        print(f"cp after kill -9 of the primary: {time.monotonic() - started:.1f} s")
        for name in ("before.bin", "after.bin"):
            assert hashlib.sha256((mnt / name).read_bytes()).hexdigest() == digest
        new = wait_for("a new primary", lambda: next(
            (u for u in urls[1:] if call(u, "ha_status")["primary"]), None), timeout=30)
        wait_for("the killed master back as a shadow",
                 lambda: (st := call(urls[0], "ha_status"))["primary_url"] == new
                 and not st["primary"], timeout=30)
        out = interrupt(proc)
        assert proc.returncode == 0, out
        assert "master restarted" in out and "stopped." in out
        assert not is_mounted(mnt)
    finally:
        cleanup(proc, tmp_path, mnt)
