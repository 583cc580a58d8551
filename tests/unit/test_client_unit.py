"""Pure client logic: write-buffer merging, chunk splitting, read-ahead
detection, the errno boundary. No network, no FUSE."""
from __future__ import annotations

import errno
import random

import pyfuse3
import pytest
import trio

from gfsfs.client.chunkio import MIB, Piece, ReadAhead, WriteBuffer, overlay, split_range
from gfsfs.common.errors import GFSError
from gfsfs.fuse.operations import errno_boundary, to_fuse_errno


# ---------------------------------------------------------------- split_range

def test_split_inside_one_chunk() -> None:
    assert split_range(10, 20, 100) == [Piece(0, 10, 10, 20)]


def test_split_across_chunk_boundaries() -> None:
    pieces = split_range(90, 220, 100)
    assert pieces == [Piece(0, 90, 90, 10), Piece(1, 0, 100, 100),
                      Piece(2, 0, 200, 100), Piece(3, 0, 300, 10)]
    assert sum(p.length for p in pieces) == 220


def test_split_respects_max_piece() -> None:
    pieces = split_range(0, 250, 100, max_piece=40)
    assert all(p.length <= 40 for p in pieces)
    assert all(p.chunk_off + p.length <= 100 for p in pieces)
    assert [p.file_off for p in pieces] == [0, 40, 80, 100, 140, 180, 200, 240]


def test_split_empty_and_bad() -> None:
    assert split_range(5, 0, 100) == []
    with pytest.raises(ValueError):
        split_range(-1, 5, 100)


# ---------------------------------------------------------------- WriteBuffer

def _model_check(buf: WriteBuffer, model: dict[int, int]) -> None:
    exts = buf.extents
    for a, b in zip(exts, exts[1:]):
        assert a.end < b.start, "extents must be sorted, disjoint and not adjacent"
    got = {e.start + i: v for e in exts for i, v in enumerate(e.data)}
    assert got == model
    assert buf.nbytes == len(model)


def test_append_merges_in_place() -> None:
    buf = WriteBuffer()
    buf.add(0, b"abc")
    buf.add(3, b"def")
    buf.add(6, b"g")
    assert len(buf.extents) == 1 and bytes(buf.extents[0].data) == b"abcdefg"
    assert buf.end == 7 and buf.nbytes == 7


def test_overwrite_and_bridge() -> None:
    buf = WriteBuffer()
    buf.add(0, b"aaaa")
    buf.add(10, b"bbbb")
    assert len(buf.extents) == 2
    buf.add(2, b"XXXXXXXXXX")             # covers the gap, overlaps both
    assert len(buf.extents) == 1
    assert bytes(buf.extents[0].data) == b"aaXXXXXXXXXXbb"
    buf.add(5, b"y")
    assert bytes(buf.extents[0].data) == b"aaXXXyXXXXXXbb"


def test_write_before_existing_extent() -> None:
    buf = WriteBuffer()
    buf.add(5, b"world")
    buf.add(0, b"hello")                   # adjacent: merged
    assert [(e.start, bytes(e.data)) for e in buf.extents] == [(0, b"helloworld")]


def test_take_empties() -> None:
    buf = WriteBuffer()
    buf.add(100, b"x")
    exts = buf.take()
    assert len(exts) == 1 and not buf and buf.nbytes == 0 and buf.end == 0


def test_overlay_lays_later_layers_over_earlier() -> None:
    older, newer = WriteBuffer(), WriteBuffer()
    older.add(2, b"ab")
    older.add(8, b"cd")
    newer.add(3, b"XY")
    assert overlay(b"." * 10, 1, [older.extents]) == b".ab....cd."
    assert overlay(b"." * 10, 1, [older.extents, newer.extents]) == b".aXY...cd."
    assert overlay(b"." * 4, 100, [older.extents]) == b"...."


def test_random_writes_match_model() -> None:
    rng = random.Random(7)
    for _ in range(50):
        buf = WriteBuffer()
        model: dict[int, int] = {}
        for _ in range(30):
            off = rng.randrange(0, 200)
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
            buf.add(off, data)
            for i, v in enumerate(data):
                model[off + i] = v
            _model_check(buf, model)


# ---------------------------------------------------------------- read-ahead

def test_sequential_detection() -> None:
    ra = ReadAhead(8 * MIB, 4)
    assert not ra.observe(0, 131072)            # first read: streak 1
    assert ra.observe(131072, 131072)           # second in a row: sequential
    assert ra.observe(262144, 131072)
    assert not ra.observe(100 * MIB, 4096)      # a jump resets
    assert not ra.observe(100 * MIB + 4096, 4096)   # streak 1 again
    assert ra.observe(100 * MIB + 8192, 4096)


