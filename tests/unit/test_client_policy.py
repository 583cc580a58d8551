"""Client policy that used to live in the FUSE layer (issue 11): permission
checks, the O_CREAT race, O_TRUNC on open, record splitting of O_APPEND
writes, and the one mapping of FUSE's rename flags. Pure logic: the Client's
namespace and append calls are stubbed, no cluster runs."""
from __future__ import annotations

import errno
import os
import stat
from typing import Any

import pyfuse3
import pytest
import trio

from gfsfs.client import perms
from gfsfs.client.core import Client, OpenFile
from gfsfs.client.chunkio import ReadAhead
from gfsfs.client.types import Attr, Ctx, replica
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import RENAME_EXCHANGE, RENAME_NOREPLACE
from gfsfs.fuse.operations import rename_flags

R, W, X = os.R_OK, os.W_OK, os.X_OK


def attr(mode: int, uid: int = 100, gid: int = 200, size: int = 0, ino: int = 7) -> Attr:
    return {"ino": ino, "mode": mode, "uid": uid, "gid": gid, "size": size, "nlink": 1,
            "atime_ns": 0, "mtime_ns": 0, "ctime_ns": 0}


def ctx(uid: int, gid: int = 999, gids: tuple[int, ...] = ()) -> Ctx:
    return {"uid": uid, "gid": gid, "gids": sorted({gid, *gids})}


# ---------------------------------------------------------------- perms

def test_owner_group_and_others_get_their_own_bits() -> None:
    a = attr(stat.S_IFREG | 0o640)
    assert perms.allowed(a, ctx(100), R | W)
    assert not perms.allowed(a, ctx(100), X)
    assert perms.allowed(a, ctx(5, gids=(200,)), R)
    assert not perms.allowed(a, ctx(5, gids=(200,)), W)
    assert perms.allowed(a, ctx(5, gid=200), R)           # the primary group counts too
    assert not perms.allowed(a, ctx(5), R)
    assert perms.allowed(a, ctx(5), 0)                     # F_OK: nothing asked


def test_the_first_class_the_caller_is_in_decides() -> None:
    a = attr(stat.S_IFREG | 0o077)                        # owner: nothing, others: all
    assert not perms.allowed(a, ctx(100, gids=(200,)), R)
    assert not perms.allowed(attr(stat.S_IFREG | 0o707), ctx(5, gids=(200,)), R)


def test_root_may_do_anything_but_execute_what_no_one_may() -> None:
    for who in (ctx(0), None):
        assert perms.allowed(attr(stat.S_IFREG | 0o000), who, R | W)
        assert not perms.allowed(attr(stat.S_IFREG | 0o644), who, X)
        assert perms.allowed(attr(stat.S_IFREG | 0o001), who, X)
        assert perms.allowed(attr(stat.S_IFDIR | 0o000), who, R | W | X)


def test_open_access_follows_accmode_and_o_trunc() -> None:
    assert perms.open_access(os.O_RDONLY) == R
    assert perms.open_access(os.O_WRONLY) == W
    assert perms.open_access(os.O_RDWR) == R | W
    assert perms.open_access(os.O_RDONLY | os.O_TRUNC) == R | W
    assert perms.open_access(os.O_ACCMODE) == R | W      # the invalid fourth accmode


def test_replica_from_the_master_reply() -> None:
    assert replica({"id": "c1", "addr": "http://h:1/"}).addr == "http://h:1"
    assert replica({"addr": "http://h:2"}).id == ""


def test_open_file_writable() -> None:
    ahead = ReadAhead(0, 0)
    assert not OpenFile(1, os.O_RDONLY | os.O_APPEND, ahead).writable
    assert OpenFile(1, os.O_WRONLY, ahead).writable
    assert OpenFile(1, os.O_RDWR | os.O_TRUNC, ahead).writable


# ---------------------------------------------------------------- rename flags

def test_rename_flags_map_fuse_to_the_clients() -> None:
    assert rename_flags(0) == 0
    assert rename_flags(pyfuse3.RENAME_NOREPLACE) == RENAME_NOREPLACE
    assert rename_flags(pyfuse3.RENAME_EXCHANGE) == RENAME_EXCHANGE
    assert rename_flags(pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE) == \
        RENAME_NOREPLACE | RENAME_EXCHANGE      # the master refuses the pair itself
    unknown = 1 << 20
    with pytest.raises(pyfuse3.FUSEError) as info:
        rename_flags(pyfuse3.RENAME_NOREPLACE | unknown)
    assert info.value.errno == errno.EINVAL


# ---------------------------------------------------------------- a stubbed client

