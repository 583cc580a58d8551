"""Tier 1: op log durability, replay, torn tails, checkpoints, group commit."""
from __future__ import annotations

import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from gfsfs.config import MasterConfig
from master import image
from master.core import Master
from master.namespace import ROOT_INO
from master.oplog import LOG_PREFIX, read_log

CFG = MasterConfig(chunk_size=1 << 20)


async def no_chunkd(addr: str, name: str, body: dict[str, Any]) -> Any:
    raise AssertionError("no chunkd calls expected")


def open_master(path: Path) -> Master:
    return Master.open(CFG, no_chunkd, path)


async def make_tree(m: Master, n: int, prefix: bytes = b"f") -> None:
    d = await m.mutate(m.new_ino_record("mkdir", parent=ROOT_INO, name=prefix + b"-dir",
                                        mode=0o755, uid=0, gid=0))
    for i in range(n):
        ino = await m.mutate(m.new_ino_record("create", parent=d, name=b"%s%d" % (prefix, i),
                                              mode=stat.S_IFREG | 0o644, uid=1, gid=2))
        await m.mutate({"op": "add_chunk", "ino": ino, "index": 0, "handle": m.ns.next_handle,
                        "version": 1})
        await m.mutate({"op": "extend", "ino": ino, "size": 100 + i, "mtime_ns": i,
                        "now": time.time_ns()})
    await m.mutate({"op": "rename", "parent": d, "name": prefix + b"0", "new_parent": ROOT_INO,
                    "new_name": prefix + b"-moved", "flags": 0, "now": time.time_ns()})
    await m.mutate({"op": "unlink", "parent": d, "name": prefix + b"1", "now": time.time_ns()})


def state(m: Master) -> Any:
    return image.to_state(m.ns)


def logs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.name.startswith(LOG_PREFIX))


def test_replay_equals_live_state(tmp_path: Path) -> None:
    m = open_master(tmp_path)
    trio.run(make_tree, m, 20)
    live = state(m)
    m.close()
    again = open_master(tmp_path)
    assert state(again) == live
    assert again.ns.lookup(ROOT_INO, b"f-moved").size == 100
    again.close()


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_torn_tail_is_dropped(tmp_path: Path, damage: str,
                              caplog: pytest.LogCaptureFixture) -> None:
    m = open_master(tmp_path)
    trio.run(make_tree, m, 5)
    before_last = m.oplog.last_seq
    records = read_log(logs(tmp_path)[-1])
    m.close()
    path = logs(tmp_path)[-1]
    size = path.stat().st_size
    if damage == "truncate":
        os.truncate(path, size - 3)
    else:
        data = bytearray(path.read_bytes())
        data[-2] ^= 0xFF
        path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        m2 = open_master(tmp_path)
    assert "torn or corrupt tail" in caplog.text
    assert m2.oplog.last_seq == before_last - 1
    # the last record was the unlink of f1: it is gone, everything before stays
    d = m2.ns.lookup(ROOT_INO, b"f-dir").ino
    assert m2.ns.lookup(d, b"f1").size == 101
    assert len(read_log(path)) == len(records) - 1
    # and the log keeps working after the cut
    trio.run(make_tree, m2, 2, b"g")
    live = state(m2)
    m2.close()
    m3 = open_master(tmp_path)
    assert state(m3) == live
    m3.close()


def test_garbage_only_log_starts_empty(tmp_path: Path) -> None:
    (tmp_path / f"{LOG_PREFIX}{0:016d}").write_bytes(b"\x05\x00\x00\x00garbage-garbage")
    m = open_master(tmp_path)
    assert list(m.ns.inodes) == [ROOT_INO]
    m.close()


def test_checkpoint_then_replay(tmp_path: Path) -> None:
    m = open_master(tmp_path)

    async def run() -> None:
        await make_tree(m, 10)
        seq = await m.checkpoint()
        assert seq == m.oplog.last_seq
        await make_tree(m, 10, b"h")

    trio.run(run)
    live = state(m)
    m.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len([n for n in names if n.startswith("checkpoint.")]) == 1
    assert len(logs(tmp_path)) == 1        # the old log went away
    again = open_master(tmp_path)
    assert again.oplog.checkpoint_seq > 0
    assert state(again) == live
    # a second checkpoint with nothing new, then one more cycle
    trio.run(again.checkpoint)
    trio.run(make_tree, again, 2, b"i")
    live = state(again)
    again.close()
    third = open_master(tmp_path)
    assert state(third) == live
    third.close()


def test_group_commit(tmp_path: Path) -> None:
    m = open_master(tmp_path)
    n = 300

    async def one(i: int) -> None:
        await m.mutate(m.new_ino_record("create", parent=ROOT_INO, name=b"c%d" % i,
                                        mode=stat.S_IFREG | 0o600, uid=0, gid=0))
        assert m.oplog.durable_seq >= m.oplog.last_seq or m.oplog.durable_seq > 0

    async def run() -> None:
        start = m.oplog.fsyncs
        async with trio.open_nursery() as nursery:
            for i in range(n):
                nursery.start_soon(one, i)
        used = m.oplog.fsyncs - start
        assert 1 <= used < n // 4, used
        assert m.oplog.durable_seq == m.oplog.last_seq

    trio.run(run)
    m.close()
    again = open_master(tmp_path)
    assert len(again.ns.readdir(ROOT_INO, 0, 1000)) == n
    again.close()
