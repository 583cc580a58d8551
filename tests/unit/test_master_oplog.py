"""Tier 1: op log durability, replay, torn tails, checkpoints, group commit."""
from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from gfsfs.common.config import MasterConfig
from master.state import image, records
from gfsfs.common.errors import GFSError
from master.core import CheckpointLoop, Master
from master.state.namespace import ROOT_INO
from master.state.oplog import LOG_PREFIX, LogDamage, frame, read_log

CFG = MasterConfig(chunk_size=1 << 20)


async def no_chunkd(addr: str, name: str, body: dict[str, Any]) -> Any:
    raise AssertionError("no chunkd calls expected")


def open_master(path: Path) -> Master:
    return Master.open(CFG, no_chunkd, path)


async def make_tree(m: Master, n: int, prefix: bytes = b"f") -> None:
    d = await m.mutate(records.mkdir(ROOT_INO, prefix + b"-dir", 0o755, 0, 0,
                                     m.ns.next_ino))
    for i in range(n):
        ino = await m.mutate(records.create(d, b"%s%d" % (prefix, i), stat.S_IFREG | 0o644,
                                            1, 2, 0, m.ns.next_ino))
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
        await m.mutate(records.create(ROOT_INO, b"c%d" % i, stat.S_IFREG | 0o600, 0, 0, 0,
                                      m.ns.next_ino))
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


# ------------------------------------------------------------ damage before the tail

