"""A Hypothesis state machine runs the same random file operations on a local
directory and on the mount, and compares results and errnos: writes, reads,
truncates, renames, links, mmap stores and loads, fallocate modes,
copy_file_range, fsync."""
from __future__ import annotations

import contextlib
import errno
import itertools
import mmap
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conftest import TEST_CHUNK_SIZE, needs_fuse
from gfsfs.tools import fsx

pytestmark = [needs_fuse, pytest.mark.mount]

NAMES = st.sampled_from(["a", "b", "c", "d/a", "d/b", "e", "d/e/a"])
OFFSETS = st.sampled_from([0, 1, 4095, 65536, TEST_CHUNK_SIZE - 3, TEST_CHUNK_SIZE + 5,
                           2 * TEST_CHUNK_SIZE + 100])
SIZES = st.sampled_from([0, 1, 100, 70000, TEST_CHUNK_SIZE + 10])
_counter = itertools.count()


@contextlib.contextmanager
def opened(path: Path, flags: int, mode: int = 0o644) -> Iterator[int]:
    fd = os.open(path, flags, mode)
    try:
        yield fd
    finally:
        os.close(fd)


def outcome(fn, *args):  # type: ignore[no-untyped-def]
    """(result, None) or (None, errno name): comparable between the two trees."""
    try:
        return fn(*args), None
    except OSError as exc:
        return None, errno.errorcode.get(exc.errno or 0, str(exc.errno))


def make_machine(mount_root: Path) -> type[RuleBasedStateMachine]:
    class SameAsLocal(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            n = next(_counter)
            self.local = Path(tempfile.mkdtemp(prefix="gfsmodel-"))
            self.remote = mount_root / f"model{n}"
            self.remote.mkdir()

        def both(self, fn, *rel):  # type: ignore[no-untyped-def]
            a = outcome(fn, *[self.local / r for r in rel])
            b = outcome(fn, *[self.remote / r for r in rel])
            assert a == b, (fn.__name__, rel, a, b)
            return a

        @rule(name=NAMES, offset=OFFSETS, size=SIZES, seed=st.integers(0, 255))
        def write(self, name: str, offset: int, size: int, seed: int) -> None:
            data = bytes((seed + i) % 251 for i in range(size))

            def w(path: Path) -> int:
                with opened(path, os.O_WRONLY | os.O_CREAT) as fd:
                    return os.pwrite(fd, data, offset)
            self.both(w, name)

        @rule(name=NAMES, size=SIZES)
        def truncate(self, name: str, size: int) -> None:
            self.both(lambda p: os.truncate(p, size), name)

        @rule(src=NAMES, dst=NAMES)
        def rename(self, src: str, dst: str) -> None:
            self.both(os.rename, src, dst)

        @rule(src=NAMES, dst=NAMES)
        def link(self, src: str, dst: str) -> None:
            self.both(os.link, src, dst)

        @rule(name=NAMES)
        def unlink(self, name: str) -> None:
            self.both(os.unlink, name)

        @rule(name=st.sampled_from(["d", "d/e", "f", "a"]))
        def mkdir(self, name: str) -> None:
            self.both(lambda p: os.mkdir(p, 0o755), name)

        @rule(name=st.sampled_from(["d", "d/e", "f", "a"]))
        def rmdir(self, name: str) -> None:
            self.both(os.rmdir, name)

        @rule(name=NAMES, mode=st.sampled_from([0o600, 0o644, 0o755, 0o4755]))
        def chmod(self, name: str, mode: int) -> None:
            self.both(lambda p: os.chmod(p, mode), name)

        @rule(name=NAMES, offset=OFFSETS, size=st.sampled_from([1, 5000, TEST_CHUNK_SIZE]))
        def read(self, name: str, offset: int, size: int) -> None:
            def r(path: Path) -> bytes:
                with open(path, "rb") as f:
                    f.seek(offset)
                    return f.read(size)
            self.both(r, name)

        @rule(name=NAMES, offset=OFFSETS, size=st.sampled_from([1, 5000, 70000]),
              seed=st.integers(0, 255), sync=st.booleans(), load=st.booleans())
        def mmap_store(self, name: str, offset: int, size: int, seed: int, sync: bool,
                       load: bool) -> None:
            """A store through a shared mapping (within the file's size), then
            optionally a load of the same range through a new mapping."""
            data = bytes((seed * 3 + i) % 251 for i in range(size))

            def m(path: Path) -> tuple[int, bytes]:
                with opened(path, os.O_RDWR) as fd:
                    end = min(offset + size, os.fstat(fd).st_size)
                    if end <= offset:
                        return 0, b""
                    base = offset - offset % mmap.PAGESIZE
                    with mmap.mmap(fd, end - base, offset=base) as mm:
                        mm[offset - base:end - base] = data[:end - offset]
                        if sync:
                            mm.flush()
                    if not load:
                        return end - offset, b""
                    with mmap.mmap(fd, end - base, offset=base, prot=mmap.PROT_READ) as mm:
                        return end - offset, mm[offset - base:end - base]
            self.both(m, name)

        @rule(name=NAMES, mode=st.sampled_from([0, 1, 3, 0x10, 0x11]), offset=OFFSETS,
              size=st.sampled_from([1, 5000, TEST_CHUNK_SIZE + 10]))
        def fallocate(self, name: str, mode: int, offset: int, size: int) -> None:
            """Allocate, keep-size, punch hole, zero range (and keep-size)."""
            def f(path: Path) -> None:
                with opened(path, os.O_RDWR) as fd:
                    fsx.fallocate(fd, mode, offset, size)
            self.both(f, name)

        @rule(src=NAMES, dst=NAMES, src_off=OFFSETS, dst_off=OFFSETS, size=SIZES)
        def copy_range(self, src: str, dst: str, src_off: int, dst_off: int, size: int) -> None:
            def c(a: Path, b: Path) -> int:
                with opened(a, os.O_RDONLY) as fa, opened(b, os.O_WRONLY | os.O_CREAT) as fb:
                    return os.copy_file_range(fa, fb, size, src_off, dst_off)
            self.both(c, src, dst)

        @rule(name=NAMES)
        def fsync(self, name: str) -> None:
            def f(path: Path) -> None:
                with opened(path, os.O_RDONLY) as fd:
                    os.fsync(fd)
            self.both(f, name)

        @rule(name=NAMES)
        def read_whole(self, name: str) -> None:
            self.both(lambda p: p.read_bytes(), name)

        @invariant()
        def same_tree(self) -> None:
            if not hasattr(self, "local"):
                return
            assert tree(self.local) == tree(self.remote)

        def teardown(self) -> None:
            if hasattr(self, "local"):
                shutil.rmtree(self.local, ignore_errors=True)
                shutil.rmtree(self.remote, ignore_errors=True)

    return SameAsLocal


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (type and mode, size, link count) for everything below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            s = p.lstat()
            size = 0 if stat.S_ISDIR(s.st_mode) else s.st_size
            out[str(p.relative_to(root))] = (s.st_mode, size, s.st_nlink)
    return out


def test_random_operations_match_a_local_directory(shared_mount) -> None:  # type: ignore[no-untyped-def]
    _, mountpoint = shared_mount
    machine = make_machine(mountpoint)
    machine.TestCase.settings = settings(max_examples=20, stateful_step_count=25, deadline=None,
                                         suppress_health_check=list(HealthCheck))
    machine.TestCase().runTest()
