"""Pure data-plane logic of the client: no network, no FUSE.

- :func:`split_range` cuts a byte range of a file into pieces that never cross a
  chunk boundary (and are at most ``max_piece`` bytes).
- :class:`WriteBuffer` holds an inode's dirty extents, merged, in file order.
- :func:`overlay` lays dirty extents over bytes read from the chunkds.
- :class:`ReadAhead` detects a sequential reader and keeps a window of file
  ranges fetched ahead of it (the fetching itself is the client's job).

Everything here is synchronous and deterministic, so tests/unit/test_client_unit.py
drives it directly.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import trio

MIB = 1 << 20


@dataclass(frozen=True)
class Piece:
    """``length`` bytes at ``file_off``, i.e. at ``chunk_off`` in chunk ``index``."""
    index: int
    chunk_off: int
    file_off: int
    length: int


def split_range(offset: int, length: int, chunk_size: int,
                max_piece: int | None = None) -> list[Piece]:
    """``[offset, offset+length)`` as pieces inside single chunks."""
    if offset < 0 or length < 0 or chunk_size <= 0:
        raise ValueError("negative offset/length or bad chunk size")
    limit = max_piece if max_piece and max_piece > 0 else chunk_size
    pieces: list[Piece] = []
    pos, end = offset, offset + length
    while pos < end:
        index, chunk_off = divmod(pos, chunk_size)
        n = min(end - pos, chunk_size - chunk_off, limit)
        pieces.append(Piece(index, chunk_off, pos, n))
        pos += n
    return pieces


@dataclass
class Extent:
    start: int
    data: bytearray

    @property
    def end(self) -> int:
        return self.start + len(self.data)


@dataclass(frozen=True)
class Batch:
    """Extents taken out of a write buffer and being sent (``lo``..``hi``
    spans them); ``done`` is set when the batch finished, well or not."""
    lo: int
    hi: int
    done: trio.Event
    extents: list[Extent]


def overlay(data: bytes, offset: int, layers: list[list[Extent]]) -> bytes:
    """``data`` (read at ``offset``) with the bytes of ``layers`` of extents
    laid over it, later layers over earlier ones."""
    buf = bytearray(data)
    end = offset + len(buf)
    for extents in layers:
        for ext in extents:
            lo, hi = max(offset, ext.start), min(end, ext.end)
            if lo < hi:
                buf[lo - offset:hi - offset] = memoryview(ext.data)[lo - ext.start:hi - ext.start]
    return bytes(buf)


class WriteBuffer:
    """Dirty byte ranges of one inode, kept sorted, non-overlapping and
    non-adjacent (touching extents are merged; later writes win)."""

    def __init__(self) -> None:
        self.extents: list[Extent] = []
        self.nbytes = 0

    def __bool__(self) -> bool:
        return bool(self.extents)

    @property
    def end(self) -> int:
        """One past the last dirty byte (0 when clean)."""
        return self.extents[-1].end if self.extents else 0

    def add(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        n = len(data)
        if n == 0:
            return
        ends = [e.end for e in self.extents]
        i = bisect.bisect_left(ends, offset)          # first extent ending at/after offset
        j = i
        while j < len(self.extents) and self.extents[j].start <= offset + n:
            j += 1
        merged = self.extents[i:j]
        self.nbytes -= sum(len(e.data) for e in merged)
        if merged and merged[0].start <= offset:
            first = merged[0]
            start, base, rest = first.start, first.data, merged[1:]
            pos = offset - start
            base[pos:pos + n] = data                   # extends base when it runs past
        else:
            start, base, rest = offset, bytearray(data), merged
        for ext in rest:                               # keep tails the new data does not cover
            end = start + len(base)
            if ext.end > end:
                base += memoryview(ext.data)[end - ext.start:]
        self.nbytes += len(base)
        self.extents[i:j] = [Extent(start, base)]

    def take(self) -> list[Extent]:
        """All dirty extents; the buffer is clean afterwards."""
        extents, self.extents, self.nbytes = self.extents, [], 0
        return extents


# ---------------------------------------------------------------- read-ahead

SEQ_SLACK = 1 * MIB     # concurrent kernel requests may arrive slightly out of order
SEQ_STREAK = 2          # reads in a row before reading ahead


@dataclass
class AheadPiece:
    start: int
    length: int
    gen: int
    done: trio.Event = field(default_factory=trio.Event)
    data: bytes | None = None
    failed: bool = False

    @property
    def end(self) -> int:
        return self.start + self.length


class ReadAhead:
    """Sequential-read detection and the window of pieces read ahead for one
    open file. The owner starts fetches for what :meth:`plan` returns and fills
    in ``data`` (or ``failed``) then sets ``done``."""

    def __init__(self, window: int, pieces: int) -> None:
        pieces = max(1, pieces)
        self.window = max(window, MIB)
        size = min(4 * MIB, max(MIB, self.window // pieces))
        self.piece_size = size - size % (64 * 1024)
        self.max_pieces = pieces
        self.last_end = -1
        self.streak = 0
        self.pieces: dict[int, AheadPiece] = {}
        self.gen = 0

    def observe(self, offset: int, size: int) -> bool:
        """Record a read; True when the reader looks sequential."""
        if offset == 0 or (self.last_end >= 0 and abs(offset - self.last_end) <= SEQ_SLACK):
            self.streak += 1
        else:
            self.streak = 0
            self.pieces.clear()
        self.last_end = max(self.last_end, offset + size) if self.streak else offset + size
        return self.streak >= SEQ_STREAK

    def sync_gen(self, gen: int) -> None:
        """Drop every piece when the inode changed (our own writes/truncates)."""
        if gen != self.gen:
            self.pieces.clear()
            self.gen = gen

    def plan(self, offset: int, file_size: int) -> list[AheadPiece]:
        """New pieces to fetch for a reader at ``offset``; evicts old ones."""
        ps = self.piece_size
        for start in [s for s, p in self.pieces.items() if p.end + ps <= offset]:
            del self.pieces[start]
        new: list[AheadPiece] = []
        start = offset - offset % ps
        limit = min(offset + self.window, file_size)
        while start < limit and len(self.pieces) < self.max_pieces + 1:
            if start not in self.pieces:
                piece = AheadPiece(start, min(ps, file_size - start), self.gen)
                self.pieces[start] = piece
                new.append(piece)
            start += ps
        return new

    def covering(self, offset: int, size: int) -> list[AheadPiece] | None:
        """The pieces that together hold ``[offset, offset+size)``, or None."""
        ps = self.piece_size
        out: list[AheadPiece] = []
        pos, end = offset, offset + size
        while pos < end:
            piece = self.pieces.get(pos - pos % ps)
            if piece is None or piece.failed or piece.gen != self.gen or piece.end < min(end, piece.start + ps):
                return None
            out.append(piece)
            pos = piece.start + ps
        return out

    @staticmethod
    def assemble(pieces: list[AheadPiece], offset: int, size: int) -> bytes | None:
        """Bytes of ``[offset, offset+size)`` from finished pieces (None if one failed)."""
        parts: list[bytes] = []
        end = offset + size
        for p in pieces:
            if p.failed or p.data is None:
                return None
            lo, hi = max(offset, p.start), min(end, p.end)
            chunk = p.data[lo - p.start:hi - p.start]
            parts.append(chunk + bytes(hi - lo - len(chunk)))
        return b"".join(parts)