def _frames(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of every frame in a log file."""
    data, pos, out = path.read_bytes(), 0, []
    while pos < len(data):
        length = int.from_bytes(data[pos:pos + 4], "little")
        out.append((pos, 8 + length))
        pos += 8 + length
    return out


def _closed_tree(path: Path, n: int = 5) -> Path:
    m = open_master(path)
    trio.run(make_tree, m, n)
    m.close()
    return logs(path)[-1]


@pytest.mark.parametrize("where", ["payload", "length", "crc"])
def test_mid_log_damage_is_refused(tmp_path: Path, where: str) -> None:
    path = _closed_tree(tmp_path)
    offset, length = _frames(path)[4]
    data = bytearray(path.read_bytes())
    data[offset + {"payload": 8 + length // 2, "length": 1, "crc": 5}[where]] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(LogDamage) as info:
        open_master(tmp_path)
    assert info.value.path == path and info.value.offset == offset
    assert str(path) in str(info.value) and f"offset {offset}" in str(info.value)
    assert path.read_bytes() == bytes(data)          # untouched


def test_damage_in_an_older_log_is_refused(tmp_path: Path) -> None:
    path = _closed_tree(tmp_path)
    good = path.read_bytes()
    last = read_log(path)[-1][0]
    # a torn write at the end of a log that is not the newest one
    path.write_bytes(good + b"\x30\x00\x00\x00torn")
    newer = tmp_path / f"{LOG_PREFIX}{last:016d}"
    newer.write_bytes(frame(last + 1, {"op": "setgoal", "ino": ROOT_INO, "goal": 2,
                                       "recursive": False, "now": 1}))
    with pytest.raises(LogDamage) as info:
        open_master(tmp_path)
    assert info.value.path == path and info.value.offset == len(good)
    assert "not the newest" in str(info.value)


def test_sequence_gap_is_refused(tmp_path: Path) -> None:
    path = _closed_tree(tmp_path)
    frames = _frames(path)
    data = path.read_bytes()
    offset, length = frames[3]
    path.write_bytes(data[:offset] + data[offset + length:])     # one whole record gone
    with pytest.raises(LogDamage) as info:
        open_master(tmp_path)
    assert info.value.offset == offset and "sequence gap" in str(info.value)
    assert "expected 4" in str(info.value)


def test_record_that_does_not_replay_is_refused(tmp_path: Path) -> None:
    path = _closed_tree(tmp_path)
    records = read_log(path)
    create = next(rec for _seq, rec in records if rec["op"] == "create")
    size = path.stat().st_size
    with open(path, "ab") as f:                 # the same create again: fails
        f.write(frame(records[-1][0] + 1, create))
    with pytest.raises(LogDamage) as info:
        open_master(tmp_path)
    assert info.value.path == path and info.value.offset == size
    assert "does not replay" in str(info.value)
    assert f"record {records[-1][0] + 1} " in str(info.value)


def test_recover_log_keeps_a_copy_and_cuts(tmp_path: Path) -> None:
    path = _closed_tree(tmp_path)
    offset, length = _frames(path)[6]
    data = bytearray(path.read_bytes())
    data[offset + 8 + length // 2] ^= 0x01
    path.write_bytes(bytes(data))
    m = Master.open(CFG, no_chunkd, tmp_path, recover_log=True)
    assert m.oplog.last_seq == 6
    copies = list(tmp_path.glob(f"{path.name}.damaged-*"))
    assert len(copies) == 1 and copies[0].read_bytes() == bytes(data)
    assert path.stat().st_size == offset
    trio.run(make_tree, m, 2, b"after")         # and it keeps working
    live = state(m)
    m.close()
    again = open_master(tmp_path)
    assert state(again) == live
    again.close()


# ------------------------------------------------------------ a log that cannot be written

def _durable_view(m: Master) -> Any:
    """The state without the id high-water marks (never reused, so kept)."""
    s = state(m)
    return {k: v for k, v in s.items() if k not in ("next_ino", "next_handle")}


def _create(m: Master, name: bytes) -> Any:
    return m.mutate(records.create(ROOT_INO, name, stat.S_IFREG | 0o644, 0, 0, 0,
                                   m.ns.next_ino))


def test_failed_write_undoes_unacknowledged_records(tmp_path: Path) -> None:
    """/dev/full in place of the log file: each write fails with ENOSPC."""
    from master.api.metrics import collect

    m = open_master(tmp_path)
    trio.run(make_tree, m, 3)
    durable = _durable_view(m)
    fd = m.oplog._fd
    saved = os.dup(fd)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, fd)
    os.close(full)
    codes: list[str] = []

    async def one(i: int) -> None:
        try:
            await _create(m, b"lost%d" % i)
        except GFSError as exc:
            codes.append(exc.code)

    async def burst() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(one, i)

    try:
        trio.run(burst)
        assert codes == ["ENOSPC"] * 20
        assert _durable_view(m) == durable            # nothing unacknowledged visible
        for i in range(20):
            with pytest.raises(GFSError):
                m.ns.lookup(ROOT_INO, b"lost%d" % i)
        before = state(m)
        with pytest.raises(GFSError) as info:       # refused, without touching memory
            trio.run(_create, m, b"refused")
        assert info.value.code == "ENOSPC" and state(m) == before
        metrics = {fam.name: fam.samples[0].value for fam in collect(m)
                   if fam.name.startswith("gfs_master_oplog_fail")}
        assert metrics == {"gfs_master_oplog_failed": 1, "gfs_master_oplog_failures": 1}
        assert not trio.run(m.reopen_log)            # still no room
    finally:
        os.dup2(saved, fd)                          # space is back
        os.close(saved)
    assert trio.run(m.reopen_log)
    assert m.oplog.failed is None
    trio.run(_create, m, b"after")
    live = state(m)
    m.close()
    again = open_master(tmp_path)
    assert state(again) == live
    assert again.ns.lookup(ROOT_INO, b"after") is not None
    with pytest.raises(GFSError):
        again.ns.lookup(ROOT_INO, b"lost0")
    again.close()


def test_checkpoint_loop_survives_unexpected_errors(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    m = Master.open(dataclasses.replace(CFG, checkpoint_every=1), no_chunkd, tmp_path)
    calls = []

    async def broken() -> int:
        calls.append(1)
        raise KeyError("a bug")

    m.checkpoint = broken  # type: ignore[method-assign]
    loop = CheckpointLoop(m, period=0.01)

    async def run() -> None:
        with trio.move_on_after(0.5):
            await loop.run_forever()

    with caplog.at_level(logging.ERROR):
        trio.run(run)
    m.close()
    assert len(calls) >= 3
    assert "Traceback" in caplog.text and "KeyError" in caplog.text


def test_failed_write_keeps_the_chunk_registry_consistent(tmp_path: Path) -> None:
    """A lost truncate deletes no replica; a lost allocation's chunk is garbage."""
    m = open_master(tmp_path)
    trio.run(make_tree, m, 3)
    d = m.ns.lookup(ROOT_INO, b"f-dir").ino
    ino = m.ns.lookup(d, b"f2").ino
    kept = m.ns.chunk_at(ino, 0)
    assert kept is not None
    m.registry.register("c1", "http://c1", "r", 1 << 30, 0, 1 << 30, [(kept, 1)], m.ns.chunks)
    fd = m.oplog._fd
    saved = os.dup(fd)
    full = os.open("/dev/full", os.O_WRONLY)

    async def lose() -> None:
        os.dup2(full, fd)
        new = m.ns.next_handle
        _, seq = m.stage({"op": "add_chunk", "ino": ino, "index": 1, "handle": new,
                          "version": 1})
        m.registry.set_locations(new, ["c1"])       # the chunkd made it meanwhile
        with pytest.raises(GFSError):
            await m.mutate({"op": "setattr", "ino": ino, "size": 0, "now": time.time_ns()})
        with pytest.raises(GFSError):
            await m.oplog.commit(seq)
        assert m.ns.chunk_at(ino, 0) == kept and m.ns.chunk_at(ino, 1) is None
        assert m.registry.pending_delete == {"c1": {new}}
        assert m.registry.locations == {kept: {"c1"}}
        assert m.ns.next_handle > new               # never handed out again

    try:
        trio.run(lose)
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(full)
    assert trio.run(m.reopen_log)
    m.close()


def test_a_failed_write_ends_the_shadows_streams_and_forgets_the_lost_records(
        tmp_path: Path) -> None:
    """Records are streamed to shadows as they are appended (their fsync
    overlaps ours). Records a failed write undoes are no longer offered
    (records_from, crc_at), and every follow stream ends, so a shadow that
    got one of them reconnects, finds its last record is not ours and resyncs."""
    import msgpack
    m = open_master(tmp_path)
    trio.run(make_tree, m, 3)
    good = m.oplog.durable_seq
    got: list[Any] = []

    async def main() -> None:
        shadow = m.shipper.open_stream("http://127.0.0.2:5000", 1, None)
        stream = m.shipper.follow_stream(shadow, 1)
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        ended = trio.Event()

        async def follow() -> None:
            async for piece in stream:
                unpacker.feed(piece)
                got.extend(unpacker)
            ended.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.sleep(0.05)
            assert got[-1][0] == good             # everything so far, streamed
            fd = m.oplog._fd
            saved, full = os.dup(fd), os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, fd)
            os.close(full)
            try:
                with pytest.raises(GFSError):
                    await _create(m, b"lost")
            finally:
                os.dup2(saved, fd)
                os.close(saved)
            with trio.fail_after(3):                 # the stream ends by itself
                await ended.wait()
    trio.run(main)
    lost = good + 1
    assert [x[0] for x in got if isinstance(x, list)][-1] == lost    # it was sent at once
    assert m.oplog.records_from(lost) is None and m.oplog.crc_at(lost) is None
    assert m.oplog.crc_at(good) is not None
    m.close()