class Stub(Client):
    """A Client whose master and appends are a dict of inodes and a list."""

    def __init__(self, existing: Attr | None = None, create_error: str | None = "EEXIST") -> None:
        super().__init__(ClientConfig(short_circuit=False), None, None)  # type: ignore[arg-type]
        self.existing = existing
        self.create_error = create_error
        self.calls: list[tuple[Any, ...]] = []
        self.records: list[bytes] = []
        self.fail_at: int | None = None
        self.limit = 4

    async def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int,
                     rdev: int = 0, ctx: Ctx | None = None) -> Attr:
        self.calls.append(("create", name, mode))
        if self.create_error:
            raise GFSError(self.create_error, "taken")
        return attr(mode, uid, gid, ino=9)

    async def lookup(self, parent: int, name: bytes, ctx: Ctx | None = None) -> Attr:
        self.calls.append(("lookup", name))
        if self.existing is None:
            raise GFSError(Code.ENOENT, "gone")
        return self.existing

    async def getattr(self, ino: int, ctx: Ctx | None = None) -> Attr:
        self.calls.append(("getattr", ino))
        assert self.existing is not None
        return self.existing

    async def setattr(self, ino: int, ctx: Ctx | None = None, **changes: Any) -> Attr:
        self.calls.append(("setattr", ino, changes))
        assert self.existing is not None
        return dict(self.existing, **changes)

    async def max_record(self) -> int:
        return self.limit

    async def append(self, ino: int, data: bytes | bytearray | memoryview,
                     sync: bool = False) -> int:
        if self.fail_at == len(self.records):
            raise GFSError(Code.EIO, "replica gone")
        self.records.append(bytes(data))
        return 0


def create_open(client: Stub, flags: int, who: Ctx | None = None) -> Attr:
    async def go() -> Attr:
        return await client.create_open(1, b"f", stat.S_IFREG | 0o644, 100, 200, flags,
                                        who or ctx(100))
    return trio.run(go)


def code_of(client: Stub, flags: int, who: Ctx | None = None) -> str:
    with pytest.raises(GFSError) as info:
        create_open(client, flags, who)
    return str(info.value.code)


def test_create_open_creates_when_the_name_is_free() -> None:
    client = Stub(create_error=None)
    assert create_open(client, os.O_CREAT | os.O_WRONLY)["ino"] == 9
    assert [c[0] for c in client.calls] == ["create"]


def test_racing_o_creat_opens_the_file_made_meanwhile() -> None:
    client = Stub(attr(stat.S_IFREG | 0o644, size=10))
    got = create_open(client, os.O_CREAT | os.O_WRONLY)
    assert got["size"] == 10                               # opened, not emptied
    assert [c[0] for c in client.calls] == ["create", "lookup", "getattr"]


def test_racing_o_creat_with_o_trunc_empties_it() -> None:
    client = Stub(attr(stat.S_IFREG | 0o644, size=10))
    assert create_open(client, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)["size"] == 0
    assert client.calls[-1] == ("setattr", 7, {"size": 0})
    client = Stub(attr(stat.S_IFREG | 0o644, size=0))    # already empty: no setattr
    create_open(client, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
    assert client.calls[-1][0] == "getattr"


def test_racing_o_creat_refusals() -> None:
    assert code_of(Stub(attr(stat.S_IFREG | 0o644)), os.O_CREAT | os.O_EXCL) == "EEXIST"
    assert code_of(Stub(attr(stat.S_IFDIR | 0o755)), os.O_CREAT) == "EISDIR"
    assert code_of(Stub(attr(stat.S_IFIFO | 0o666)), os.O_CREAT) == "EEXIST"
    # someone else's file, readable only: no writing open of it
    theirs = attr(stat.S_IFREG | 0o644, uid=5)
    assert code_of(Stub(theirs), os.O_CREAT | os.O_RDWR) == "EACCES"
    assert code_of(Stub(theirs), os.O_CREAT | os.O_RDONLY | os.O_TRUNC) == "EACCES"
    assert create_open(Stub(theirs), os.O_CREAT | os.O_RDONLY)["uid"] == 5
    # other failures are not a race
    assert code_of(Stub(create_error="EACCES"), os.O_CREAT) == "EACCES"


def test_open_inode_truncates_for_o_trunc() -> None:
    client = Stub(attr(stat.S_IFREG | 0o644, size=10))

    async def go(flags: int) -> OpenFile:
        return await client.open_inode(7, flags, ctx(100))

    of = trio.run(go, os.O_WRONLY | os.O_TRUNC)
    assert (of.ino, of.flags) == (7, os.O_WRONLY | os.O_TRUNC)
    assert client.calls == [("setattr", 7, {"size": 0})] and client.state(7).size == 0
    client.calls.clear()
    trio.run(go, os.O_RDONLY)
    assert client.calls == [] and client.state(7).size == -1


# ---------------------------------------------------------------- O_APPEND writes

def append_records(client: Stub, data: bytes) -> int:
    async def go() -> int:
        return await client.append_records(7, data, queued=False)
    return trio.run(go)


def test_append_records_cuts_at_the_record_limit_in_order() -> None:
    client = Stub()
    assert append_records(client, b"abcdefghij") == 10
    assert client.records == [b"abcd", b"efgh", b"ij"]
    assert append_records(client, b"") == 0 and len(client.records) == 3


def test_append_records_short_write_after_a_later_failure() -> None:
    client = Stub()
    client.fail_at = 2
    assert append_records(client, b"abcdefghij") == 8
    client = Stub()
    client.fail_at = 0
    with pytest.raises(GFSError):
        append_records(client, b"abcdefghij")
