"""A real chunkd process with several masters (``--master URL,URL``): it
registers with each (a dead one first in the list holds up nothing), a shadow
learns where its replicas are, a superseded primary's delete lists are
ignored, and the highest epoch it has seen survives a restart (issue 13)."""
from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import gfsfs
from conftest import CLUSTER_SETTINGS, make_cluster
from gfsfs.common.config import MasterConfig
from gfsfs.common.rpc import pack, unpack
from gfsfs.tools.localcluster import Cluster, Daemon, python

DEAD = "http://127.0.0.1:1"         # nothing listens there: connection refused
DATA = bytes(range(256)) * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def chunkd(base: Path, masters: str) -> Daemon:
    argv = [python(), "-m", "chunkd", "--id", "cs1", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(base / "data" / "chunks"), "--master", masters,
            "--set", f"chunk_server.log_dir={str(base / 'logs')!r}"] + sets(CLUSTER_SETTINGS)
    return Daemon("cs1", argv, base / "logs" / "cs1.out")


def master(base: Path, name: str, port: int = 0, extra: tuple[str, ...] = ()) -> Daemon:
    """A second master process of its own (data dir, port, log)."""
    argv = [python(), "-m", "master", "--host", "127.0.0.1", "--port", str(port),
            "--data-dir", str(base / "data" / name),
            "--set", f"master.log_dir={str(base / 'logs')!r}"] + sets(CLUSTER_SETTINGS + list(extra))
    return Daemon(name, argv, base / "logs" / f"{name}.out")


def rpc(url: str, name: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    with httpx.Client(timeout=10) as http:
        resp = http.post(f"{url}/rpc/{name}", content=pack(body or {}))
        return resp.status_code, unpack(resp.content)


def status(url: str) -> Any:
    with httpx.Client(timeout=10) as http:
        return unpack(http.get(f"{url}/status").content)


def servers_of(master_url: str) -> list[str]:
    code, reply = rpc(master_url, "cluster_status")
    assert code == 200, reply
    return [s["id"] for s in reply["servers"]]


def wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not after {timeout}s: {what}")
        time.sleep(0.1)


def masters_seen(cs: Daemon) -> dict[str, Any]:
    return {m["url"]: m for m in status(cs.url)["masters"]}


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Daemon]]:
    """The daemons a test starts beyond its cluster: stopped by PID, even on failure."""
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for d in daemons:
            d.stop()


def one_master(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path, chunkds=0, extra=["master.replication_factor=1"]).start()


def write_and_read(master_url: str, path: str = "/f") -> None:
    fs = gfsfs.connect(master_url, request_timeout=10.0, retries=3)
    try:
        fs.write_bytes(path, DATA)
        assert fs.read_bytes(path) == DATA
    finally:
        fs.close()


def test_a_dead_master_first_in_the_list_holds_up_nothing(
        tmp_path: Path, started: list[Daemon]) -> None:
    c = one_master(tmp_path)
    try:
        cs = chunkd(tmp_path, f"{DEAD},{c.url}")
        started.append(cs)
        cs.start(timeout=30)
        wait("the master lists the chunkd", lambda: servers_of(c.url) == ["cs1"])
        write_and_read(c.url)
        seen = masters_seen(cs)
        assert seen[c.url]["reachable"] and seen[c.url]["role"] == "primary"
        assert not seen[DEAD]["reachable"] and seen[DEAD]["last_heartbeat"] == 0
        assert status(cs.url)["chunks"] == 1
    except BaseException:
        print(c.logs_text(), "\n".join(d.log_tail() for d in started))
        raise
    finally:
        c.stop()


