"""The client's own permission checks, from an inode's attributes and the
caller's :data:`~gfsfs.client.types.Ctx` (uid, gid, gids).

The master checks every change it is asked for itself (``master/state/perms.py``);
these answer what it is never asked: access(2), and whether an open(2) of a
file that O_CREAT found made meanwhile elsewhere may go ahead. A ``None`` ctx
is a trusted caller, as at the master, and is treated like root here.
"""
from __future__ import annotations

import os
import stat

from gfsfs.client.types import Attr, Ctx

ANY_X = 0o111


def allowed(attr: Attr, ctx: Ctx | None, want: int) -> bool:
    """Whether the caller may access the inode as ``want`` asks (``os.R_OK``,
    ``W_OK``, ``X_OK`` bits): root may do anything but execute a file no one
    may execute; anyone else gets the owner's, the group's or the others'
    bits, the first class they are in."""
    mode = int(attr["mode"])
    if ctx is None or ctx["uid"] == 0:
        return not (want & os.X_OK) or mode & ANY_X != 0 or stat.S_ISDIR(mode)
    if ctx["uid"] == attr["uid"]:
        perm = (mode >> 6) & 7
    elif attr["gid"] in ctx.get("gids", [ctx["gid"]]):
        perm = (mode >> 3) & 7
    else:
        perm = mode & 7
    return want & perm == want


def open_access(flags: int) -> int:
    """The access an open(2) with ``flags`` needs of an existing file:
    read and/or write as O_ACCMODE says, and write for O_TRUNC."""
    want = {os.O_RDONLY: os.R_OK, os.O_WRONLY: os.W_OK,
            os.O_RDWR: os.R_OK | os.W_OK}.get(flags & os.O_ACCMODE, os.R_OK | os.W_OK)
    if flags & os.O_TRUNC:
        want |= os.W_OK
    return want
