"""File data through the FUSE Operations, no kernel mount (tests/ops/opskit.py):
create/write/read round trips across chunk boundaries, sizes before and after
flush, truncate, times, O_TRUNC, O_APPEND, fsync, forget, fallocate, statfs,
bad handles and a read-only mount. One cluster for the module; each test in a
directory of its own."""
from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Awaitable, Callable

import pytest
from opskit import (CS, ROOT_CTX, Operations, attrs, dirname, fields, fuse_errno, names,
                    new_file, operations, pattern, read_all, run as run_ops, user)
from gfsfs.tools.localcluster import Cluster

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10


@pytest.fixture
def run(module_cluster: Cluster, request: pytest.FixtureRequest) -> Callable[..., None]:
    return functools.partial(run_ops, module_cluster, name=dirname(request))


def test_write_read_round_trip_across_chunk_boundaries(run: Callable[..., None],
                                                       module_cluster: Cluster) -> None:
    data = pattern(2 * CS + 12345)

    async def t(ops: Operations, d: int) -> None:
        with fuse_errno(errno.ENOENT):
            await ops.lookup(d, b"f", ROOT_CTX)
        info, entry = await ops.create(d, b"f", 0o644, os.O_RDWR | os.O_CREAT, ROOT_CTX)
        assert (await ops.lookup(d, b"f", ROOT_CTX)).st_ino == entry.st_ino
        # writes of 100 000 bytes: several straddle the chunk boundaries
        for off in range(0, len(data), 100_000):
            assert await ops.write(info.fh, off, data[off:off + 100_000]) \
                == len(data[off:off + 100_000])
        # this client sees its own writes before any flush
        assert await ops.read(info.fh, CS - 10, 20) == data[CS - 10:CS + 10]
        assert await ops.read(info.fh, 0, len(data)) == data
        await ops.flush(info.fh)
        await ops.release(info.fh)
        assert await read_all(ops, entry.st_ino, len(data) + 1) == data
        info = await ops.open(entry.st_ino, os.O_RDONLY, ROOT_CTX)
        assert await ops.read(info.fh, 2 * CS - 1, 2) == data[2 * CS - 1:2 * CS + 1]
        assert await ops.read(info.fh, len(data) - 5, 100) == data[-5:]      # short at EOF
        assert await ops.read(info.fh, len(data), 100) == b""               # at EOF
        assert await ops.read(info.fh, len(data) + CS, 100) == b""          # past EOF
        await ops.release(info.fh)
        # another mount (its own client, nothing cached) reads the chunkds' bytes
        async with operations(module_cluster.url) as other:
            ino = (await other.lookup(d, b"f", ROOT_CTX)).st_ino
            assert ino == entry.st_ino
            assert await read_all(other, ino, len(data) + 1) == data
    run(t)


def test_getattr_sizes_before_and_after_flush(run: Callable[..., None],
                                              module_cluster: Cluster) -> None:
    async def t(ops: Operations, d: int) -> None:
        info, entry = await ops.create(d, b"sparse", 0o666, os.O_WRONLY | os.O_CREAT, ROOT_CTX)
        assert entry.st_size == 0 and entry.st_nlink == 1
        assert stat.S_IMODE(entry.st_mode) == 0o644            # 0666 less the umask 022
        assert entry.st_blksize == 1 << 20
        end = 3 * CS + 5
        await ops.write(info.fh, end - 10, b"0123456789")
        # the write is buffered, yet getattr answers its end
        assert (await ops.getattr(entry.st_ino, ROOT_CTX)).st_size == end
        async with operations(module_cluster.url) as other:
            await ops.flush(info.fh)
            st = await other.getattr(entry.st_ino, ROOT_CTX)
            assert st.st_size == end
            assert st.st_mtime_ns >= entry.st_mtime_ns
            assert await read_all(other, entry.st_ino, end) == bytes(end - 10) + b"0123456789"
        await ops.release(info.fh)
        assert (await ops.getattr(entry.st_ino, ROOT_CTX)).st_size == end
    run(t)


