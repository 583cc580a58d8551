"""Clients that follow the primary master (issue 13), against real processes:
a master that does not answer is skipped, a shadow's NOTPRIMARY moves a
client to the primary, a create retried with its request id gets its own
inode back, and with no master answering an operation fails after about
``failover_timeout``. The library's half (gfsfs.common.masters,
gfsfs.client.core.Client); the mount's and the CLI's are in
tests/mount/test_follow_primary_mount.py."""
from __future__ import annotations

import dataclasses
import errno
import logging
import socket
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import CLUSTER_SETTINGS
from gfsfs.client.core import Client
from gfsfs.common import rpc
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.masters import Masters
from gfsfs.tools.localcluster import Cluster, Daemon, python

FILE = stat.S_IFREG | 0o644


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


def dead_url() -> str:
    """A loopback URL nothing listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@contextmanager
def shadow_of(cluster: Cluster, data: Path) -> Iterator[Daemon]:
    """A second master process, a shadow of ``cluster``'s (its own data dir
    and port), stopped by PID however the block ends."""
    argv = [python(), "-m", "master", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(data), "--set", f"master.log_dir={str(cluster.logs)!r}",
            "--set", 'master.role="shadow"', "--set", f'master.primary_url="{cluster.url}"']
    for item in CLUSTER_SETTINGS:
        argv += ["--set", item]
    d = Daemon("shadow", argv, cluster.logs / "shadow.out")
    try:
        d.start()
        yield d
    finally:
        d.stop()


def config(spec: str, **kw: Any) -> ClientConfig:
    return dataclasses.replace(ClientConfig(), master_url=spec, request_timeout=5.0, **kw)


def run_client(cfg: ClientConfig, test: Any, timeout: float = 60.0) -> Any:
    async def main() -> Any:
        with trio.fail_after(timeout):
            async with Client.open(cfg) as client:
                return await test(client)
    return trio.run(main)


def test_a_client_skips_a_master_that_does_not_answer(cluster: Cluster) -> None:
    dead = dead_url()

    async def test(client: Client) -> None:
        await client.statfs()
        assert client.master == cluster.url
        ino = (await client.create(1, b"skips", FILE, 0, 0))["ino"]
        await client.write(ino, 0, b"hello " * 1000)
        await client.fsync(ino)
        client.open_file(ino)
        assert await client.read(ino, 0, 6000) == b"hello " * 1000
        names = [n for n, _a, _o in await client.readdir(1)]
        assert b"skips" in names
        await client.unlink(1, b"skips")
    run_client(config(f"{dead},{cluster.url}"), test)


def test_a_shadows_notprimary_moves_a_client_to_the_primary(
        cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "gfsfs.common.masters")
    with shadow_of(cluster, tmp_path / "shadow") as shadow:
        async def test(client: Client) -> None:
            await client.statfs()                   # a read: the shadow answers it
            assert client.master == shadow.url
            ino = (await client.create(1, b"moved", FILE, 0, 0))["ino"]
            assert client.master == cluster.url
            await client.rename(1, b"moved", 1, b"renamed")
            assert (await client.lookup(1, b"renamed"))["ino"] == ino
            await client.unlink(1, b"renamed")
        run_client(config(f"{shadow.url},{cluster.url}"), test)
        trio.run(refuses, shadow.url, cluster.url)

        async def finds(client: Client) -> None:    # the mount's first statfs
            reply = await client.statfs(find_primary=True)
            assert reply["primary"] is False and reply["primary_url"] == cluster.url
            assert client.master == cluster.url     # reads too go to the primary now
        run_client(config(f"{shadow.url},{cluster.url}"), finds)
    switches = [r.getMessage() for r in caplog.records if "now using" in r.getMessage()]
    assert len(switches) == 1, switches
    assert switches[0].startswith(f"master {shadow.url} is not primary; now using {cluster.url}")


async def refuses(shadow: str, primary: str) -> None:
    """The shadow itself refuses a mutation, naming the primary."""
    async with rpc.make_http(5.0) as http:
        with pytest.raises(GFSError) as e:
            await rpc.call(http, shadow, "mkdir", {"parent": 1, "name": b"d", "mode": 0o755,
                                                   "uid": 0, "gid": 0})
    assert e.value.code == Code.NOTPRIMARY and e.value.primary == primary


def test_a_create_retried_with_its_rid_gets_its_own_inode_back(cluster: Cluster) -> None:
    async def main() -> None:
        async with rpc.make_http(5.0) as http:
            masters = Masters(http, f"{dead_url()},{cluster.url}", failover_timeout=10.0)
            body = {"parent": 1, "name": b"once", "mode": FILE, "uid": 0, "gid": 0,
                    "rid": 12345}
            first = await masters.call("create", body)
            again = await masters.call("create", body)      # as if the reply was lost
            assert again["ino"] == first["ino"]
            with pytest.raises(GFSError) as e:               # a new operation
                await masters.call("create", {**body, "rid": 12346})
            assert e.value.code == Code.EEXIST
            rename = {"parent": 1, "name": b"once", "new_parent": 1, "new_name": b"twice",
                      "rid": 777}
            await masters.call("rename", rename)
            await masters.call("rename", rename)             # not ENOENT
            await masters.call("unlink", {"parent": 1, "name": b"twice"})
    trio.run(main)


def test_with_no_master_answering_an_operation_fails_after_the_failover_timeout() -> None:
    cfg = config(f"{dead_url()},{dead_url()}", failover_timeout=2.0)

    async def test(client: Client) -> list[float]:
        took = []
        for op in (lambda: client.lookup(1, b"x"), lambda: client.create(1, b"y", FILE, 0, 0)):
            start = time.monotonic()
            with pytest.raises(GFSError) as e:
                await op()
            took.append(time.monotonic() - start)
            assert e.value.code == Code.UNAVAILABLE and e.value.errno == errno.EIO
        return took
    took = run_client(cfg, test)
    assert all(2.0 <= t < 9.0 for t in took), took


def test_the_api_and_fsspec_take_several_masters(cluster: Cluster) -> None:
    import fsspec

    import gfsfs
    from gfsfs.client.fsspec_gfs import GFSFileSystem
    netlocs = f"{dead_url().split('://')[1]},{cluster.url.split('://')[1]}"
    with gfsfs.connect(netlocs, request_timeout=5.0) as fs:
        fs.write_bytes("/api-list", b"through the second master")
        assert fs.read_bytes("/api-list") == b"through the second master"
    fsspec.register_implementation("gfs", GFSFileSystem, clobber=True)
    try:
        with fsspec.open(f"gfs://{netlocs}/api-list", "rb") as f:
            assert f.read() == b"through the second master"
        gfs, path = fsspec.core.url_to_fs(f"gfs://{netlocs}/api-list")
        assert gfs.unstrip_protocol(path) == f"gfs://{netlocs}/api-list"
        gfs.rm(path)
    finally:
        for inst in list(GFSFileSystem._cache.values()):
            inst.close()
        GFSFileSystem.clear_instance_cache()
