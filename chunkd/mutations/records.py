"""The record appends a replica has applied, by the writer's record id: what
makes a retried record append land once (issue 12, docs/consistency.md).

A writer gives each record one random ``record_id`` for all its attempts.
Every replica that applies a record (the primary picking its offset, each
secondary told by ``apply``) remembers ``record_id -> (offset, length,
crc32)`` for the chunk. A retry that reaches a primary which has the record
already (it applied it itself, or as a secondary of an earlier primary)
is not appended again, if its bytes are still there (the primary reads them
back: a record of a failed attempt may since have been written over by
another primary's record, which this replica applied as a secondary): the
primary sends ``apply`` of the same bytes at the same offset to its
secondaries (a replica that has them writes them again, one that missed
them gets them) and answers the first offset. Otherwise it is a new record.

The memory is bounded (:data:`PER_CHUNK` records per chunk, :data:`TOTAL`
in all, oldest forgotten first) and not kept across a restart: a retry is
seconds after its attempt, not hours.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass

PER_CHUNK = 4096
TOTAL = 1 << 20


@dataclass(frozen=True)
class Applied:
    offset: int
    length: int
    crc: int


class RecordMemory:
    def __init__(self, per_chunk: int = PER_CHUNK, total: int = TOTAL) -> None:
        self.per_chunk = per_chunk
        self.total = total
        self.chunks: OrderedDict[int, OrderedDict[int, Applied]] = OrderedDict()
        self.count = 0
        self.repeats = 0                    # retries answered from memory (metrics, tests)

    def note(self, handle: int, record_id: int, offset: int, data: bytes) -> None:
        records = self.chunks.get(handle)
        if records is None:
            records = self.chunks[handle] = OrderedDict()
        self.chunks.move_to_end(handle)
        if record_id not in records:
            self.count += 1
        records[record_id] = Applied(offset, len(data), zlib.crc32(data))
        records.move_to_end(record_id)
        while len(records) > self.per_chunk:
            records.popitem(last=False)
            self.count -= 1
        while self.count > self.total and self.chunks:
            oldest = next(iter(self.chunks))
            gone = self.chunks[oldest]
            gone.popitem(last=False)
            self.count -= 1
            if not gone:
                del self.chunks[oldest]

    def find(self, handle: int, record_id: int, data: bytes, length: int) -> Applied | None:
        """Where this replica applied ``record_id`` of ``data`` (the same
        bytes, still within the chunk's ``length``), or None."""
        seen = self.chunks.get(handle, {}).get(record_id)
        if seen is None or seen.length != len(data) or seen.offset + seen.length > length \
                or seen.crc != zlib.crc32(data):
            return None
        return seen

    def drop(self, handle: int, record_id: int) -> None:
        """Forget one record (its bytes are no longer where it was applied)."""
        if self.chunks.get(handle, {}).pop(record_id, None) is not None:
            self.count -= 1

    def cut(self, handle: int, length: int) -> None:
        """The chunk was truncated to ``length``: forget records beyond it."""
        records = self.chunks.get(handle)
        if records is None:
            return
        for rid in [r for r, a in records.items() if a.offset + a.length > length]:
            del records[rid]
            self.count -= 1

    def forget(self, handle: int) -> None:
        records = self.chunks.pop(handle, None)
        if records is not None:
            self.count -= len(records)
