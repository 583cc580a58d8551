"""Tier 1: the compact namespace objects and checkpoint format 2 (issue 15):
round trip, the format-1 checkpoint of the code before it still loads, and a
checkpoint taken while mutations continue holds exactly the records up to its
sequence number."""
from __future__ import annotations

import json
import errno
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from gfsfs.common.config import MasterConfig
from master.core import Master
from master.state import image, records
from master.state.logread import CKPT_PREFIX, numbered, read_checkpoint
from master.state.namespace import ROOT_INO, Namespace
from master.state.nodes import ChunkTable, Directory, Inode
from master.state.oplog import OpLog, pack, unpack

DATA = Path(__file__).resolve().parents[1] / "data"
T = 1_700_000_000_000_000_000
CFG = MasterConfig(chunk_size=1 << 20)


async def no_chunkd(addr: str, name: str, body: dict[str, Any]) -> Any:
    raise AssertionError("no chunkd calls expected")


def varied(ns: Namespace) -> None:
    """Every kind of inode and chunk map a checkpoint must carry."""
    a = ns.apply
    d = a(records.mkdir(ROOT_INO, b"d", 0o755, 1000, 1000, ns.next_ino, now=T))
    f = a(records.create(d, b"f", stat.S_IFREG | 0o644, 1000, 1000, 0, ns.next_ino, now=T + 1))
    a(records.add_chunk(f, 0, ns.next_handle, 3))
    a(records.add_chunk(f, 5, ns.next_handle, 1))
    a(records.extend(f, (5 << 20) + 7, T + 2, now=T + 3))
    g = a(records.create(d, b"g", stat.S_IFREG | 0o600, 1, 2, 0, ns.next_ino, now=T + 4))
    a(records.add_chunk(g, 1, ns.next_handle, 1))               # one chunk, not at 0
    a(records.setxattr(g, b"user.a", b"\x00\xff", 0, now=T + 5))
    a(records.link(g, ROOT_INO, b"g-link", now=T + 6))
    a(records.symlink(d, b"s", b"f", 0, 0, ns.next_ino, now=T + 7))
    a(records.create(ROOT_INO, b"dev", stat.S_IFBLK | 0o600, 0, 0, 0x0801, ns.next_ino,
                     now=T + 8))
    a(records.create(ROOT_INO, b"fifo", stat.S_IFIFO | 0o600, 0, 0, 0, ns.next_ino, now=T + 9))
    a(records.create(d, b"empty", stat.S_IFREG | 0o644, 0, 0, 0, ns.next_ino, now=T + 10))
    one = a(records.create(d, b"one", stat.S_IFREG | 0o644, 0, 0, 0, ns.next_ino, now=T + 10))
    a(records.add_chunk(one, 0, ns.next_handle, 7))
    a(records.snapshot(d, ROOT_INO, b"snap", ns.next_ino, len(ns.snapshot_order(d)), now=T + 11))
    t = a(records.create(ROOT_INO, b"gone", stat.S_IFREG | 0o644, 0, 0, 0, ns.next_ino,
                         now=T + 12))
    a(records.add_chunk(t, 0, ns.next_handle, 2))
    a(records.unlink(ROOT_INO, b"gone", now=T + 13))
    a(records.unlink(d, b"f", now=T + 14))
    a(records.rename(d, b"g", ROOT_INO, b"g-moved", 0, now=T + 15))
    a(records.setquota(d, inodes=100, now=T + 16))
    a(records.with_rid(records.mkdir(ROOT_INO, b"r", 0o700, 0, 0, ns.next_ino, now=T + 17), 77))


def summary(ns: Namespace) -> Any:
    """What a load must give back, beyond to_state: derived parents, usage."""
    return (image.to_json(ns), image.to_state(ns),
            {i.ino: ns.parents_of(i) for i in ns.inodes.values() if i.dir is None},
            {q.ino: (q.used_bytes, q.used_inodes) for q in ns.quotas.values()},
            dict(ns.chunks.items()), ns.trash, ns.rids, ns.epoch)


def test_round_trip() -> None:
    ns = Namespace(1 << 20)
    ns.apply(records.init(now=T))
    varied(ns)
    state = image.to_state(ns)
    assert state["format"] == 2
    again = image.from_state(unpack(pack(state)), 3)
    assert summary(again) == summary(ns)
    d = again.lookup(ROOT_INO, b"d")
    one = again.lookup(d.ino, b"one")
    assert one.chunks is not None and list(one.chunks) == [0]
    assert isinstance(one._body, int)                # a one-chunk file holds no dict
    g = again.lookup(ROOT_INO, b"g-moved")
    assert dict(g.xattrs) == {b"user.a": b"\x00\xff"} and g.chunks is not None
    assert set(g.chunks) == {1}
    assert again.lookup(ROOT_INO, b"dev").rdev == 0x0801
    shared = again.lookup(ROOT_INO, b"snap")
    handle = again.lookup(shared.ino, b"one").chunks[0]      # type: ignore[index]
    assert again.chunks[handle] == [7, 2]


def test_format1_checkpoint_loads() -> None:
    """tests/data/checkpoint-format1 was written by the code before issue 15
    (see checkpoint-format1-gen.py.txt); its to_json then is beside it."""
    _seq, state = read_checkpoint(DATA / "checkpoint-format1")
    assert state["format"] == 1
    ns = image.from_state(state, 3)
    assert image.to_json(ns) == json.loads((DATA / "checkpoint-format1.json").read_text())
    g = ns.lookup(ns.lookup(ROOT_INO, b"d").ino, b"g")
    assert sorted(ns.parents_of(g)) == sorted([ROOT_INO, ns.lookup(ROOT_INO, b"d").ino])
    assert ns.chunks[1] == [3, 2] and ns.lookup(ROOT_INO, b"dev").rdev == 0x0801
    assert len(ns.trash) == 2 and ns.rids == {77: ns.lookup(ROOT_INO, b"r").ino}
    # written again in format 2, it loads to the same namespace
    assert summary(image.from_state(unpack(pack(image.to_state(ns))), 3)) == summary(ns)


