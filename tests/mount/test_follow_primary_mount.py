"""Clients that follow the primary master (issue 13): a mount and the ``gfs``
CLI given several masters, the first of which does not answer, work; with
no master answering, a mount's operation fails with EIO after about
``failover_timeout`` instead of hanging. (The library's half, with a shadow
master, is tests/process/test_follow_primary.py.)"""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import pytest

from conftest import needs_fuse
from gfsfs.tools.localcluster import Cluster, Mount
from test_cli import gfs
from test_follow_primary import dead_url


@needs_fuse
@pytest.mark.allow_errors       # the mount logs the EIO of its master going away
def test_a_mount_and_the_cli_skip_a_master_that_does_not_answer(cluster: Cluster,
                                                                tmp_path: Path) -> None:
    dead = dead_url()
    spec = f"{dead},{cluster.url}"
    m = Mount(spec, tmp_path / "mnt", cluster.logs / "mount.out",
              options=["--set", "client.failover_timeout=2"])
    try:
        m.start()
        mnt = m.mountpoint
        data = os.urandom(300_000)
        (mnt / "d").mkdir()
        (mnt / "d" / "f").write_bytes(data)
        assert os.listdir(mnt / "d") == ["f"]
        assert (mnt / "d" / "f").read_bytes() == data

        r = gfs("ls", "-l", "/d", master=spec)
        assert r.returncode == 0 and "f" in r.stdout, r.stderr
        r = gfs("fileinfo", "/d/f", "--json", env={"GFS_MASTER": spec})
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["attr"]["size"] == len(data)
        r = gfs("status", "--json", master=spec)
        assert r.returncode == 0 and json.loads(r.stdout)["master"] == cluster.url, r.stderr

        assert cluster.master is not None
        cluster.master.stop()                   # now no master answers
        start = time.monotonic()
        with pytest.raises(OSError) as e:
            os.stat(mnt / "d" / "never-looked-up")
        took = time.monotonic() - start
        print(f"stat with no master answering: {e.value!r} after {took:.2f}s")
        assert e.value.errno == errno.EIO, e.value
        assert 1.5 <= took < 15.0, took
    finally:
        m.stop()
    # one WARNING when the mount starts, one when its master goes away (going
    # round the list after that is logged at DEBUG)
    log = (cluster.logs / "mount.out").read_text()
    switches = [line.split(": ", 1)[1] for line in log.splitlines() if "now using" in line]
    assert [s.split(" (")[0] for s in switches] == [
        f"master {dead} does not answer; now using {cluster.url}",
        f"master {cluster.url} does not answer; now using {dead}"], log[-3000:]
