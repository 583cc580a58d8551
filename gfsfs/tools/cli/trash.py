"""``gfs trash``: the files deleted but not yet purged, over the master's
``trash_list``, ``trash_restore`` and ``trash_purge`` RPCs (see
:mod:`gfsfs.common.protocol.client_master`)::

    gfs trash ls                        deleted files: path, size, deleted, purge time
    gfs trash restore PATH [--to NEW]   back to its old path (or NEW)
    gfs trash restore --ino N [--to NEW]
    gfs trash purge [--older-than SECONDS]
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from gfsfs.common.errors import Code, GFSError
from gfsfs.tools.cli.args import parse_seconds
from gfsfs.tools.cli.common import Failure, Master
from gfsfs.tools.cli.output import emit, human, table, when
from gfsfs.tools.cli.paths import fs_path, target_dir


async def cmd_trash_ls(m: Master, args: argparse.Namespace) -> int:
    reply = await m.call("trash_list")
    entries = reply["entries"]

    def text() -> str:
        if not entries:
            return "trash is empty"
        rows = [[e["ino"], e["path"] or f"(directory gone)/{os.fsdecode(e['name'])}",
                 human(e["size"]), when(e["deleted_ns"]), when(e["purge_ns"])]
                for e in entries]
        total = sum(e["size"] for e in entries)
        return (table(["INO", "PATH", "SIZE", "DELETED", "PURGED AT"], rows, {0, 2})
                + f"\n{len(entries)} files, {human(total)}; kept {reply['trash_time']:g} s")
    emit(args, reply, text)
    return 0


async def cmd_trash_restore(m: Master, args: argparse.Namespace) -> int:
    if (args.path is None) == (args.ino is None):
        raise Failure("give PATH or --ino N")
    listing = (await m.call("trash_list"))["entries"]
    if args.ino is not None:
        found = [e for e in listing if e["ino"] == args.ino]
        what = f"inode {args.ino}"
    else:
        what = fs_path(args.path)
        found = [e for e in listing if e["path"] == what]
    if not found:
        raise Failure(f"{what}: not in the trash (gfs trash ls lists what is)")
    entry = max(found, key=lambda e: e["deleted_ns"])   # the newest of that name
    body: dict[str, Any] = {"ino": entry["ino"]}
    target = entry["path"] or what
    if args.to is not None:
        target = fs_path(args.to)
        body["parent"], body["name"] = await target_dir(m, target)
    try:
        reply = await m.masters.call("trash_restore", body)
    except GFSError as exc:
        if exc.code == Code.EEXIST:
            raise Failure(f"{target}: exists; restore it elsewhere with --to NEWPATH") from None
        if exc.code == Code.ENOENT and args.to is None:
            raise Failure(f"{what}: {exc.message}") from None
        raise Failure(f"restore {what}: {exc.code}: {exc.message}") from None
    data = {"path": target, "ino": reply["ino"], "size": reply["attr"]["size"]}
    emit(args, data, lambda: f"restored {target} (inode {reply['ino']}, "
                             f"{human(reply['attr']['size'])})")
    return 0


async def cmd_trash_purge(m: Master, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.older_than is not None:
        body["older_than"] = args.older_than
    reply = await m.call("trash_purge", body)
    emit(args, reply, lambda: (
        f"purged {reply['purged']} files ({human(reply['bytes'])}); "
        f"{reply['chunks_freed']} chunks freed, {reply['chunks_shared']} still referenced "
        "elsewhere (snapshots)"))
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``trash`` (ls, restore, purge) to the ``gfs`` subcommand parser."""
    help = "deleted files waiting to be purged: ls, restore, purge"
    trash = sub.add_parser("trash", parents=[common], help=help, description=help)
    actions = trash.add_subparsers(dest="action", metavar="ACTION", required=True)
    a = actions.add_parser("ls", parents=[common], help="the trash: path it had, size, "
                           "deletion time, purge time")
    a.set_defaults(func=cmd_trash_ls)
    a = actions.add_parser("restore", parents=[common],
                           help="give a deleted file its old path back (or --to NEWPATH)")
    a.set_defaults(func=cmd_trash_restore)
    a.add_argument("path", metavar="PATH", nargs="?", help="the path it had")
    a.add_argument("--ino", type=int, help="the trashed inode (see gfs trash ls)")
    a.add_argument("--to", metavar="NEWPATH", help="restore under this path instead")
    a = actions.add_parser("purge", parents=[common],
                           help="delete trashed files now; their unshared chunks are freed")
    a.set_defaults(func=cmd_trash_purge)
    a.add_argument("--older-than", metavar="SECONDS", type=parse_seconds,
                   help="only files deleted at least this long ago")