def test_setattr_truncate_down_then_up_reads_zeros(run: Callable[..., None]) -> None:
    data = pattern(CS + 1000, seed=3)

    async def t(ops: Operations, d: int) -> None:
        ino = await new_file(ops, d, b"f", data)
        got = await ops.setattr(ino, attrs(st_size=CS - 10), fields("size"), None, ROOT_CTX)
        assert got.st_size == CS - 10
        assert (await ops.getattr(ino, ROOT_CTX)).st_size == CS - 10
        assert await read_all(ops, ino, CS + 1000) == data[:CS - 10]
        got = await ops.setattr(ino, attrs(st_size=CS + 500), fields("size"), None, ROOT_CTX)
        assert got.st_size == CS + 500
        # the bytes cut off must not come back, in either chunk
        assert await read_all(ops, ino, CS + 1000) == data[:CS - 10] + bytes(510)
        await ops.setattr(ino, attrs(st_size=0), fields("size"), None, ROOT_CTX)
        assert await read_all(ops, ino, 10) == b""
    run(t)


def test_ftruncate_through_a_write_handle_needs_no_write_permission(
        run: Callable[..., None]) -> None:
    alice = user(1000)

    async def t(ops: Operations, d: int) -> None:
        info, entry = await ops.create(d, b"f", 0o644, os.O_RDWR | os.O_CREAT, alice)
        await ops.write(info.fh, 0, b"x" * 100)
        await ops.flush(info.fh)
        await ops.setattr(entry.st_ino, attrs(st_mode=stat.S_IFREG | 0o444), fields("mode"),
                          info.fh, alice)
        with fuse_errno(errno.EACCES):           # truncate(2) by name: needs write permission
            await ops.setattr(entry.st_ino, attrs(st_size=10), fields("size"), None, alice)
        got = await ops.setattr(entry.st_ino, attrs(st_size=10), fields("size"), info.fh, alice)
        assert got.st_size == 10       # ftruncate(2) on the descriptor open for writing
        await ops.release(info.fh)
        # a read-only descriptor is no write handle
        info = await ops.open(entry.st_ino, os.O_RDONLY, alice)
        with fuse_errno(errno.EACCES):
            await ops.setattr(entry.st_ino, attrs(st_size=5), fields("size"), info.fh, alice)
        await ops.release(info.fh)
        assert (await ops.getattr(entry.st_ino, ROOT_CTX)).st_size == 10
    run(t)


def test_setattr_mode_owner_and_times(run: Callable[..., None]) -> None:
    atime, mtime = 1_000_000_000_123_456_789, 1_100_000_000_987_654_321

    async def t(ops: Operations, d: int) -> None:
        ino = await new_file(ops, d, b"f", b"data")
        before = await ops.getattr(ino, ROOT_CTX)
        got = await ops.setattr(ino, attrs(st_mode=stat.S_IFREG | 0o600), fields("mode"),
                                None, ROOT_CTX)
        assert got.st_mode == stat.S_IFREG | 0o600
        got = await ops.setattr(ino, attrs(st_atime_ns=atime, st_mtime_ns=mtime),
                                fields("atime", "mtime"), None, ROOT_CTX)
        assert (got.st_atime_ns, got.st_mtime_ns) == (atime, mtime)
        got = await ops.setattr(ino, attrs(st_uid=1000, st_gid=1000), fields("uid", "gid"),
                                None, ROOT_CTX)
        assert (got.st_uid, got.st_gid) == (1000, 1000)
        now = await ops.getattr(ino, ROOT_CTX)
        assert now.st_mode == stat.S_IFREG | 0o600
        assert (now.st_atime_ns, now.st_mtime_ns) == (atime, mtime)
        assert (now.st_uid, now.st_gid) == (1000, 1000)
        assert now.st_ctime_ns >= before.st_ctime_ns
        assert now.st_size == 4
        # no field chosen: nothing changes, the attributes come back
        same = await ops.setattr(ino, attrs(st_mode=0o777, st_size=0), fields(), None, ROOT_CTX)
        assert (same.st_mode, same.st_size) == (stat.S_IFREG | 0o600, 4)
        # only the owner may chmod, only root may chown
        with fuse_errno(errno.EPERM):
            await ops.setattr(ino, attrs(st_mode=stat.S_IFREG | 0o666), fields("mode"),
                              None, user(2000))
        with fuse_errno(errno.EPERM):
            await ops.setattr(ino, attrs(st_uid=2000), fields("uid"), None, user(1000))
        got = await ops.setattr(ino, attrs(st_mode=stat.S_IFREG | 0o640), fields("mode"),
                                None, user(1000))
        assert got.st_mode == stat.S_IFREG | 0o640
    run(t)


