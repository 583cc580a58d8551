"""Shadow masters with real processes: a shadow follows the primary's op log
and serves reads, synchronous shipping survives a dying shadow, promotion
raises the epoch and the old primary steps down, rejoins as a shadow and
converges, and no acknowledged mutation is lost when the primary is killed."""
from __future__ import annotations

import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from conftest import make_cluster, needs_fuse
from test_cli import gfs
from gfsfs.common.errors import GFSError
from gfsfs.tools.etcd import free_port
from gfsfs.tools.localcluster import Cluster, Daemon, Mount, python

SETTINGS = ["master.shadow_timeout=1.0"]


def call(url: str, rpc_name: str, timeout: float = 10.0, **body: Any) -> Any:
    r = httpx.post(f"{url}/rpc/{rpc_name}", content=msgpack.packb(body, use_bin_type=True),
                   timeout=timeout)
    reply = msgpack.unpackb(r.content, raw=False, strict_map_key=False) if r.content else {}
    if r.status_code >= 400:
        raise GFSError.from_wire(reply, r.status_code)
    return reply


def mkdir(url: str, name: str, **kw: Any) -> Any:
    return call(url, "mkdir", parent=1, name=name.encode(), mode=0o755, uid=0, gid=0, **kw)


def names(url: str) -> set[str]:
    root = next(i for i in call(url, "dump_metadata")["inodes"] if i["ino"] == 1)
    return set(root["entries"])


