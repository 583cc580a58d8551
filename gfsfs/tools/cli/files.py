"""``gfs ls``, ``gfs fileinfo`` and ``gfs setgoal``: directories, a file's chunks
and replicas, replication goals."""
from __future__ import annotations

import argparse
import os
import stat
import time
from typing import Any

import trio

from gfsfs.tools.cli.args import MAX_GOAL, add_command, parse_goal
from gfsfs.tools.cli.common import Failure, Master
from gfsfs.tools.cli.output import emit, file_type, human, name_text, table, when
from gfsfs.tools.cli.paths import fs_path


def replica_summary(info: dict[str, Any]) -> dict[str, Any]:
    counts = [len(c["replicas"]) for c in info["chunks"]]
    goal = info["attr"]["goal"]
    return {"chunk_count": len(counts), "min_replicas": min(counts) if counts else None,
            "max_replicas": max(counts) if counts else None,
            "under_goal": sum(1 for n in counts if n < goal),
            "lost": sum(1 for n in counts if n == 0)}


async def cmd_ls(m: Master, args: argparse.Namespace) -> int:
    path = fs_path(args.path)
    # like ls(1): a symlink named on the command line is followed unless -l,
    # and always with a trailing slash
    attr = await m.resolve(path, follow=not args.long or args.path.endswith(("/", "/.")))
    if stat.S_ISDIR(attr["mode"]):
        entries = sorted(await m.readdir(attr["ino"], path), key=lambda e: e[0])
    else:
        entries = [(os.fsencode(path.rsplit("/", 1)[-1]), attr)]
    rows: list[dict[str, Any]] = []
    for name, a in entries:
        rows.append({"name": name_text(name), "ino": a["ino"], "type": file_type(a["mode"]),
                     "mode": a["mode"], "mode_text": stat.filemode(a["mode"]),
                     "nlink": a["nlink"], "uid": a["uid"], "gid": a["gid"],
                     "size": a["size"], "mtime_ns": a["mtime_ns"], "goal": a["goal"]})
    if args.long:
        limiter = trio.CapacityLimiter(16)

        async def detail(row: dict[str, Any]) -> None:
            async with limiter:
                what = f"{path.rstrip('/')}/{row['name']}"
                try:
                    if row["type"] == "file":
                        info = await m.call("fileinfo", {"ino": row["ino"]}, what)
                        row.update(replica_summary(info))
                    elif row["type"] == "symlink":
                        reply = await m.call("readlink", {"ino": row["ino"]}, what)
                        row["target"] = name_text(reply["target"])
                except Failure:
                    row["gone"] = True      # removed meanwhile

        async with trio.open_nursery() as nursery:
            for row in rows:
                nursery.start_soon(detail, row)
        rows = [r for r in rows if not r.get("gone")]

    def text() -> str:
        if not args.long:
            return "\n".join(r["name"] for r in rows)
        out = []
        for r in rows:
            live = "-" if r.get("min_replicas") is None else str(r["min_replicas"])
            if r.get("min_replicas") is not None and r["max_replicas"] != r["min_replicas"]:
                live = f"{r['min_replicas']}-{r['max_replicas']}"
            name = r["name"] + (f" -> {r['target']}" if "target" in r else "")
            out.append([r["mode_text"], r["nlink"], r["uid"], r["gid"], r["size"], r["goal"],
                        live, r.get("chunk_count", "-"), when(r["mtime_ns"]), name])
        return table(["MODE", "LINKS", "UID", "GID", "SIZE", "GOAL", "LIVE", "CHUNKS",
                      "MODIFIED", "NAME"], out, {1, 2, 3, 4, 5, 6, 7})
    emit(args, {"path": path, "entries": rows}, text)
    return 0


async def cmd_fileinfo(m: Master, args: argparse.Namespace) -> int:
    path = fs_path(args.path)
    attr = await m.resolve(path)
    info = await m.call("fileinfo", {"ino": attr["ino"]}, path)
    now = time.time_ns()
    data = {"path": path, **info, **replica_summary(info)}

    def text() -> str:
        a = info["attr"]
        lines = [f"{path}: {file_type(a['mode'])}"
                 f"{' (in trash)' if info.get('in_trash') else ''}, inode {a['ino']}, "
                 f"size {a['size']} ({human(a['size'])}), goal {a['goal']}, "
                 f"{len(info['chunks'])} chunks of {human(info['chunk_size'])}"]
        for c in info["chunks"]:
            n = len(c["replicas"])
            state = "" if n >= a["goal"] else (
                " LOST" if n == 0 else f" UNDER GOAL ({n}/{a['goal']})")
            lines.append(f"  chunk {c['index']}: handle {c['handle']} version {c['version']}"
                         f"{' refs ' + str(c['refcount']) if c['refcount'] != 1 else ''}{state}")
            primary = c["primary"]["id"] if c["primary"] else None
            for i, r in enumerate(c["replicas"], 1):
                lease = ""
                if r["id"] == primary:
                    left = max(0.0, (c["lease_expires_ns"] - now) / 1e9)
                    lease = f"  [primary, lease {left:.0f}s left]"
                lines.append(f"    copy {i}: {r['id']}  {r['addr']}  rack {r['rack']}{lease}")
            if primary is not None and primary not in {r["id"] for r in c["replicas"]}:
                lines.append(f"    primary: {primary} ({c['primary']['addr']})")
        return "\n".join(lines)
    emit(args, data, text)
    return 0


async def cmd_setgoal(m: Master, args: argparse.Namespace) -> int:
    path = fs_path(args.path)
    attr = await m.resolve(path)
    reply = await m.call("setgoal", {"ino": attr["ino"], "goal": args.goal,
                                     "recursive": args.recursive}, path)
    data = {"path": path, **reply}

    def text() -> str:
        scope = f"{reply['inodes']} inodes, " if args.recursive else ""
        return f"{path}: goal {reply['goal']} ({scope}{reply['changed']} changed)"
    emit(args, data, text)
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ls``, ``fileinfo`` and ``setgoal`` to the ``gfs`` subcommand parser."""
    p = add_command(sub, common, "ls", cmd_ls, "list a directory (or one file)")
    p.add_argument("-l", "--long", action="store_true",
                   help="long listing with goal and live replica counts")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p = add_command(sub, common, "fileinfo", cmd_fileinfo,
                    "a file's chunks: handle, version, replicas, lease")
    p.add_argument("path", metavar="PATH")
    p = add_command(sub, common, "setgoal", cmd_setgoal, "set the replication goal")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also every file and directory below PATH")
    p.add_argument("goal", metavar="N", type=parse_goal,
                   help=f"replicas per chunk, 1..{MAX_GOAL}")
    p.add_argument("path", metavar="PATH")
