"""PATH arguments of ``gfs``: a path inside the file system (``/a/b``) or a
local path under a mount point of gfsfs (an entry of type ``fuse.gfsfs`` in
/proc/mounts), whose mount point prefix is stripped (:func:`fs_path`); and the
parent directory of a path to be created (:func:`target_dir`)."""
from __future__ import annotations

import os
import stat

from gfsfs.client.paths import components, split
from gfsfs.tools.cli.common import Failure, Master


def _unescape_mount(field: str) -> str:
    """/proc/mounts escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def gfs_mounts(mounts_file: str = "/proc/mounts") -> list[str]:
    """Mount points of gfsfs on this machine, longest first."""
    points = []
    try:
        with open(mounts_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "fuse.gfsfs":
                    points.append(os.path.normpath(_unescape_mount(parts[1])))
    except OSError:
        return []
    return sorted(points, key=len, reverse=True)


def _strip_mount(path: str, mounts: list[str]) -> str | None:
    for mp in mounts:
        if mp == "/":
            continue
        if path == mp:
            return "/"
        if path.startswith(mp + "/"):
            return path[len(mp):]
    return None


def fs_path(arg: str, mounts: list[str] | None = None) -> str:
    """The path inside the file system that ``arg`` names (see module doc)."""
    if arg == "":
        raise Failure("empty path")
    mounts = gfs_mounts() if mounts is None else mounts
    if os.path.isabs(arg):
        full = os.path.normpath(arg)
        if full.startswith("//"):
            full = "/" + full.lstrip("/")
        inside = _strip_mount(full, mounts)
        if inside is not None:
            return inside
        # the path may reach a mount point through a local symlink
        head, tail = os.path.split(full)
        try:
            real = os.path.join(os.path.realpath(head), tail)
        except OSError:
            real = full
        inside = _strip_mount(os.path.normpath(real), mounts)
        return inside if inside is not None else full
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    if cwd is not None:
        inside = _strip_mount(os.path.normpath(os.path.join(cwd, arg)), mounts)
        if inside is not None:
            return inside
    return os.path.normpath("/" + arg)


async def target_dir(m: Master, path: str) -> tuple[int, bytes]:
    """(parent directory inode, name) for a path to be created."""
    if not components(path):
        raise Failure(f"{path}: exists")
    parent_path, name = split(path)
    attr = await m.resolve(parent_path, follow=True)
    if not stat.S_ISDIR(attr["mode"]):
        raise Failure(f"{parent_path}: not a directory")
    return attr["ino"], name
