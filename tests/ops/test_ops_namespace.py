"""The namespace through the FUSE Operations, no kernel mount (tests/ops/opskit.py):
lookup, mkdir and readdir (pyfuse3's token API, resumed from every cookie,
past the master's batch), rename and its flags, unlink/rmdir, symlinks, hard
links, xattrs, permissions for other callers, and errors only as
``pyfuse3.FUSEError`` with the errno POSIX gives. One cluster for the module;
each test in a directory of its own."""
from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import subprocess
from collections.abc import Awaitable, Callable, Iterator

import pyfuse3
import pytest

from opskit import (ROOT, ROOT_CTX, Ctx, Operations, attrs, dirname, fields, fuse_errno,
                    listdir, names, new_file, read_all, readdir, run as run_ops, user)
from gfsfs.common.protocol import MAX_NAME
from gfsfs.tools.localcluster import Cluster
from gfsfs.fuse import operations as fuse_operations

Call = Callable[[], Awaitable[object]]


@pytest.fixture
def run(module_cluster: Cluster, request: pytest.FixtureRequest) -> Callable[..., None]:
    return functools.partial(run_ops, module_cluster, name=dirname(request))


def test_lookup_create_and_dot_entries(run: Callable[..., None]) -> None:
    alice = user(1000, 1001, umask=0o027)

    async def t(ops: Operations, d: int) -> None:
        with fuse_errno(errno.ENOENT):
            await ops.lookup(d, b"f", alice)
        info, entry = await ops.create(d, b"f", 0o666, os.O_RDWR | os.O_CREAT, alice)
        await ops.release(info.fh)
        assert stat.S_ISREG(entry.st_mode) and stat.S_IMODE(entry.st_mode) == 0o640
        assert (entry.st_uid, entry.st_gid, entry.st_nlink) == (1000, 1001, 1)
        assert (entry.entry_timeout, entry.attr_timeout) == (ops.cfg.entry_timeout,
                                                              ops.cfg.attr_timeout)
        found = await ops.lookup(d, b"f", alice)
        assert (found.st_ino, found.st_mode, found.st_uid) == (entry.st_ino, entry.st_mode, 1000)
        assert (await ops.getattr(entry.st_ino, alice)).st_ino == entry.st_ino
        assert (await ops.lookup(d, b".", alice)).st_ino == d
        assert (await ops.lookup(d, b"..", alice)).st_ino == ROOT
        assert (await ops.lookup(ROOT, b"..", alice)).st_ino == ROOT
        with fuse_errno(errno.EEXIST):        # O_EXCL: the name is taken
            await ops.create(d, b"f", 0o644, os.O_WRONLY | os.O_CREAT | os.O_EXCL, alice)
        # without O_EXCL, a name made meanwhile (by another mount) is opened
        info, again = await ops.create(d, b"f", 0o644, os.O_WRONLY | os.O_CREAT, alice)
        assert again.st_ino == entry.st_ino
        await ops.release(info.fh)
        long = b"x" * (MAX_NAME + 1)
        with fuse_errno(errno.ENAMETOOLONG):
            await ops.lookup(d, long, alice)
        with fuse_errno(errno.ENAMETOOLONG):
            await ops.create(d, long, 0o644, os.O_WRONLY | os.O_CREAT, alice)
        info, entry = await ops.create(d, b"y" * MAX_NAME, 0o644, os.O_WRONLY | os.O_CREAT, alice)
        await ops.release(info.fh)
        assert await names(ops, d) == [b"f", b"y" * MAX_NAME]
    run(t)