def wait_for(what: str, check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = check()
            if got:
                return got
        except (GFSError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def same_metadata(a: str, b: str) -> bool:
    return bool(call(a, "dump_metadata") == call(b, "dump_metadata"))


@dataclass
class Pair:
    cluster: Cluster
    shadow: Daemon

    @property
    def primary_url(self) -> str:
        return self.cluster.url


def start_shadow(base: Path, primary: str, host: str = "127.0.0.2", name: str = "shadow",
                 port: int = 0) -> Daemon:
    d = Daemon(name, [python(), "-m", "master", "--host", host, "--port", str(port),
                      "--data-dir", str(base / "data" / name),
                      "--set", f"master.log_dir={str(base / 'logs')!r}",
                      "--set", 'master.role="shadow"',
                      "--set", f"master.primary_url={json.dumps(primary)}",
                      *sum((["--set", s] for s in SETTINGS), [])],
               base / "logs" / f"{name}.out")
    d.start()
    return d


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    port = free_port("127.0.0.2")
    cluster = make_cluster(tmp_path, 1, extra=SETTINGS,
                           also_masters=[f"http://127.0.0.2:{port}"])
    shadow = None
    try:
        cluster.start()
        shadow = start_shadow(tmp_path, cluster.url, port=port)
        wait_for("the shadow to be synchronous",
                 lambda: any(x["synchronous"] for x in call(cluster.url, "ha_status")["shadows"]))
        yield Pair(cluster, shadow)
    finally:
        if shadow is not None:
            shadow.stop()
        cluster.stop()


def test_a_shadow_follows_the_primary_and_refuses_mutations(pair: Pair) -> None:
    p, s = pair.primary_url, pair.shadow.url
    for i in range(30):
        mkdir(p, f"d{i}")
    # synchronous: the shadow had every record on disk before each reply
    assert call(s, "ha_status")["last_seq"] >= call(p, "ha_status")["durable_seq"]
    assert same_metadata(p, s)
    assert call(s, "lookup", parent=1, name=b"d7")["mode"] & 0o777 == 0o755
    with pytest.raises(GFSError) as e:
        mkdir(s, "x")
    assert e.value.code == "NOTPRIMARY" and e.value.primary == p
    st = call(p, "ha_status")
    assert st["primary"] and st["shadows"][0]["behind"] == 0
    lag = call(s, "ha_status")["following"]
    assert lag["records_behind"] == 0 and lag["seconds_behind"] < 2.0
    # the same in /metrics and gfs status (cluster_status)
    primary_metrics, shadow_metrics = (httpx.get(f"{u}/metrics").text for u in (p, s))
    assert "\ngfs_master_primary 1.0" in primary_metrics
    assert f'gfs_master_shadow_synchronous{{shadow="{s}"}} 1.0' in primary_metrics
    assert "\ngfs_master_primary 0.0" in shadow_metrics
    assert "\ngfs_master_records_behind_primary 0.0" in shadow_metrics
    ha = call(p, "cluster_status")["ha"]
    assert ha["primary"] and ha["shadows"][0]["url"] == s
    assert call(s, "cluster_status")["ha"]["following"]["primary"] == p


def test_a_restarted_shadow_catches_up_from_its_own_log(pair: Pair) -> None:
    p = pair.primary_url
    for i in range(10):
        mkdir(p, f"a{i}")
    pair.shadow.stop()
    for i in range(10):                  # the shadow is gone: the primary goes on alone
        mkdir(p, f"b{i}")
    pair.shadow.argv[pair.shadow.argv.index("--port") + 1] = pair.shadow.url.rsplit(":", 1)[1]
    pair.shadow.start()
    wait_for("the shadow to catch up", lambda: same_metadata(p, pair.shadow.url))
    assert "resync" not in pair.shadow.log_tail(20000)     # from its own log, no checkpoint


def test_a_killed_synchronous_shadow_holds_mutations_for_shadow_timeout_only(pair: Pair) -> None:
    p = pair.primary_url
    pair.shadow.kill()
    started = time.monotonic()
    mkdir(p, "after-kill")               # waits for the dead shadow at most shadow_timeout
    took = time.monotonic() - started
    assert took < 1.0 + 3.0, took
    st = call(p, "ha_status")["shadows"][0]
    assert not st["synchronous"]
    t = time.monotonic()
    mkdir(p, "alone")                    # then alone, without waiting
    assert time.monotonic() - t < 1.0


def test_promotion_raises_the_epoch_and_the_old_primary_rejoins_as_a_shadow(pair: Pair) -> None:
    p, s = pair.primary_url, pair.shadow.url
    for i in range(20):
        mkdir(p, f"d{i}")
    shown = gfs("ha", master=p)
    assert shown.returncode == 0 and f"{p}: primary, epoch 0" in shown.stdout
    assert s in shown.stdout and "yes" in shown.stdout          # the shadow, synchronous
    out = gfs("promote", s, "--json")
    assert out.returncode == 0, out.stderr
    promoted = json.loads(out.stdout)
    assert promoted["primary"] and promoted["epoch"] == 1
    mkdir(s, "on-the-new-primary")
    # told to step down, the old primary restarts (same process, same port) as a shadow
    old = wait_for("the old primary to follow the new one",
                   lambda: (st := call(p, "ha_status")) and not st["primary"]
                   and st.get("following", {}).get("records_behind") == 0
                   and st["epoch"] == 1 and st)
    assert old["primary_url"] == s and old["epoch"] == 1
    assert pair.cluster.master is not None and pair.cluster.master.alive()
    with pytest.raises(GFSError) as e:
        mkdir(p, "refused")
    assert e.value.code == "NOTPRIMARY" and e.value.primary == s
    wait_for("the metadata to converge", lambda: same_metadata(p, s))
    assert "on-the-new-primary" in names(p)
    status = gfs("status", master=p)
    assert f"shadow of {s} (epoch 1), 0 records behind" in status.stdout, status.stdout
    # the chunkd follows the epoch: it registered with the new primary again
    wait_for("the chunkd to serve the new primary",
             lambda: call(s, "cluster_status")["chunkds_alive"] == 1)


@pytest.mark.allow_errors
def test_kill9_of_the_primary_loses_no_acknowledged_mutation(pair: Pair) -> None:
    """Two writers create directories as fast as they can; the primary is
    killed with SIGKILL mid-storm and the shadow promoted: every mkdir that
    was answered is there, and a retry of any of them with its rid is
    answered as the first attempt."""
    p, s = pair.primary_url, pair.shadow.url
    acked: dict[str, int] = {}
    stop = threading.Event()

    def storm(who: str) -> None:
        for i in range(100000):
            if stop.is_set():
                return
            name = f"{who}{i}"
            try:
                acked[name] = mkdir(p, name, rid=hash(name) & (2**62 - 1) | 1, timeout=3.0)["ino"]
            except (GFSError, httpx.HTTPError):
                return
    writers = [threading.Thread(target=storm, args=(w,)) for w in "ab"]
    for t in writers:
        t.start()
    wait_for("a few acknowledged mkdirs", lambda: len(acked) >= 40)
    assert pair.cluster.master is not None
    pair.cluster.master.kill()
    stop.set()
    for t in writers:
        t.join(10)
    call(s, "promote")
    present = names(s)
    missing = sorted(set(acked) - present)
    assert not missing, f"{len(missing)} acknowledged mkdirs lost: {missing[:10]}"
    some = sorted(acked)[-1]
    again = mkdir(s, some, rid=hash(some) & (2**62 - 1) | 1)
    assert again["ino"] == acked[some]


@needs_fuse
def test_a_read_only_mount_on_a_shadow_reads_what_the_primary_writes(pair: Pair,
                                                                      tmp_path: Path) -> None:
    """A mount of the primary writes files; a ``-o ro`` mount of the shadow
    reads their bytes (the chunkd registered with the shadow too, so it knows
    where replicas are), refuses writes with EROFS, and the shadow's lag stays
    under a second while the primary writes."""
    rw = Mount(pair.primary_url, tmp_path / "rw", tmp_path / "logs" / "mount-rw.out")
    ro = Mount(pair.shadow.url, tmp_path / "ro", tmp_path / "logs" / "mount-ro.out",
               options=["-o", "ro"])
    try:
        rw.start()
        ro.start()
        worst = 0.0
        for i in range(20):
            data = os.urandom(100_000 + i)
            (rw.mountpoint / f"f{i}").write_bytes(data)
            lag = call(pair.shadow.url, "ha_status")["following"]
            worst = max(worst, lag["seconds_behind"] or 0.0)
            assert lag["records_behind"] <= 2
        wait_for("the shadow to have the last file",
                 lambda: (ro.mountpoint / "f19").exists()
                 and (ro.mountpoint / "f19").stat().st_size == 100_019)

        def located(i: int) -> bool:        # the chunkd's report reached the shadow too
            ino = os.stat(rw.mountpoint / f"f{i}").st_ino
            found = call(pair.shadow.url, "chunks", ino=ino, first=0, count=1)["chunks"]
            return bool(found) and all(c.get("replicas") for c in found)
        wait_for("the shadow to know where the chunks are",
                 lambda: all(located(i) for i in (0, 7, 19)))
        for i in (0, 7, 19):
            assert (ro.mountpoint / f"f{i}").read_bytes() == (rw.mountpoint / f"f{i}").read_bytes()
        with pytest.raises(OSError) as e:
            (ro.mountpoint / "new").write_bytes(b"x")
        assert e.value.errno == errno.EROFS
        assert worst < 1.5, worst        # heard from at least every IDLE (1 s) second
    finally:
        ro.stop()
        rw.stop()


def test_a_shadow_whose_log_went_its_own_way_takes_a_checkpoint(pair: Pair) -> None:
    """A master that logged a record nobody else has (it was primary once and
    its last record was never acknowledged): restarted as a shadow, its last
    record's CRC is not the primary's, so it takes the primary's checkpoint
    (resync), drops its own record and converges."""
    from master.state import records
    from master.state.logread import LOG_PREFIX, read_log
    from master.state.oplog import frame
    p = pair.primary_url
    for i in range(5):
        mkdir(p, f"d{i}")
    pair.shadow.stop()
    data = Path(pair.shadow.argv[pair.shadow.argv.index("--data-dir") + 1])
    newest = sorted(data.glob(f"{LOG_PREFIX}*"))[-1]
    last = read_log(newest)[-1][0]
    with open(newest, "ab") as f:                 # a record of its own, never shipped
        f.write(frame(last + 1, records.mkdir(1, b"only-here", 0o755, 0, 0, 999)))
    mkdir(p, "while-away")
    pair.shadow.argv[pair.shadow.argv.index("--port") + 1] = pair.shadow.url.rsplit(":", 1)[1]
    pair.shadow.start()
    wait_for("the shadow to converge", lambda: same_metadata(p, pair.shadow.url))
    assert "only-here" not in names(pair.shadow.url)
    assert call(pair.shadow.url, "ha_status")["following"]["resyncs"] == 1
    assert "took" in pair.shadow.log_tail(20000) and "checkpoint" in pair.shadow.log_tail(20000)
