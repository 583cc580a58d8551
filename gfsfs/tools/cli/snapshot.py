"""``gfs snapshot SRC DST``: a copy-on-write copy of a file or a whole tree,
over the master's ``snapshot`` RPC (see :mod:`gfsfs.common.protocol.client_master`)."""
from __future__ import annotations

import argparse
from typing import Any

from gfsfs.common.errors import Code, GFSError
from gfsfs.tools.cli.args import add_command
from gfsfs.tools.cli.common import Failure, Master
from gfsfs.tools.cli.output import emit
from gfsfs.tools.cli.paths import fs_path, target_dir


async def cmd_snapshot(m: Master, args: argparse.Namespace) -> int:
    src, dst = fs_path(args.src), fs_path(args.dst)
    attr = await m.resolve(src)
    parent, name = await target_dir(m, dst)
    try:
        reply = await m.masters.call("snapshot",
                                     {"src": attr["ino"], "parent": parent, "name": name})
    except GFSError as exc:
        if exc.code == Code.EEXIST:
            raise Failure(f"{dst}: exists") from None
        if exc.code == Code.EINVAL:
            raise Failure(f"{src} -> {dst}: {exc.message}") from None
        raise Failure(f"snapshot {src} -> {dst}: {exc.code}: {exc.message}") from None
    data = {"src": src, "dst": dst, **reply}
    emit(args, data, lambda: (
        f"snapshot {src} -> {dst}: {reply['inodes']} inodes ({reply['files']} files, "
        f"{reply['chunks']} chunks shared), {reply['leases_revoked']} leases revoked, "
        f"{reply['seconds']:.3f} s"))
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``snapshot`` to the ``gfs`` subcommand parser."""
    p = add_command(sub, common, "snapshot", cmd_snapshot,
                    "copy-on-write snapshot of a file or a whole tree")
    p.add_argument("src", metavar="SRC", help="file or directory to snapshot")
    p.add_argument("dst", metavar="DST", help="new path for the copy (must not exist)")
