"""Tier 1: the master's namespace and permission checks, no I/O."""
from __future__ import annotations

import stat
from typing import Any

import pytest

from gfsfs.common.errors import GFSError
from master.state import image
from master.state.namespace import MAX_FILE_SIZE, ROOT_INO, Namespace
from master.state.perms import Ctx, authorize

CS = 1 << 20


class NS:
    """A namespace driven through records, as the master does."""

    def __init__(self) -> None:
        self.ns = Namespace(CS, 3)
        self.now = 1000
        self.records: list[dict[str, Any]] = []

    def do(self, op: str, ctx: Ctx | None = None, **fields: Any) -> Any:
        self.now += 1
        rec = {"op": op, **fields, "now": self.now}
        if op in ("create", "mkdir", "symlink"):
            rec["ino"] = self.ns.next_ino
            rec.setdefault("uid", 0)
            rec.setdefault("gid", 0)
        rec = authorize(self.ns, rec, ctx)
        result = self.ns.apply(rec)
        self.records.append(rec)
        return result

    def file(self, parent: int, name: bytes, mode: int = 0o644, **kw: Any) -> int:
        return self.do("create", parent=parent, name=name, mode=stat.S_IFREG | mode, **kw)

    def mkdir(self, parent: int, name: bytes, mode: int = 0o755, **kw: Any) -> int:
        return self.do("mkdir", parent=parent, name=name, mode=mode, **kw)

    def names(self, ino: int) -> list[bytes]:
        return [n for n, _i, _c in self.ns.readdir(ino, 0, 10000)]


def code(exc: pytest.ExceptionInfo[GFSError]) -> str:
    return exc.value.code


@pytest.fixture
def t() -> NS:
    return NS()


def test_root(t: NS) -> None:
    root = t.ns.get(ROOT_INO)
    assert stat.S_ISDIR(root.mode) and root.mode & 0o7777 == 0o755
    assert (root.uid, root.gid, root.nlink) == (0, 0, 2)