def test_random_reads_not_sequential() -> None:
    ra = ReadAhead(8 * MIB, 4)
    offsets = [50 * MIB, 10 * MIB, 90 * MIB, 30 * MIB, 70 * MIB]
    assert not any(ra.observe(o, 4096) for o in offsets)


def test_plan_window_and_eviction() -> None:
    ra = ReadAhead(8 * MIB, 4)
    assert ra.piece_size == 2 * MIB
    new = ra.plan(0, 100 * MIB)
    assert [p.start for p in new] == [0, 2 * MIB, 4 * MIB, 6 * MIB]
    assert [p.start for p in ra.plan(MIB, 100 * MIB)] == [8 * MIB]
    assert ra.plan(MIB + 5, 100 * MIB) == []
    new = ra.plan(2 * MIB + 5, 100 * MIB)
    assert [p.start for p in new] == []          # 5 pieces: the window is full
    new = ra.plan(6 * MIB, 100 * MIB)            # pieces far behind are evicted
    assert 0 not in ra.pieces
    assert all(p.start < 6 * MIB + ra.window for p in new)


def test_plan_stops_at_file_size() -> None:
    ra = ReadAhead(8 * MIB, 4)
    new = ra.plan(0, 3 * MIB)
    assert [(p.start, p.length) for p in new] == [(0, 2 * MIB), (2 * MIB, MIB)]


def test_covering_and_assemble() -> None:
    ra = ReadAhead(4 * MIB, 4)                  # 1 MiB pieces
    pieces = ra.plan(0, 10 * MIB)
    for p in pieces:
        p.data = bytes([p.start // MIB]) * p.length
    got = ra.covering(MIB - 2, 4)
    assert got is not None and len(got) == 2
    assert ReadAhead.assemble(got, MIB - 2, 4) == b"\x00\x00\x01\x01"
    assert ra.covering(20 * MIB, 10) is None
    ra.sync_gen(1)                               # a local write drops everything
    assert ra.pieces == {} and ra.covering(0, 10) is None


def test_assemble_pads_short_piece() -> None:
    ra = ReadAhead(4 * MIB, 4)
    (p, *_rest) = ra.plan(0, 10 * MIB)
    p.data = b"abc"                              # chunk shorter than the file: zeros
    assert ReadAhead.assemble([p], 1, 5) == b"bc\0\0\0"


# ---------------------------------------------------------------- errno boundary

@pytest.mark.parametrize("exc, expected", [
    (GFSError("ENOENT", "x"), errno.ENOENT),
    (GFSError("STALE"), errno.ESTALE),
    (GFSError("CORRUPT"), errno.EIO),
    (GFSError("UNAVAILABLE"), errno.EIO),
    (GFSError("NOCHUNK"), errno.ENOENT),
    (GFSError("ENOSPC"), errno.ENOSPC),
    (GFSError("WHATEVER"), errno.EIO),
    (FileNotFoundError(errno.ENOENT, "gone"), errno.ENOENT),
    (PermissionError(errno.EACCES, "no"), errno.EACCES),
    (KeyError("bug"), errno.EIO),
    (pyfuse3.FUSEError(errno.EXDEV), errno.EXDEV),
])
def test_errno_boundary(exc: BaseException, expected: int) -> None:
    @errno_boundary
    async def handler() -> None:
        raise exc

    with pytest.raises(pyfuse3.FUSEError) as info:
        trio.run(handler)
    assert info.value.errno == expected
    assert to_fuse_errno(exc) == expected


def test_errno_boundary_passes_results() -> None:
    @errno_boundary
    async def handler(x: int) -> int:
        return x + 1

    assert trio.run(handler, 1) == 2


def test_dir_listing_serves_offsets_from_its_batch() -> None:
    from gfsfs.fuse.operations import DirListing
    d = DirListing(5)
    assert d.after(0) is None                       # nothing fetched yet
    batch = [(b"a", {}, 3), (b"b", {}, 7), (b"c", {}, 9)]
    d.keep(0, batch, complete=False)
    assert d.after(0) == batch
    assert d.after(3) == batch[1:] and d.after(8) == batch[2:]
    assert d.after(9) is None                       # past the batch, more to fetch
    d.keep(9, [(b"d", {}, 12)], complete=True)
    assert d.after(12) == [] and d.after(9) == [(b"d", {}, 12)]
    assert d.after(3) is None                       # before this window: fetch again