def test_directory_cookies_and_chunk_maps() -> None:
    d = Directory(1)
    for k in range(6):
        d.add(b"n%d" % k, 100 + k)
    d.remove(b"n2")
    d.retarget(b"n4", 999)
    d.add(b"n2", 50)
    assert d.after(0, 10) == [(b"n0", 100, 1), (b"n1", 101, 2), (b"n3", 103, 4),
                              (b"n4", 999, 5), (b"n5", 105, 6), (b"n2", 50, 7)]
    assert d.after(4, 2) == [(b"n4", 999, 5), (b"n5", 105, 6)]
    assert d.entries[b"n4"] == (999, 5) and d.get(b"n9") is None and d.count == 6
    f = Inode(5, stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, chunks={})
    assert f.chunks is not None and not f.chunks and f._body is None
    f.chunks[0] = 11
    assert f._body == 11 and f.chunks == {0: 11}
    f.chunks[3] = 12
    assert f.chunks == {0: 11, 3: 12} and isinstance(f._body, dict)
    assert f.chunks.pop(3) == 12 and f._body == 11
    del f.chunks[0]
    assert f._body is None and f.chunk_handles() == []
    assert Inode(6, stat.S_IFDIR, 0, 0, 2, 0, 0, 0, dir=Directory(1)).chunks is None
    table = ChunkTable()
    table.new(1, 4)
    table.ref(1)
    assert table[1] == [4, 2] and not table.unref(1) and table[1] == [4, 1]
    assert table.unref(1) and 1 not in table and not table.refs


@pytest.mark.parametrize("fork", [True, False])
def test_checkpoint_while_mutating(tmp_path: Path, fork: bool,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Mutations go on while the checkpoint is written; the checkpoint holds
    exactly the records up to its sequence number, and a restart (checkpoint
    + the rest of the log) gives the live state."""
    monkeypatch.setattr(OpLog, "fork_checkpoints", fork)
    m = Master.open(CFG, no_chunkd, tmp_path)
    during: list[int] = []

    async def run() -> int:
        top = await m.mutate(records.mkdir(ROOT_INO, b"top", 0o755, 0, 0, m.ns.next_ino))
        for i in range(3000):
            m.stage(records.create(top, b"f%d" % i, stat.S_IFREG | 0o644, 0, 0, 0,
                                   m.ns.next_ino))
        await m.oplog.commit(m.oplog.last_seq)
        done = trio.Event()

        async def mutate() -> None:
            i = 0
            while not done.is_set():
                await m.mutate(records.rename(top, b"f%d" % i, ROOT_INO, b"m%d" % i, 0))
                await m.mutate(records.setattr(m.ns.lookup(ROOT_INO, b"m%d" % i).ino,
                                               mode=0o600))
                during.append(m.oplog.last_seq)
                i += 1
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(mutate)
            await trio.sleep(0.01)
            seq = await m.checkpoint()
            done.set()
        return seq

    seq = trio.run(run)
    assert any(s > seq for s in during)           # mutations ran during the write
    records_upto = [rec for s, rec in m.oplog.recent if s <= seq]
    replayed = Namespace(CFG.chunk_size, CFG.replication_factor)
    for rec in records_upto:
        replayed.apply(rec)
    path = numbered(tmp_path, CKPT_PREFIX)[-1][1]
    ckpt_seq, state = read_checkpoint(path)
    assert ckpt_seq == seq
    assert image.to_state(image.from_state(state, 3)) == image.to_state(replayed)
    live = summary(m.ns)
    m.close()
    again = Master.open(CFG, no_chunkd, tmp_path)
    assert summary(again.ns) == live
    again.close()


def test_failed_checkpoint_writer_raises(tmp_path: Path) -> None:
    """The child's errno comes back as the checkpoint's OSError; nothing is
    deleted and the next checkpoint works."""
    m = Master.open(CFG, no_chunkd, tmp_path)
    trio.run(m.mutate, records.mkdir(ROOT_INO, b"x", 0o755, 0, 0, m.ns.next_ino))
    (tmp_path / f"{CKPT_PREFIX}tmp").mkdir()        # open(tmp, "wb"): EISDIR
    with pytest.raises(OSError) as info:
        trio.run(m.checkpoint)
    assert info.value.errno == (21 if OpLog.fork_checkpoints else info.value.errno)
    assert not numbered(tmp_path, CKPT_PREFIX)
    os.rmdir(tmp_path / f"{CKPT_PREFIX}tmp")
    assert trio.run(m.checkpoint) == m.oplog.last_seq
    m.close()


def test_a_hung_checkpoint_writer_is_killed(tmp_path: Path) -> None:
    """A writer that never exits (a forked child can hang on a lock another
    thread held at the fork) is killed after the timeout: ETIMEDOUT, no
    half-written checkpoint left."""
    import signal as _signal
    import time as _time
    from master.state.oplog import _reap_writer
    pid = os.fork()
    if pid == 0:                        # the "writer": hangs
        try:
            (tmp_path / f"{CKPT_PREFIX}tmp").write_bytes(b"half")
            _time.sleep(60)
        finally:
            os._exit(0)
    _time.sleep(0.2)
    with pytest.raises(OSError) as info:
        trio.run(_reap_writer, pid, tmp_path, 0.5)
    assert info.value.errno == errno.ETIMEDOUT
    assert not (tmp_path / f"{CKPT_PREFIX}tmp").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, _signal.SIGKILL)   # gone (reaped)
