"""master.state.records: every op-log record kind has one constructor, and each builds
exactly the bytes the master wrote before the constructors existed (old logs
must replay): the literal dicts below are copied from the old call sites."""
from __future__ import annotations

from typing import Any

import pytest

from gfsfs.common.errors import GFSError
from master.state import records
from master.state.namespace import Namespace
from master.state.oplog import frame

NOW = 1_700_000_000_123_456_789

# (constructor call, the literal dict the old code logged)
CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    (records.init(now=NOW), {"op": "init", "now": NOW}),
    # server.py via Master.new_ino_record: {"op": op, **fields, "ino": ..., "now": ...}
    (records.create(1, b"f", 0o100644, 10, 20, 0, 7, now=NOW),
     {"op": "create", "parent": 1, "name": b"f", "mode": 0o100644, "uid": 10, "gid": 20,
      "rdev": 0, "ino": 7, "now": NOW}),
    (records.mkdir(1, b"d", 0o755, 10, 20, 8, now=NOW),
     {"op": "mkdir", "parent": 1, "name": b"d", "mode": 0o755, "uid": 10, "gid": 20,
      "ino": 8, "now": NOW}),
    (records.symlink(1, b"s", b"f", 10, 20, 9, now=NOW),
     {"op": "symlink", "parent": 1, "name": b"s", "target": b"f", "uid": 10, "gid": 20,
      "ino": 9, "now": NOW}),
    (records.link(7, 1, b"g", now=NOW),
     {"op": "link", "ino": 7, "parent": 1, "name": b"g", "now": NOW}),
    (records.unlink(1, b"g", now=NOW), {"op": "unlink", "parent": 1, "name": b"g", "now": NOW}),
    (records.rmdir(1, b"d", now=NOW), {"op": "rmdir", "parent": 1, "name": b"d", "now": NOW}),
    (records.rename(1, b"f", 8, b"h", 1, now=NOW),
     {"op": "rename", "parent": 1, "name": b"f", "new_parent": 8, "new_name": b"h",
      "flags": 1, "now": NOW}),
    (records.setattr(7, now=NOW), {"op": "setattr", "ino": 7, "now": NOW}),
    (records.setattr(7, mode=0, uid=0, gid=0, size=0, atime_ns=0, mtime_ns=0,
                     write_handle=True, now=NOW),
     {"op": "setattr", "ino": 7, "mode": 0, "uid": 0, "gid": 0, "size": 0, "atime_ns": 0,
      "mtime_ns": 0, "write_handle": True, "now": NOW}),
    (records.setattr(7, size=5, mtime_ns=3, now=NOW),
     {"op": "setattr", "ino": 7, "size": 5, "mtime_ns": 3, "now": NOW}),
    (records.setxattr(7, b"user.a", b"v", 0, now=NOW),
     {"op": "setxattr", "ino": 7, "name": b"user.a", "value": b"v", "flags": 0, "now": NOW}),
    (records.removexattr(7, b"user.a", now=NOW),
     {"op": "removexattr", "ino": 7, "name": b"user.a", "now": NOW}),
    (records.setgoal(1, 2, True, now=NOW),
     {"op": "setgoal", "ino": 1, "goal": 2, "recursive": True, "now": NOW}),
    (records.extend(7, 100, 5, now=NOW),
     {"op": "extend", "ino": 7, "size": 100, "mtime_ns": 5, "now": NOW}),
    (records.add_chunk(7, 0, 3, 1),
     {"op": "add_chunk", "ino": 7, "index": 0, "handle": 3, "version": 1}),
    (records.drop_chunk(7, 0, 3), {"op": "drop_chunk", "ino": 7, "index": 0, "handle": 3}),
    (records.set_version(3, 2), {"op": "set_version", "handle": 3, "version": 2}),
    (records.set_versions([[3, 2], [4, 5]]),
     {"op": "set_versions", "versions": [[3, 2], [4, 5]]}),
    (records.snapshot(8, 1, b"snap", 20, 4, now=NOW),
     {"op": "snapshot", "src": 8, "parent": 1, "name": b"snap", "ino": 20, "count": 4,
      "now": NOW}),
    (records.reserve_handles(11), {"op": "reserve_handles", "next_handle": 11}),
    (records.cow(7, 0, 3, 10, 2, now=NOW),
     {"op": "cow", "ino": 7, "index": 0, "old": 3, "new": 10, "version": 2, "now": NOW}),
    (records.purge([7, 9]), {"op": "purge", "inos": [7, 9]}),
    (records.restore(7, 1, b"f", now=NOW),
     {"op": "restore", "ino": 7, "parent": 1, "name": b"f", "now": NOW}),
    (records.epoch(3, "http://127.0.0.2:5000"),
     {"op": "epoch", "epoch": 3, "primary": "http://127.0.0.2:5000"}),
    (records.setquota(8, 10, 20, 5, 15, 60, now=NOW),
     {"op": "setquota", "ino": 8, "bytes": 10, "inodes": 20, "soft_bytes": 5,
      "soft_inodes": 15, "grace_ns": 60, "now": NOW}),
    (records.rmquota(8, now=NOW), {"op": "rmquota", "ino": 8, "now": NOW}),
    (records.with_rid(records.unlink(1, b"g", now=NOW), 99),
     {"op": "unlink", "parent": 1, "name": b"g", "now": NOW, "rid": 99}),
]


@pytest.mark.parametrize("built,old", CASES, ids=[c[1]["op"] for c in CASES])
def test_constructor_writes_the_old_bytes(built: dict[str, Any], old: dict[str, Any]) -> None:
    assert built == old
    assert list(built) == list(old)               # key order: msgpack keeps it
    assert frame(1, built) == frame(1, old)


def test_every_op_has_a_constructor() -> None:
    applied = {name[len("_op_"):] for name in dir(Namespace) if name.startswith("_op_")}
    assert applied == set(records.OPS)
    assert {c[1]["op"] for c in CASES} == applied
    for op in records.OPS:
        assert callable(getattr(records, op)), op


def test_now_defaults_to_the_clock() -> None:
    rec = records.unlink(1, b"x")
    assert isinstance(rec["now"], int) and rec["now"] > NOW


def test_a_request_id_is_applied_once_and_remembered() -> None:
    """A record with a ``rid`` leaves what it returned in ``Namespace.rids``
    (the master answers a retry from there); an epoch only ever rises."""
    ns = Namespace(1 << 20)
    ino = ns.apply(records.with_rid(records.create(1, b"f", 0o100644, 0, 0, 0, 2), 7))
    assert ns.rids == {7: ino}
    ns.apply(records.epoch(2, "http://b"))
    assert (ns.epoch, ns.primary) == (2, "http://b")
    with pytest.raises(GFSError):
        ns.apply(records.epoch(2, "http://c"))
