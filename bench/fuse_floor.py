#!/usr/bin/env python3
"""The floor of any pyfuse3 file system on this machine: an in-memory one that
keeps names, attributes and bytes in dictionaries and does nothing else (no
network, no disk, no log), run through the same metadata workloads as
bench/bench.py, beside a local directory in the same run.

Workloads: 2000 files of 4 KiB in 20 directories created (Python
``write_bytes``), then ``ls -lR`` of that tree, then ``rm -rf``. Whatever ratio
this prints is the best a pyfuse3 driver can reach here; docs/benchmarks.md
compares gfsfs with it.

Usage (root, /dev/fuse): python bench/fuse_floor.py [--files N]
"""
from __future__ import annotations

import argparse
import errno
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyfuse3
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_tree, timed  # noqa: E402


class MemoryFS(pyfuse3.Operations):
    """Just enough of a file system for create/write/ls/rm; ENODATA for xattrs."""

    def __init__(self) -> None:
        super().__init__()
        now = time.time_ns()
        self.attrs: dict[int, pyfuse3.EntryAttributes] = {}
        self.children: dict[int, dict[bytes, int]] = {}
        self.data: dict[int, bytearray] = {}
        self.next_ino = pyfuse3.ROOT_INODE + 1
        self._new(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, now)

    def _new(self, ino: int, mode: int, now: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino, e.st_mode, e.st_nlink = ino, mode, 2 if stat.S_ISDIR(mode) else 1
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = now
        e.attr_timeout = e.entry_timeout = 1.0
        e.st_blksize = 4096
        self.attrs[ino] = e
        if stat.S_ISDIR(mode):
            self.children[ino] = {}
        else:
            self.data[ino] = bytearray()
        return e

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        return self.attrs[inode]

    async def lookup(self, parent: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
        ino = self.children[parent].get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.attrs[ino]

    async def _make(self, parent: int, name: bytes, mode: int) -> pyfuse3.EntryAttributes:
        ino, self.next_ino = self.next_ino, self.next_ino + 1
        self.children[parent][name] = ino
        now = time.time_ns()
        self.attrs[parent].st_mtime_ns = now
        return self._new(ino, mode, now)

    async def mkdir(self, parent: int, name: bytes, mode: int, ctx: object) -> pyfuse3.EntryAttributes:
        return await self._make(parent, name, stat.S_IFDIR | mode)

    async def create(self, parent: int, name: bytes, mode: int, flags: int,
                     ctx: object) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        attr = await self._make(parent, name, stat.S_IFREG | mode)
        return pyfuse3.FileInfo(fh=attr.st_ino), attr

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        data = self.data[fh]
        data[off:off + len(buf)] = buf
        self.attrs[fh].st_size = len(data)
        return len(buf)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return bytes(self.data[fh][off:off + size])

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        pass

    async def opendir(self, inode: int, ctx: object) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = list(self.children[fh].items())
        for i, (name, ino) in enumerate(entries[start_id:], start_id + 1):
            if not pyfuse3.readdir_reply(token, name, self.attrs[ino], i):
                return

    async def releasedir(self, fh: int) -> None:
        pass

    async def unlink(self, parent: int, name: bytes, ctx: object) -> None:
        ino = self.children[parent].pop(name)
        self.attrs.pop(ino, None)
        self.data.pop(ino, None)

    async def rmdir(self, parent: int, name: bytes, ctx: object) -> None:
        ino = self.children[parent].pop(name)
        self.attrs.pop(ino, None)
        self.children.pop(ino, None)

    async def getxattr(self, inode: int, name: bytes, ctx: object) -> bytes:
        raise pyfuse3.FUSEError(errno.ENODATA)

    async def listxattr(self, inode: int, ctx: object) -> list[bytes]:
        return []


def serve(mountpoint: str) -> None:
    opts = set(pyfuse3.default_options)
    opts.add("fsname=fuse-floor")
    pyfuse3.init(MemoryFS(), mountpoint, opts)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


def workloads(root: Path, files: int) -> dict[str, float]:
    tree = root / "tree"
    tree.mkdir()
    t = {"create": timed(lambda: make_tree(tree, files, 20))}
    t["ls-lR"] = timed(lambda: subprocess.run(["ls", "-lR", str(tree)], check=True,
                                              stdout=subprocess.DEVNULL))
    t["rm-rf"] = timed(lambda: subprocess.run(["rm", "-rf", str(tree)], check=True))
    return t


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuse-floor-") as tmp:
        mnt, local = Path(tmp) / "mnt", Path(tmp) / "local"
        mnt.mkdir()
        local.mkdir()
        proc = subprocess.Popen([sys.executable, __file__, "--serve", str(mnt)])
        try:
            deadline = time.monotonic() + 10
            while not os.path.ismount(mnt):
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("the in-memory file system did not mount", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            fuse = workloads(mnt, args.files)
            base = workloads(local, args.files)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], stderr=subprocess.DEVNULL)
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-uz", str(mnt)], stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(f"# in-memory pyfuse3 file system vs local directory, {args.files} files of 4 KiB")
    print(f"{'workload':10} {'local s':>8} {'fuse s':>8} {'ratio':>7}")
    for name in fuse:
        print(f"{name:10} {base[name]:8.3f} {fuse[name]:8.3f} {base[name] / fuse[name]:7.3f}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2])
        sys.exit(0)
    sys.exit(main())