def test_create_lookup_and_errors(t: NS) -> None:
    ino = t.file(ROOT_INO, b"f")
    assert t.ns.lookup(ROOT_INO, b"f").ino == ino
    attr = t.ns.attr(t.ns.get(ino))
    assert stat.S_ISREG(attr["mode"]) and attr["nlink"] == 1 and attr["size"] == 0
    with pytest.raises(GFSError) as e:
        t.file(ROOT_INO, b"f")
    assert code(e) == "EEXIST"
    for bad in (b"", b".", b"..", b"a/b", b"a\0b"):
        with pytest.raises(GFSError) as e:
            t.file(ROOT_INO, bad)
        assert code(e) == "EINVAL"
    with pytest.raises(GFSError) as e:
        t.file(ROOT_INO, b"x" * 256)
    assert code(e) == "ENAMETOOLONG"
    t.file(ROOT_INO, b"x" * 255)
    with pytest.raises(GFSError) as e:
        t.ns.lookup(ROOT_INO, b"nope")
    assert code(e) == "ENOENT"
    with pytest.raises(GFSError) as e:
        t.file(ino, b"under-a-file")
    assert code(e) == "ENOTDIR"
    fifo = t.do("create", parent=ROOT_INO, name=b"p", mode=stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(t.ns.get(fifo).mode)


def test_mkdir_rmdir_link_counts(t: NS) -> None:
    d = t.mkdir(ROOT_INO, b"d")
    assert t.ns.get(ROOT_INO).nlink == 3 and t.ns.get(d).nlink == 2
    t.mkdir(d, b"sub")
    assert t.ns.get(d).nlink == 3
    t.file(d, b"f")
    with pytest.raises(GFSError) as e:
        t.do("rmdir", parent=ROOT_INO, name=b"d")
    assert code(e) == "ENOTEMPTY"
    with pytest.raises(GFSError) as e:
        t.do("unlink", parent=ROOT_INO, name=b"d")
    assert code(e) == "EISDIR"
    with pytest.raises(GFSError) as e:
        t.do("rmdir", parent=d, name=b"f")
    assert code(e) == "ENOTDIR"
    t.do("unlink", parent=d, name=b"f")
    t.do("rmdir", parent=d, name=b"sub")
    t.do("rmdir", parent=ROOT_INO, name=b"d")
    assert t.ns.get(ROOT_INO).nlink == 2 and d not in t.ns.inodes


def test_parent_times_change(t: NS) -> None:
    d = t.mkdir(ROOT_INO, b"d")
    before = t.ns.get(d).mtime_ns
    t.file(d, b"f")
    after = t.ns.get(d)
    assert after.mtime_ns > before and after.ctime_ns == after.mtime_ns


def test_hard_links_and_chunk_release(t: NS) -> None:
    f = t.file(ROOT_INO, b"f")
    t.do("add_chunk", ino=f, index=0, handle=7, version=1)
    t.do("link", ino=f, parent=ROOT_INO, name=b"g")
    assert t.ns.get(f).nlink == 2
    t.do("unlink", parent=ROOT_INO, name=b"f")
    assert t.ns.get(f).nlink == 1 and 7 in t.ns.chunks
    t.do("unlink", parent=ROOT_INO, name=b"g")
    t.do("purge", inos=list(t.ns.trash))     # lazy deletion: after trash_time
    assert f not in t.ns.inodes and 7 not in t.ns.chunks
    assert t.ns.take_garbage() == {7}
    d = t.mkdir(ROOT_INO, b"d")
    with pytest.raises(GFSError) as e:
        t.do("link", ino=d, parent=ROOT_INO, name=b"dd")
    assert code(e) == "EPERM"


def test_symlink(t: NS) -> None:
    s = t.do("symlink", parent=ROOT_INO, name=b"s", target=b"/some/where")
    assert t.ns.readlink(s) == b"/some/where"
    assert stat.S_ISLNK(t.ns.get(s).mode) and t.ns.get(s).size == 11
    with pytest.raises(GFSError) as e:
        t.ns.readlink(ROOT_INO)
    assert code(e) == "EINVAL"
    with pytest.raises(GFSError) as e:
        t.do("symlink", parent=ROOT_INO, name=b"s2", target=b"x" * 5000)
    assert code(e) == "ENAMETOOLONG"


def test_rename_replace_file(t: NS) -> None:
    a = t.file(ROOT_INO, b"a")
    b = t.file(ROOT_INO, b"b")
    t.do("add_chunk", ino=b, index=0, handle=1, version=1)
    t.do("rename", parent=ROOT_INO, name=b"a", new_parent=ROOT_INO, new_name=b"b")
    assert t.ns.lookup(ROOT_INO, b"b").ino == a
    t.do("purge", inos=list(t.ns.trash))     # lazy deletion: after trash_time
    assert b not in t.ns.inodes and t.ns.take_garbage() == {1}
    assert t.names(ROOT_INO) == [b"b"]


def test_rename_directory_rules(t: NS) -> None:
    d = t.mkdir(ROOT_INO, b"d")
    sub = t.mkdir(d, b"sub")
    t.file(ROOT_INO, b"file")
    full = t.mkdir(ROOT_INO, b"full")
    t.file(full, b"x")
    empty = t.mkdir(ROOT_INO, b"empty")
    cases = [
        (ROOT_INO, b"d", sub, b"loop", "EINVAL"),
        (ROOT_INO, b"d", d, b"self", "EINVAL"),
        (ROOT_INO, b"d", ROOT_INO, b"file", "ENOTDIR"),
        (ROOT_INO, b"file", ROOT_INO, b"d", "EISDIR"),
        (ROOT_INO, b"d", ROOT_INO, b"full", "ENOTEMPTY"),
        (ROOT_INO, b"missing", ROOT_INO, b"z", "ENOENT"),
    ]
    for p, n, np_, nn, want in cases:
        with pytest.raises(GFSError) as e:
            t.do("rename", parent=p, name=n, new_parent=np_, new_name=nn)
        assert code(e) == want, (n, nn)
    # over an empty dir: fine, and the link counts follow
    t.do("rename", parent=d, name=b"sub", new_parent=ROOT_INO, new_name=b"empty")
    assert empty not in t.ns.inodes
    assert t.ns.lookup(ROOT_INO, b"empty").ino == sub
    assert t.ns.get(d).nlink == 2
    assert t.ns.get(ROOT_INO).nlink == 2 + 3      # d, full, empty(=sub)
    assert t.ns.lookup(sub, b"..").ino == ROOT_INO


def test_rename_flags(t: NS) -> None:
    a = t.file(ROOT_INO, b"a")
    d = t.mkdir(ROOT_INO, b"d")
    with pytest.raises(GFSError) as e:
        t.do("rename", parent=ROOT_INO, name=b"a", new_parent=ROOT_INO, new_name=b"d", flags=1)
    assert code(e) == "EEXIST"
    with pytest.raises(GFSError) as e:
        t.do("rename", parent=ROOT_INO, name=b"a", new_parent=ROOT_INO, new_name=b"q", flags=2)
    assert code(e) == "ENOENT"
    with pytest.raises(GFSError) as e:
        t.do("rename", parent=ROOT_INO, name=b"a", new_parent=ROOT_INO, new_name=b"d", flags=3)
    assert code(e) == "EINVAL"
    sub = t.mkdir(d, b"sub")
    t.do("rename", parent=ROOT_INO, name=b"a", new_parent=d, new_name=b"sub", flags=2)
    assert t.ns.lookup(d, b"sub").ino == a and t.ns.lookup(ROOT_INO, b"a").ino == sub
    assert t.ns.get(d).nlink == 2 and t.ns.get(ROOT_INO).nlink == 4
    assert t.ns.lookup(sub, b"..").ino == ROOT_INO


def test_truncate_is_sparse_and_releases_chunks(t: NS) -> None:
    f = t.file(ROOT_INO, b"f")
    for i in range(4):
        t.do("add_chunk", ino=f, index=i, handle=100 + i, version=1)
    t.do("extend", ino=f, size=4 * CS, mtime_ns=5)
    assert t.ns.attr(t.ns.get(f))["blocks"] == 4 * CS // 512
    t.do("setattr", ino=f, size=CS + 1)
    assert sorted(t.ns.get(f).chunks or {}) == [0, 1]
    assert t.ns.take_garbage() == {102, 103}
    assert t.ns.attr(t.ns.get(f))["blocks"] == (CS + 1 + 511) // 512
    t.do("setattr", ino=f, size=MAX_FILE_SIZE)        # huge and free
    assert t.ns.get(f).size == MAX_FILE_SIZE and len(t.ns.get(f).chunks or {}) == 2
    with pytest.raises(GFSError) as e:
        t.do("setattr", ino=f, size=MAX_FILE_SIZE + 1)
    assert code(e) == "EFBIG"
    with pytest.raises(GFSError) as e:
        t.do("setattr", ino=ROOT_INO, size=0)
    assert code(e) == "EISDIR"


def test_readdir_cookies_stable_under_change(t: NS) -> None:
    for i in range(10):
        t.file(ROOT_INO, b"f%d" % i)
    first = t.ns.readdir(ROOT_INO, 0, 4)
    assert [n for n, _i, _c in first] == [b"f0", b"f1", b"f2", b"f3"]
    t.do("unlink", parent=ROOT_INO, name=b"f4")     # removed ahead of the reader
    t.do("unlink", parent=ROOT_INO, name=b"f1")     # removed behind it
    t.file(ROOT_INO, b"new")
    rest = t.ns.readdir(ROOT_INO, first[-1][2], 100)
    assert [n for n, _i, _c in rest] == [b"f5", b"f6", b"f7", b"f8", b"f9", b"new"]
    cookies = [c for _n, _i, c in first + rest]
    assert cookies == sorted(cookies)


def test_xattrs(t: NS) -> None:
    f = t.file(ROOT_INO, b"f")
    t.do("setxattr", ino=f, name=b"user.a", value=b"1", flags=0)
    with pytest.raises(GFSError) as e:
        t.do("setxattr", ino=f, name=b"user.a", value=b"2", flags=1)
    assert code(e) == "EEXIST"
    with pytest.raises(GFSError) as e:
        t.do("setxattr", ino=f, name=b"user.b", value=b"2", flags=2)
    assert code(e) == "ENODATA"
    t.do("setxattr", ino=f, name=b"user.a", value=b"\x00\xff", flags=2)
    assert t.ns.get(f).xattrs == {b"user.a": b"\x00\xff"}
    t.do("removexattr", ino=f, name=b"user.a")
    with pytest.raises(GFSError) as e:
        t.do("removexattr", ino=f, name=b"user.a")
    assert code(e) == "ENODATA"


def test_permissions(t: NS) -> None:
    alice, bob = Ctx(1000, 1000), Ctx(1001, 1001)
    home = t.mkdir(ROOT_INO, b"home", 0o755, uid=1000, gid=1000)
    with pytest.raises(GFSError) as e:
        t.file(ROOT_INO, b"x", ctx=alice)          # root's dir, 0755
    assert code(e) == "EACCES"
    f = t.file(home, b"f", 0o644, uid=1000, gid=1000, ctx=alice)
    with pytest.raises(GFSError) as e:
        t.file(home, b"g", ctx=bob)
    assert code(e) == "EACCES"
    with pytest.raises(GFSError) as e:
        t.do("setattr", ino=f, mode=0o777, ctx=bob)
    assert code(e) == "EPERM"
    with pytest.raises(GFSError) as e:
        t.do("setattr", ino=f, uid=1001, ctx=alice)
    assert code(e) == "EPERM"
    with pytest.raises(GFSError) as e:
        t.do("setattr", ino=f, size=0, ctx=bob)
    assert code(e) == "EACCES"
    t.do("setattr", ino=f, mode=0o600, ctx=alice)
    t.do("setattr", ino=f, uid=1001, ctx=None)      # root may chown
    assert t.ns.get(f).uid == 1001
    # sticky /tmp: bob may not remove alice's file
    tmp = t.mkdir(ROOT_INO, b"tmp", 0o1777)
    t.file(tmp, b"a", uid=1000, gid=1000, ctx=alice)
    with pytest.raises(GFSError) as e:
        t.do("unlink", parent=tmp, name=b"a", ctx=bob)
    assert code(e) == "EPERM"
    t.do("unlink", parent=tmp, name=b"a", ctx=alice)
    with pytest.raises(GFSError) as e:
        t.do("setxattr", ino=home, name=b"trusted.x", value=b"", ctx=alice)
    assert code(e) == "EPERM"


def test_image_round_trip(t: NS) -> None:
    d = t.mkdir(ROOT_INO, b"d")
    f = t.file(d, b"f")
    t.do("add_chunk", ino=f, index=3, handle=9, version=4)
    t.do("symlink", parent=d, name=b"s", target=b"f")
    t.do("setxattr", ino=f, name=b"user.k", value=b"v", flags=0)
    t.do("unlink", parent=d, name=b"s")
    again = image.from_state(image.to_state(t.ns), 3)
    assert image.to_state(again) == image.to_state(t.ns)
    assert again.readdir(d, 0, 10) == t.ns.readdir(d, 0, 10)
    assert image.to_json(again)["chunk_count"] == 1