def test_a_shadow_learns_the_replicas_and_sends_no_deletes(
        tmp_path: Path, started: list[Daemon]) -> None:
    c = one_master(tmp_path)
    try:
        shadow = master(tmp_path, "shadow", extra=('master.role="shadow"',
                                                   f'master.primary_url="{c.url}"'))
        started.append(shadow)
        shadow.start(timeout=30)
        cs = chunkd(tmp_path, f"{c.url},{shadow.url}")
        started.append(cs)
        cs.start(timeout=30)
        wait("the primary lists the chunkd", lambda: servers_of(c.url) == ["cs1"])
        write_and_read(c.url)
        cs.stop()                   # registers again, holding a chunk the shadow never saw
        cs.start(timeout=30)
        wait("the shadow lists the chunkd", lambda: servers_of(shadow.url) == ["cs1"])
        wait("both masters heard", lambda: all(
            m["reachable"] for m in masters_seen(cs).values()))
        time.sleep(1.5)             # a few heartbeats with each
        seen = masters_seen(cs)
        assert (seen[c.url]["role"], seen[shadow.url]["role"]) == ("primary", "shadow")
        assert status(cs.url)["chunks"] == 1        # the shadow's view deleted nothing
        assert "cs1" in [s["id"] for s in status(shadow.url)["servers"]]
        write_and_read(c.url, "/g")
    except BaseException:
        print(c.logs_text(), "\n".join(d.log_tail() for d in started))
        raise
    finally:
        c.stop()


def epoch_dir(path: Path, epoch: int) -> None:
    """A master data directory whose op log has reached ``epoch`` (as a
    promotion leaves it)."""
    from master.core import Master
    from master.state import records

    async def no_chunkds(addr: str, name: str, body: dict[str, Any]) -> Any:
        return {}
    m = Master.open(MasterConfig(data_dir=str(path), chunk_size=CHUNK_SIZE), no_chunkds)
    try:
        rec = records.epoch(epoch, "")
        m.ns.apply(rec)
        m.oplog.append(rec)
        m.oplog.flush_sync()
    finally:
        m.close()


CHUNK_SIZE = int(CLUSTER_SETTINGS[0].split("=")[1])


def test_a_superseded_primary_deletes_nothing_and_the_epoch_survives_a_restart(
        tmp_path: Path, started: list[Daemon]) -> None:
    """The cluster's master is in epoch 1. A master of epoch 0 that still
    thinks it is primary (empty: every chunk is garbage to it) comes up: the
    chunkd ignores its delete list and tells it of epoch 1; orders of epoch 0
    are refused STALE, before and after a restart of the chunkd."""
    epoch_dir(tmp_path / "data" / "master", 1)
    c = one_master(tmp_path)
    old_port = free_port()
    old_url = f"http://127.0.0.1:{old_port}"
    try:
        cs = chunkd(tmp_path, f"{c.url},{old_url}")
        started.append(cs)
        cs.start(timeout=30)
        wait("the primary lists the chunkd", lambda: servers_of(c.url) == ["cs1"])
        write_and_read(c.url)
        assert status(cs.url)["epoch"] == 1
        old = master(tmp_path, "old", old_port)
        started.append(old)
        old.start(timeout=30)
        wait("the old master lists the chunkd", lambda: servers_of(old_url) == ["cs1"])
        wait("the old master steps down", lambda: "stepping down" in old.log_tail(20000))
        assert re.search(r"cs1 registered at .* 1 to delete", old.log_tail(20000))   # it asked
        assert status(cs.url)["chunks"] == 1
        assert "master " + old_url + ": stale in epoch 0" in cs.log_tail(20000)
        assert rpc(cs.url, "delete", {"handles": [0, 1, 2], "epoch": 0})[1]["error"][
            "code"] == "STALE"
        cs.stop()
        cs.start(timeout=30)
        st = status(cs.url)
        assert (st["epoch"], st["primary_url"], st["chunks"]) == (1, c.url, 1)
        code, reply = rpc(cs.url, "set_version", {"handle": 99, "version": 1, "create": True})
        assert (code, reply["error"]["code"]) == (409, "STALE")
        write_and_read(c.url, "/g")
    except BaseException:
        print(c.logs_text(), "\n".join(d.log_tail() for d in started))
        raise
    finally:
        c.stop()