def test_times_set_on_an_open_file_outlast_its_buffered_writes(
        run: Callable[..., None], module_cluster: Cluster) -> None:
    """cp -a: write, set the times on the open target, close; the flush of
    the buffered data must not stamp its own mtime over the one set."""
    mtime = 1_200_000_000_000_000_000

    async def t(ops: Operations, d: int) -> None:
        info, entry = await ops.create(d, b"f", 0o644, os.O_WRONLY | os.O_CREAT, ROOT_CTX)
        await ops.write(info.fh, 0, pattern(5000))
        await ops.setattr(entry.st_ino, attrs(st_atime_ns=mtime, st_mtime_ns=mtime),
                          fields("atime", "mtime"), info.fh, ROOT_CTX)
        await ops.flush(info.fh)
        await ops.release(info.fh)
        async with operations(module_cluster.url) as other:
            st = await other.getattr(entry.st_ino, ROOT_CTX)
            assert (st.st_size, st.st_mtime_ns) == (5000, mtime)
    run(t)


def test_open_with_o_trunc_empties_the_file(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        ino = await new_file(ops, d, b"f", pattern(CS + 1))
        info = await ops.open(ino, os.O_WRONLY | os.O_TRUNC, ROOT_CTX)
        assert (await ops.getattr(ino, ROOT_CTX)).st_size == 0
        await ops.write(info.fh, 0, b"new")
        await ops.release(info.fh)
        assert await read_all(ops, ino, CS) == b"new"
    run(t)


def test_o_append_writes_are_record_appends(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        ino = await new_file(ops, d, b"log", b"head;")
        info = await ops.open(ino, os.O_WRONLY | os.O_APPEND, ROOT_CTX)
        assert info.direct_io          # the kernel's offsets are ignored: no page cache
        assert await ops.write(info.fh, 0, b"one;") == 4        # offset 0: ignored
        assert await ops.write(info.fh, 2, b"two;") == 4
        await ops.release(info.fh)
        assert await read_all(ops, ino, 100) == b"head;one;two;"
        plain = await ops.open(ino, os.O_RDONLY, ROOT_CTX)
        assert not plain.direct_io
        await ops.release(plain.fh)
    run(t)


def test_fsync_makes_data_visible_to_another_mount_before_close(
        run: Callable[..., None], module_cluster: Cluster) -> None:
    data = pattern(CS + CS // 2, seed=5)

    async def t(ops: Operations, d: int) -> None:
        info, entry = await ops.create(d, b"f", 0o644, os.O_WRONLY | os.O_CREAT, ROOT_CTX)
        await ops.write(info.fh, 0, data)
        await ops.fsync(info.fh, False)
        async with operations(module_cluster.url) as other:
            assert await read_all(other, entry.st_ino, len(data)) == data
        await ops.release(info.fh)
    run(t)


def test_open_file_survives_unlink(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        info, entry = await ops.create(d, b"tmp", 0o644, os.O_RDWR | os.O_CREAT, ROOT_CTX)
        await ops.write(info.fh, 0, b"before")
        await ops.flush(info.fh)
        await ops.unlink(d, b"tmp", ROOT_CTX)
        with fuse_errno(errno.ENOENT):
            await ops.lookup(d, b"tmp", ROOT_CTX)
        await ops.write(info.fh, 6, b" after unlink")
        await ops.fsync(info.fh, False)
        assert await ops.read(info.fh, 0, 100) == b"before after unlink"
        st = await ops.getattr(entry.st_ino, ROOT_CTX)
        assert (st.st_nlink, st.st_size) == (0, 19)
        await ops.release(info.fh)
    run(t)


def test_forget_keeps_the_state_of_dirty_inodes_only(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        info, entry = await ops.create(d, b"f", 0o644, os.O_WRONLY | os.O_CREAT, ROOT_CTX)
        await ops.write(info.fh, 0, b"buffered")        # under upload_chunk_size: not sent
        ops.forget([(entry.st_ino, 1)])
        assert entry.st_ino in ops.client.inodes         # its unwritten data is still there
        await ops.fsync(info.fh, False)      # written and synced on every replica: clean
        await ops.release(info.fh)
        ops.forget([(entry.st_ino, 1), (d, 3)])
        assert entry.st_ino not in ops.client.inodes
        assert ops.forget([(1 << 40, 1)]) is None        # unknown inodes: nothing at all
        assert await read_all(ops, entry.st_ino, 100) == b"buffered"
    run(t)


def test_fallocate_grow_punch_and_unsupported_modes(run: Callable[..., None]) -> None:
    data = pattern(CS + 100, seed=7)

    async def t(ops: Operations, d: int) -> None:
        ino = await new_file(ops, d, b"f", data)
        await ops.fallocate(ino, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, CS - 50, 100)
        assert (await ops.getattr(ino, ROOT_CTX)).st_size == CS + 100
        want = data[:CS - 50] + bytes(100) + data[CS + 50:]
        assert await read_all(ops, ino, CS + 100) == want
        await ops.fallocate(ino, 0, CS, 2 * CS)                  # mode 0 grows the file
        assert (await ops.getattr(ino, ROOT_CTX)).st_size == 3 * CS
        assert await read_all(ops, ino, 3 * CS) == want + bytes(2 * CS - 100)
        await ops.fallocate(ino, FALLOC_FL_KEEP_SIZE, 0, 4 * CS)  # changes nothing
        assert (await ops.getattr(ino, ROOT_CTX)).st_size == 3 * CS
        with fuse_errno(errno.EOPNOTSUPP):
            await ops.fallocate(ino, FALLOC_FL_COLLAPSE_RANGE, 0, CS)
        with fuse_errno(errno.EINVAL):                    # PUNCH_HOLE needs KEEP_SIZE
            await ops.fallocate(ino, FALLOC_FL_PUNCH_HOLE, 0, 10)
        with fuse_errno(errno.EINVAL):
            await ops.fallocate(ino, 0, 0, 0)
    run(t)


def test_statfs_reports_the_cluster(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        st = await ops.statfs(ROOT_CTX)
        s = await ops.client.statfs()
        assert st.f_frsize == 64 * 1024 and st.f_bsize == 1 << 20
        assert st.f_namemax == 255
        assert st.f_blocks == int(s["total_bytes"]) // st.f_frsize > 0
        assert 0 < st.f_bavail == st.f_bfree <= st.f_blocks
        assert st.f_files > st.f_ffree == st.f_favail > 0
        for i in range(3):
            await ops.mkdir(d, b"d%d" % i, 0o755, ROOT_CTX)
        assert (await ops.statfs(ROOT_CTX)).f_files == st.f_files + 3
    run(t)


def test_unknown_file_handles_are_ebadf(run: Callable[..., None]) -> None:
    async def t(ops: Operations, d: int) -> None:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: ops.read(9999, 0, 10), lambda: ops.write(9999, 0, b"x"),
            lambda: ops.flush(9999), lambda: ops.fsync(9999, True)]
        for call in calls:
            with fuse_errno(errno.EBADF):
                await call()
        assert await ops.release(9999) is None       # the kernel releases each fh once
    run(t)


def test_a_read_only_mount_refuses_changes_with_erofs(run: Callable[..., None],
                                                     module_cluster: Cluster) -> None:
    async def t(ops: Operations, d: int) -> None:
        assert ops.read_only
        async with operations(module_cluster.url) as writable:
            await new_file(writable, d, b"f", b"kept")
        ino = (await ops.lookup(d, b"f", ROOT_CTX)).st_ino
        assert await read_all(ops, ino, 100) == b"kept"
        changes: list[Callable[[], Awaitable[object]]] = [
            lambda: ops.create(d, b"new", 0o644, os.O_WRONLY | os.O_CREAT, ROOT_CTX),
            lambda: ops.mkdir(d, b"dir", 0o755, ROOT_CTX),
            lambda: ops.mknod(d, b"fifo", stat.S_IFIFO | 0o644, 0, ROOT_CTX),
            lambda: ops.symlink(d, b"l", b"f", ROOT_CTX),
            lambda: ops.link(ino, d, b"f2", ROOT_CTX),
            lambda: ops.unlink(d, b"f", ROOT_CTX),
            lambda: ops.rmdir(d, b"f", ROOT_CTX),
            lambda: ops.rename(d, b"f", d, b"g", 0, ROOT_CTX),
            lambda: ops.setattr(ino, attrs(st_size=0), fields("size"), None, ROOT_CTX),
            lambda: ops.setxattr(ino, b"user.a", b"1", ROOT_CTX),
            lambda: ops.removexattr(ino, b"user.a", ROOT_CTX),
            lambda: ops.open(ino, os.O_WRONLY, ROOT_CTX),
            lambda: ops.open(ino, os.O_RDONLY | os.O_TRUNC, ROOT_CTX),
            lambda: ops.fallocate(ino, 0, 0, 10),
        ]
        for change in changes:
            with fuse_errno(errno.EROFS):
                await change()
        info = await ops.open(ino, os.O_RDONLY, ROOT_CTX)
        with fuse_errno(errno.EROFS):
            await ops.write(info.fh, 0, b"x")
        await ops.release(info.fh)
        assert await read_all(ops, ino, 100) == b"kept"
        assert await names(ops, d) == [b"f"]
    run(t, read_only=True)