def test_mkdir_and_readdir_with_dot_entries_and_attributes(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        parent_before = await ops.getattr(d, ROOT_CTX)
        sub = await ops.mkdir(d, b"sub", 0o777, ROOT_CTX)
        assert sub.st_mode == stat.S_IFDIR | 0o755 and sub.st_nlink == 2
        assert (await ops.getattr(d, ROOT_CTX)).st_nlink == parent_before.st_nlink + 1
        with fuse_errno(errno.EEXIST):
            await ops.mkdir(d, b"sub", 0o755, ROOT_CTX)
        files = {b"f%02d" % i: await new_file(ops, sub.st_ino, b"f%02d" % i, b"x" * i)
                 for i in range(9)}
        await ops.mkdir(sub.st_ino, b"inner", 0o700, ROOT_CTX)
        await ops.symlink(sub.st_ino, b"link", b"f00", ROOT_CTX)
        everything = await listdir(ops, sub.st_ino, room=None)
        assert [n for n, _, _ in everything[:2]] == [b".", b".."]
        assert everything[0][1].st_ino == sub.st_ino
        assert everything[1][1].st_ino == d
        listed = {n: a for n, a, _ in everything[2:]}
        assert len(listed) == len(everything) - 2 == 11
        assert set(listed) == set(files) | {b"inner", b"link"}
        for name, ino in files.items():
            assert listed[name].st_ino == ino
            assert listed[name].st_size == int(name[1:])
            assert stat.S_ISREG(listed[name].st_mode)
        assert stat.S_ISDIR(listed[b"inner"].st_mode)
        assert stat.S_ISLNK(listed[b"link"].st_mode)
        cookies = [c for _, _, c in everything]
        assert cookies == sorted(set(cookies)) and cookies[0] > 0
        # the kernel's buffer holding 1, 2, 3... entries: the same listing
        for room in (1, 2, 3):
            got = await listdir(ops, sub.st_ino, room=room)
            assert [(n, a.st_ino, c) for n, a, c in got] == \
                [(n, a.st_ino, c) for n, a, c in everything]
        # a request may start at any cookie it was given (seekdir/telldir)
        fh = await ops.opendir(sub.st_ino, ROOT_CTX)
        for i, (_, _, cookie) in enumerate(everything):
            tail = await readdir(ops, fh, cookie)
            assert [n for n, _, _ in tail] == [n for n, _, _ in everything[i + 1:]]
        await ops.releasedir(fh)
        with fuse_errno(errno.ENOTDIR):
            await ops.opendir(files[b"f00"], ROOT_CTX)
    run(t)


def test_readdir_rewinds_and_refuses_a_released_handle(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        await new_file(ops, d, b"a")
        fh = await ops.opendir(d, ROOT_CTX)
        first = [n for n, _, _ in await readdir(ops, fh)]
        assert first == [b".", b"..", b"a"]
        await new_file(ops, d, b"b")
        # rewinddir (start 0) lists afresh on the same handle
        assert [n for n, _, _ in await readdir(ops, fh)] == [b".", b"..", b"a", b"b"]
        await ops.fsyncdir(fh, False)
        await ops.releasedir(fh)
        with fuse_errno(errno.EBADF):
            await readdir(ops, fh)
    run(t)


def test_readdir_attributes_count_buffered_writes(run: Callable[..., None]) -> None:
    """READDIRPLUS fills the kernel's attribute cache: a file's size there
    must include what this client has written but not yet sent."""
    async def t(ops: Operations, d: int) -> None:
        info, entry = await ops.create(d, b"f", 0o644, os.O_WRONLY | os.O_CREAT, ROOT_CTX)
        await ops.write(info.fh, 0, b"z" * 1000)
        listed = {n: a for n, a, _ in await listdir(ops, d)}
        assert listed[b"f"].st_ino == entry.st_ino
        assert listed[b"f"].st_size == 1000
        await ops.release(info.fh)
    run(t)


def test_readdir_past_the_masters_batch(run: Callable[..., None],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries come from the master READDIR_BATCH at a time (512; 5 here,
    so that a few dozen names make many batches)."""
    monkeypatch.setattr(fuse_operations, "READDIR_BATCH", 5)

    async def t(ops: Operations, d: int) -> None:
        made = [b"s%02d" % i for i in range(23)]
        for name in made:
            await ops.symlink(d, name, b"target", ROOT_CTX)
        for room in (None, 1, 4, 5, 6, 7, 10):
            got = await listdir(ops, d, room=room)
            assert [n for n, _, _ in got[:2]] == [b".", b".."]
            assert sorted(n for n, _, _ in got[2:]) == made, f"room {room}"
            cookies = [c for _, _, c in got]
            assert cookies == sorted(set(cookies)), f"room {room}"
    run(t)


def test_rename_plain_across_directories_and_replacing(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        a = await new_file(ops, d, b"a", b"A")
        await ops.rename(d, b"a", d, b"b", 0, ROOT_CTX)
        with fuse_errno(errno.ENOENT):
            await ops.lookup(d, b"a", ROOT_CTX)
        assert (await ops.lookup(d, b"b", ROOT_CTX)).st_ino == a
        one = await ops.mkdir(d, b"one", 0o755, ROOT_CTX)
        two = await ops.mkdir(d, b"two", 0o755, ROOT_CTX)
        await ops.rename(d, b"one", two.st_ino, b"moved", 0, ROOT_CTX)
        assert (await ops.lookup(one.st_ino, b"..", ROOT_CTX)).st_ino == two.st_ino
        assert (await ops.getattr(two.st_ino, ROOT_CTX)).st_nlink == 3
        # over an existing file: it is replaced
        c = await new_file(ops, d, b"c", b"C")
        await ops.rename(d, b"b", d, b"c", 0, ROOT_CTX)
        assert (await ops.lookup(d, b"c", ROOT_CTX)).st_ino == a
        assert await read_all(ops, a, 10) == b"A"
        assert (await ops.getattr(c, ROOT_CTX)).st_nlink == 0     # the replaced file
        assert await names(ops, d) == [b"c", b"two"]
        with fuse_errno(errno.ENOENT):
            await ops.rename(d, b"nothing", d, b"x", 0, ROOT_CTX)
        with fuse_errno(errno.ENAMETOOLONG):
            await ops.rename(d, b"c", d, b"n" * (MAX_NAME + 1), 0, ROOT_CTX)
    run(t)


def test_rename_flags_noreplace_and_exchange(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        a = await new_file(ops, d, b"a", b"A")
        b = await new_file(ops, d, b"b", b"B")
        with fuse_errno(errno.EEXIST):
            await ops.rename(d, b"a", d, b"b", pyfuse3.RENAME_NOREPLACE, ROOT_CTX)
        assert (await ops.lookup(d, b"a", ROOT_CTX)).st_ino == a     # both untouched
        assert (await ops.lookup(d, b"b", ROOT_CTX)).st_ino == b
        await ops.rename(d, b"a", d, b"c", pyfuse3.RENAME_NOREPLACE, ROOT_CTX)
        assert (await ops.lookup(d, b"c", ROOT_CTX)).st_ino == a
        await ops.rename(d, b"c", d, b"b", pyfuse3.RENAME_EXCHANGE, ROOT_CTX)
        assert (await ops.lookup(d, b"b", ROOT_CTX)).st_ino == a
        assert (await ops.lookup(d, b"c", ROOT_CTX)).st_ino == b
        with fuse_errno(errno.ENOENT):         # EXCHANGE needs both names
            await ops.rename(d, b"b", d, b"none", pyfuse3.RENAME_EXCHANGE, ROOT_CTX)
        with fuse_errno(errno.EINVAL):         # RENAME_WHITEOUT: not ours
            await ops.rename(d, b"b", d, b"w", 4, ROOT_CTX)
        with fuse_errno(errno.EINVAL):
            await ops.rename(d, b"b", d, b"w",
                             pyfuse3.RENAME_NOREPLACE | pyfuse3.RENAME_EXCHANGE, ROOT_CTX)
        assert await names(ops, d) == [b"b", b"c"]
    run(t)


def test_rename_errors_between_files_and_directories(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        await new_file(ops, d, b"file")
        full = await ops.mkdir(d, b"full", 0o755, ROOT_CTX)
        await new_file(ops, full.st_ino, b"x")
        empty = await ops.mkdir(d, b"empty", 0o755, ROOT_CTX)
        with fuse_errno(errno.ENOTEMPTY):
            await ops.rename(d, b"empty", d, b"full", 0, ROOT_CTX)
        with fuse_errno(errno.EISDIR):
            await ops.rename(d, b"file", d, b"empty", 0, ROOT_CTX)
        with fuse_errno(errno.ENOTDIR):
            await ops.rename(d, b"empty", d, b"file", 0, ROOT_CTX)
        with fuse_errno(errno.EINVAL):          # into itself
            await ops.rename(d, b"full", full.st_ino, b"inside", 0, ROOT_CTX)
        await ops.rename(d, b"empty", d, b"other", 0, ROOT_CTX)
        await ops.rename(d, b"full", d, b"other", 0, ROOT_CTX)    # over an empty directory
        assert (await ops.lookup(d, b"other", ROOT_CTX)).st_ino == full.st_ino
        assert empty.st_ino != full.st_ino
        assert await names(ops, d) == [b"file", b"other"]
    run(t)


def test_unlink_and_rmdir(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        f = await new_file(ops, d, b"f", b"data")
        sub = await ops.mkdir(d, b"sub", 0o755, ROOT_CTX)
        await new_file(ops, sub.st_ino, b"inside")
        nlink = (await ops.getattr(d, ROOT_CTX)).st_nlink
        with fuse_errno(errno.EISDIR):
            await ops.unlink(d, b"sub", ROOT_CTX)
        with fuse_errno(errno.ENOTDIR):
            await ops.rmdir(d, b"f", ROOT_CTX)
        with fuse_errno(errno.ENOTEMPTY):
            await ops.rmdir(d, b"sub", ROOT_CTX)
        with fuse_errno(errno.ENOENT):
            await ops.unlink(d, b"missing", ROOT_CTX)
        with fuse_errno(errno.ENOENT):
            await ops.rmdir(d, b"missing", ROOT_CTX)
        await ops.unlink(sub.st_ino, b"inside", ROOT_CTX)
        await ops.rmdir(d, b"sub", ROOT_CTX)
        assert (await ops.getattr(d, ROOT_CTX)).st_nlink == nlink - 1
        with fuse_errno(errno.ENOENT):
            await ops.lookup(d, b"sub", ROOT_CTX)
        await ops.unlink(d, b"f", ROOT_CTX)
        with fuse_errno(errno.ENOENT):
            await ops.lookup(d, b"f", ROOT_CTX)
        assert (await ops.getattr(f, ROOT_CTX)).st_nlink == 0
        assert await names(ops, d) == []
    run(t)


def test_symlink_readlink_and_hard_links(run: Callable[..., None]) -> None:
    target = b"../some/where/else"

    async def t(ops: Operations, d: int) -> None:
        link = await ops.symlink(d, b"l", target, user(1000))
        assert stat.S_ISLNK(link.st_mode) and link.st_size == len(target)
        assert (link.st_uid, link.st_gid) == (1000, 1000)
        assert await ops.readlink(link.st_ino, ROOT_CTX) == target
        assert (await ops.lookup(d, b"l", ROOT_CTX)).st_ino == link.st_ino
        with fuse_errno(errno.EEXIST):
            await ops.symlink(d, b"l", b"x", ROOT_CTX)
        with fuse_errno(errno.ENOENT):          # symlink(2) with an empty target
            await ops.symlink(d, b"empty", b"", ROOT_CTX)
        f = await new_file(ops, d, b"f", b"data")
        with fuse_errno(errno.EINVAL):          # not a symlink
            await ops.readlink(f, ROOT_CTX)
        sub = await ops.mkdir(d, b"sub", 0o755, ROOT_CTX)
        linked = await ops.link(f, sub.st_ino, b"again", ROOT_CTX)
        assert (linked.st_ino, linked.st_nlink) == (f, 2)
        assert await read_all(ops, (await ops.lookup(sub.st_ino, b"again", ROOT_CTX)).st_ino,
                              10) == b"data"
        with fuse_errno(errno.EPERM):           # no hard links to directories
            await ops.link(sub.st_ino, d, b"dirlink", ROOT_CTX)
        with fuse_errno(errno.EEXIST):
            await ops.link(f, d, b"l", ROOT_CTX)
        await ops.unlink(d, b"f", ROOT_CTX)
        assert (await ops.getattr(f, ROOT_CTX)).st_nlink == 1
        assert await read_all(ops, f, 10) == b"data"
    run(t)


def test_xattrs(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        f = await new_file(ops, d, b"f")
        with fuse_errno(errno.ENODATA):
            await ops.getxattr(f, b"user.a", ROOT_CTX)
        assert await ops.listxattr(f, ROOT_CTX) == []
        # the miss above is remembered; setting the name must forget that
        await ops.setxattr(f, b"user.a", b"1", ROOT_CTX)
        await ops.setxattr(f, b"user.b", b"\x00binary\xff", ROOT_CTX)
        assert await ops.getxattr(f, b"user.a", ROOT_CTX) == b"1"
        assert await ops.getxattr(f, b"user.b", ROOT_CTX) == b"\x00binary\xff"
        assert sorted(await ops.listxattr(f, ROOT_CTX)) == [b"user.a", b"user.b"]
        await ops.setxattr(f, b"user.a", b"2", ROOT_CTX)            # replaced
        assert await ops.getxattr(f, b"user.a", ROOT_CTX) == b"2"
        await ops.removexattr(f, b"user.a", ROOT_CTX)
        with fuse_errno(errno.ENODATA):
            await ops.getxattr(f, b"user.a", ROOT_CTX)
        with fuse_errno(errno.ENODATA):
            await ops.removexattr(f, b"user.a", ROOT_CTX)
        assert await ops.listxattr(f, ROOT_CTX) == [b"user.b"]
        with fuse_errno(errno.EOPNOTSUPP):      # no ACLs
            await ops.setxattr(f, b"system.posix_acl_access", b"x", ROOT_CTX)
        with fuse_errno(errno.EOPNOTSUPP):
            await ops.setxattr(f, b"nonamespace", b"x", ROOT_CTX)
        await ops.setxattr(f, b"trusted.t", b"root's", ROOT_CTX)
        with fuse_errno(errno.EPERM):
            await ops.setxattr(f, b"trusted.t", b"mine", user(1000))
        assert await ops.getxattr(f, b"trusted.t", ROOT_CTX) == b"root's"
    run(t)


def test_other_callers_get_eacces_and_eperm(run: Callable[..., None]) -> None:
    """alice's 0600 file and 0700 directory, tried by bob (not root, not in her group)."""
    alice, bob = user(1000), user(2000)

    async def t(ops: Operations, d: int) -> None:
        f = await new_file(ops, d, b"secret", b"alice's", mode=0o600, ctx=alice)
        await ops.setxattr(f, b"user.note", b"hers", alice)
        private = await ops.mkdir(d, b"private", 0o700, alice)
        await new_file(ops, private.st_ino, b"inner", ctx=alice)
        assert await ops.access(f, os.R_OK | os.W_OK, alice)
        assert not await ops.access(f, os.R_OK, bob)
        assert await ops.access(f, os.R_OK | os.W_OK, ROOT_CTX)
        denied: list[tuple[int, Call]] = [
            (errno.EACCES, lambda: ops.setattr(f, attrs(st_size=0), fields("size"), None, bob)),
            (errno.EACCES, lambda: ops.getxattr(f, b"user.note", bob)),
            (errno.EACCES, lambda: ops.setxattr(f, b"user.note", b"bob's", bob)),
            # O_CREAT without O_EXCL on her existing file: opening it needs access
            (errno.EACCES, lambda: ops.create(d, b"secret", 0o644, os.O_RDONLY | os.O_CREAT, bob)),
            (errno.EACCES, lambda: ops.lookup(private.st_ino, b"inner", bob)),
            (errno.EACCES, lambda: ops.create(private.st_ino, b"bob", 0o644,
                                              os.O_WRONLY | os.O_CREAT, bob)),
            (errno.EACCES, lambda: ops.unlink(private.st_ino, b"inner", bob)),
            (errno.EACCES, lambda: ops.mkdir(ROOT, b"bobs", 0o755, bob)),    # root's 0755
            (errno.EPERM, lambda: ops.setattr(f, attrs(st_mode=stat.S_IFREG | 0o666),
                                              fields("mode"), None, bob)),
            (errno.EPERM, lambda: ops.setattr(f, attrs(st_mtime_ns=0), fields("mtime"),
                                              None, bob)),
        ]
        for code, call in denied:
            with fuse_errno(code):
                await call()
        # nothing changed; alice herself may do it all
        assert await read_all(ops, f, 100, ctx=alice) == b"alice's"
        assert await ops.getxattr(f, b"user.note", alice) == b"hers"
        assert (await ops.lookup(private.st_ino, b"inner", alice)).st_uid == 1000
        got = await ops.setattr(f, attrs(st_size=5), fields("size"), None, alice)
        assert got.st_size == 5
    run(t)


@contextlib.contextmanager
def process_with_groups(groups: list[int] | None) -> Iterator[int]:
    """The pid of a process of ours (sleep) whose supplementary groups are
    ``groups`` (None: this process's)."""
    child = subprocess.Popen(["sleep", "60"], extra_groups=groups)
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a child other groups needs root")
def test_supplementary_groups_come_from_the_callers_pid(run: Callable[..., None]) -> None:
    """A request carries uid, gid and pid; its other groups are read from
    /proc/PID/status (pyfuse3.get_sup_groups), for Operations.access and for
    the master."""
    async def t(ops: Operations, d: int) -> None:
        f = await new_file(ops, d, b"f", b"group's", mode=0o640)
        await ops.setattr(f, attrs(st_gid=3001), fields("gid"), None, ROOT_CTX)
        await ops.setxattr(f, b"user.g", b"1", ROOT_CTX)
        with process_with_groups([3001]) as member, process_with_groups([3002]) as other:
            assert await ops.access(f, os.R_OK, Ctx(5000, 5000, member))
            assert not await ops.access(f, os.W_OK, Ctx(5000, 5000, member))
            assert not await ops.access(f, os.R_OK, Ctx(5000, 5000, other))
            assert await ops.getxattr(f, b"user.g", Ctx(5000, 5000, member)) == b"1"
            with fuse_errno(errno.EACCES):          # the master agrees
                await ops.getxattr(f, b"user.g", Ctx(5000, 5000, other))
    run(t)


# Two requests from one pid with different gids: the process called setgid(2)
# or setegid(2) between them (newgrp, a daemon dropping privileges), or the pid
# is another process's by now. Each request's groups are its own gid plus the
# process's supplementary groups as of then (none of 3000/4242 here).
# Operations.ctx caches the groups per pid for a second, and the cached list
# has the first request's gid in it in place of the later request's.
GROUP, OTHER_GROUP = 3000, 4242


async def group_file(ops: Operations, d: int) -> int:
    """A 0640 file of root's in group GROUP, with a user.* xattr."""
    f = await new_file(ops, d, b"f", b"group's", mode=0o640)
    await ops.setattr(f, attrs(st_gid=GROUP), fields("gid"), None, ROOT_CTX)
    await ops.setxattr(f, b"user.g", b"1", ROOT_CTX)
    return f


def test_a_later_request_from_a_pid_does_not_keep_an_earlier_requests_gid(
        run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        f = await group_file(ops, d)
        with process_with_groups(None) as pid:
            assert not {GROUP, OTHER_GROUP} & pyfuse3.get_sup_groups(pid)
            assert await ops.access(f, os.R_OK, Ctx(5000, GROUP, pid))
            assert await ops.getxattr(f, b"user.g", Ctx(5000, GROUP, pid)) == b"1"
            # the same process, now in OTHER_GROUP only
            assert not await ops.access(f, os.R_OK, Ctx(5000, OTHER_GROUP, pid)), \
                "an earlier request's gid was counted for this one"
            with fuse_errno(errno.EACCES):       # the master is told the same groups
                await ops.getxattr(f, b"user.g", Ctx(5000, OTHER_GROUP, pid))
    run(t)


def test_a_requests_own_gid_counts_after_another_request_from_its_pid(
        run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        f = await group_file(ops, d)
        with process_with_groups(None) as pid:
            assert not {GROUP, OTHER_GROUP} & pyfuse3.get_sup_groups(pid)
            assert not await ops.access(f, os.R_OK, Ctx(5000, OTHER_GROUP, pid))
            # the same process, now in GROUP
            assert await ops.access(f, os.R_OK, Ctx(5000, GROUP, pid)), \
                "the request's own gid was left out of its groups"
            # O_CREAT on the existing name checks access the same way
            info, entry = await ops.create(d, b"f", 0o644, os.O_RDONLY | os.O_CREAT,
                                           Ctx(5000, GROUP, pid))
            assert entry.st_ino == f
            await ops.release(info.fh)
    run(t)


def test_mknod_fifos_sockets_and_devices(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        fifo = await ops.mknod(d, b"fifo", stat.S_IFIFO | 0o666, 0, ROOT_CTX)
        assert fifo.st_mode == stat.S_IFIFO | 0o644            # less the umask
        sock = await ops.mknod(d, b"sock", stat.S_IFSOCK | 0o600, 0, user(1000))
        assert stat.S_ISSOCK(sock.st_mode) and sock.st_uid == 1000
        dev = os.makedev(1, 3)
        null = await ops.mknod(d, b"null", stat.S_IFCHR | 0o666, dev, ROOT_CTX)
        assert stat.S_ISCHR(null.st_mode) and null.st_rdev == dev
        assert (await ops.lookup(d, b"null", ROOT_CTX)).st_rdev == dev
        with fuse_errno(errno.EPERM):                # only root makes devices
            await ops.mknod(d, b"mine", stat.S_IFBLK | 0o600, dev, user(1000))
        with fuse_errno(errno.EEXIST):
            await ops.mknod(d, b"fifo", stat.S_IFIFO | 0o644, 0, ROOT_CTX)
        # O_CREAT on a fifo's name opens nothing of ours
        with fuse_errno(errno.EEXIST):
            await ops.create(d, b"fifo", 0o644, os.O_WRONLY | os.O_CREAT, ROOT_CTX)
        assert await names(ops, d) == [b"fifo", b"null", b"sock"]
    run(t)


def test_enotdir_and_eisdir(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        f = await new_file(ops, d, b"f")
        await ops.mkdir(d, b"dir", 0o755, ROOT_CTX)
        dir_ino = (await ops.lookup(d, b"dir", ROOT_CTX)).st_ino
        wrong: list[tuple[int, Call]] = [
            (errno.ENOTDIR, lambda: ops.lookup(f, b"x", ROOT_CTX)),
            (errno.ENOTDIR, lambda: ops.mkdir(f, b"x", 0o755, ROOT_CTX)),
            (errno.ENOTDIR, lambda: ops.create(f, b"x", 0o644, os.O_WRONLY | os.O_CREAT,
                                               ROOT_CTX)),
            (errno.ENOTDIR, lambda: ops.opendir(f, ROOT_CTX)),
            (errno.ENOTDIR, lambda: ops.rmdir(d, b"f", ROOT_CTX)),
            (errno.EISDIR, lambda: ops.unlink(d, b"dir", ROOT_CTX)),
            (errno.EISDIR, lambda: ops.setattr(dir_ino, attrs(st_size=0), fields("size"),
                                               None, ROOT_CTX)),
            # O_CREAT on a directory's name: open(2) says EISDIR
            (errno.EISDIR, lambda: ops.create(d, b"dir", 0o644, os.O_WRONLY | os.O_CREAT,
                                              ROOT_CTX)),
        ]
        for code, call in wrong:
            with fuse_errno(code):
                await call()
    run(t)


def test_a_missing_inode_is_enoent_for_every_handler(run: Callable[..., None]) -> None:
    gone = 1 << 40

    async def t(ops: Operations, d: int) -> None:
        f = await new_file(ops, d, b"f")
        calls: dict[str, Call] = {
            "getattr": lambda: ops.getattr(gone, ROOT_CTX),
            "setattr": lambda: ops.setattr(gone, attrs(st_mode=0o644), fields("mode"), None,
                                           ROOT_CTX),
            "truncate": lambda: ops.setattr(gone, attrs(st_size=0), fields("size"), None,
                                            ROOT_CTX),
            "access": lambda: ops.access(gone, os.R_OK, ROOT_CTX),
            "lookup": lambda: ops.lookup(gone, b"x", ROOT_CTX),
            "lookup .": lambda: ops.lookup(gone, b".", ROOT_CTX),
            "mkdir": lambda: ops.mkdir(gone, b"x", 0o755, ROOT_CTX),
            "mknod": lambda: ops.mknod(gone, b"x", stat.S_IFIFO | 0o644, 0, ROOT_CTX),
            "create": lambda: ops.create(gone, b"x", 0o644, os.O_WRONLY | os.O_CREAT, ROOT_CTX),
            "symlink": lambda: ops.symlink(gone, b"x", b"t", ROOT_CTX),
            "link": lambda: ops.link(gone, d, b"x", ROOT_CTX),
            "link into": lambda: ops.link(f, gone, b"x", ROOT_CTX),
            "unlink": lambda: ops.unlink(gone, b"x", ROOT_CTX),
            "rmdir": lambda: ops.rmdir(gone, b"x", ROOT_CTX),
            "rename": lambda: ops.rename(gone, b"x", d, b"y", 0, ROOT_CTX),
            "rename into": lambda: ops.rename(d, b"f", gone, b"y", 0, ROOT_CTX),
            "readlink": lambda: ops.readlink(gone, ROOT_CTX),
            "opendir": lambda: ops.opendir(gone, ROOT_CTX),
            "getxattr": lambda: ops.getxattr(gone, b"user.a", ROOT_CTX),
            "setxattr": lambda: ops.setxattr(gone, b"user.a", b"1", ROOT_CTX),
            "listxattr": lambda: ops.listxattr(gone, ROOT_CTX),
            "removexattr": lambda: ops.removexattr(gone, b"user.a", ROOT_CTX),
            "fallocate": lambda: ops.fallocate(gone, 0, 0, 10),
        }
        wrong = {}
        for name, call in calls.items():
            try:
                await call()
                wrong[name] = "no error"
            except pyfuse3.FUSEError as exc:
                if exc.errno != errno.ENOENT:
                    wrong[name] = errno.errorcode.get(exc.errno, str(exc.errno))
            except Exception as exc:         # anything but FUSEError is a bug
                wrong[name] = repr(exc)
        assert wrong == {}
        assert await names(ops, d) == [b"f"]
    run(t)
