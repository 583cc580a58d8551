"""``gfs``: the gfsfs admin command line.

Talks to the master (``--master URL``; else ``--set client.master_url=...``;
else the ``GFS_MASTER`` environment variable; else ``[client] master_url`` from
the config file) with the msgpack RPCs of :mod:`gfsfs.common.protocol`::

    gfs status                      cluster summary
    gfs df                          capacity, per chunkd and in total
    gfs ls [-l] PATH                a directory (with -l: goal, live replicas)
    gfs fileinfo PATH               every chunk: handle, version, replicas, lease
    gfs setgoal [-r] N PATH         replication goal (recursively with -r)
    gfs chunkd list                 the chunk servers
    gfs fsck                        lost / under-goal / over-goal / stale / corrupt
                                    chunks and their files (exit 1 if any is lost)
    gfs checkpoint                  write a master checkpoint now
    gfs dump-metadata --json        the whole namespace as JSON
    gfs snapshot SRC DST            copy-on-write snapshot of a file or a tree
    gfs trash ls                    deleted files: path, size, deletion/purge time
    gfs trash restore PATH [--to NEWPATH]   undelete (also --ino N)
    gfs trash purge [--older-than SECONDS]  purge now; unshared chunks are freed

Every subcommand takes ``--json`` (machine-readable output on stdout). Exit
status: 0 on success, 1 on a failure (message on stderr), 2 on a usage error.

PATH is a path inside the file system (``/a/b``) or a local path under a
mount point of gfsfs (an entry of type ``fuse.gfsfs`` in /proc/mounts), whose
mount point prefix is stripped. It is resolved with ``lookup`` from the root
inode (:func:`gfsfs.client.paths.resolve`, shared with :mod:`gfsfs.client.api`), following
symbolic links in all but the last component.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from typing import Any

import trio

from gfsfs.common import config
from gfsfs.common.config import ConfigError
from gfsfs.common.rpc import make_http
from gfsfs.tools.cli.args import MAX_GOAL, add_common_options, parse_goal
from gfsfs.tools.cli.common import PROG, Failure, Master
from gfsfs.tools.cli.output import (emit, file_type, human, jsonable, name_text, percent,
                                    table, when)
from gfsfs.tools.cli.paths import fs_path


# ---------------------------------------------------------------- subcommands

async def cmd_status(m: Master, args: argparse.Namespace) -> int:
    st = await m.call("cluster_status")
    data = {"master": m.url, **st}

    def text() -> str:
        rows = [
            ["master", m.url],
            ["chunkds", f"{st['chunkds_alive']} live, {st['chunkds_dead']} dead"],
            ["files", f"{st['files']} ({st['dirs']} directories, {st['inodes']} inodes, "
                      f"{st.get('trash_files', 0)} in trash)"],
            ["chunks", f"{st['chunks']} of {human(st['chunk_size'])}"],
            ["under goal", str(st["under_goal"])],
            ["lost", f"{st['lost']} (no live replica)"],
            ["over goal", str(st["over_goal"])],
            ["leases", str(st["leases"])],
            ["capacity", f"{human(st['total_bytes'])} total, {human(st['used_bytes'])} used, "
                         f"{human(st['free_bytes'])} free "
                         f"({percent(st['used_bytes'], st['total_bytes'])} used)"],
            ["default goal", str(st["default_goal"])],
            ["op log", f"seq {st['last_seq']}, checkpoint at {st['checkpoint_seq']}"],
        ]
        width = max(len(k) for k, _v in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    emit(args, data, text)
    return 0


async def cmd_df(m: Master, args: argparse.Namespace) -> int:
    st = await m.call("cluster_status")
    live = [s for s in st["servers"] if s["alive"]]
    data = {"total_bytes": st["total_bytes"], "used_bytes": st["used_bytes"],
            "free_bytes": st["free_bytes"], "chunkds": st["chunkds"],
            "servers": [{k: s[k] for k in ("id", "addr", "rack", "capacity_bytes",
                                             "used_bytes", "free_bytes")} for s in live]}

    def text() -> str:
        rows = [[s["id"], s["rack"], human(s["capacity_bytes"]), human(s["used_bytes"]),
                 human(s["free_bytes"]), percent(s["used_bytes"], s["capacity_bytes"])]
                for s in live]
        rows.append([f"total ({len(live)} live)", "", human(st["total_bytes"]),
                     human(st["used_bytes"]), human(st["free_bytes"]),
                     percent(st["used_bytes"], st["total_bytes"])])
        return table(["CHUNKD", "RACK", "SIZE", "USED", "AVAIL", "USE%"], rows, {2, 3, 4, 5})
    emit(args, data, text)
    return 0


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
                 f"{' (in trash)' if info.get('in_trash') else ''}, inode {a['ino']}, size {a['size']} "
                 f"({human(a['size'])}), goal {a['goal']}, {len(info['chunks'])} chunks "
                 f"of {human(info['chunk_size'])}"]
        for c in info["chunks"]:
            n = len(c["replicas"])
            state = "" if n >= a["goal"] else (" LOST" if n == 0 else f" UNDER GOAL ({n}/{a['goal']})")
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


async def cmd_chunkd_drain(m: Master, args: argparse.Namespace) -> int:
    """``gfs chunkd drain ID``: move every replica off a chunk server, showing
    progress until none it holds is needed (or ``--no-wait``); ``undrain``
    cancels."""
    if not args.server:
        raise Failure(f"chunkd {args.action}: which server? (an ID from `gfs chunkd list`)")
    body = {"id": args.server, "cancel": args.action == "undrain"}
    reply = await m.call("drain", body, args.server)
    last = None
    if args.action == "drain" and args.wait:
        with trio.move_on_after(args.timeout if args.timeout > 0 else float("inf")):
            while reply["remaining"] > 0:
                if reply["remaining"] != last and not args.json:
                    print(f"{args.server}: draining, {reply['remaining']} replicas to move",
                          flush=True)
                last = reply["remaining"]
                await trio.sleep(1.0)
                reply = await m.call("drain", {"id": args.server, "status": True}, args.server)

    def text() -> str:
        if not reply["draining"]:
            return f"{args.server}: not draining ({reply['remaining']} replicas held)"
        if reply["remaining"] == 0:
            return f"{args.server}: drained (holds no needed replica; it can be stopped)"
        return f"{args.server}: draining, {reply['remaining']} replicas to move"
    emit(args, reply, text)
    return 0 if not (args.action == "drain" and args.wait and reply["remaining"]) else 1


async def cmd_chunkd_list(m: Master, args: argparse.Namespace) -> int:
    if getattr(args, "action", "list") in ("drain", "undrain"):
        return await cmd_chunkd_drain(m, args)
    st = await m.call("cluster_status")
    servers = st["servers"]

    def text() -> str:
        rows = [[s["id"], s["addr"], s["rack"],
                 ("draining" if s.get("draining") else "alive") if s["alive"] else "DEAD",
                 human(s["capacity_bytes"]), human(s["used_bytes"]), human(s["free_bytes"]),
                 percent(s["used_bytes"], s["capacity_bytes"]), s["chunks"],
                 f"{s['last_heartbeat_age']:.1f}s"] for s in servers]
        return table(["ID", "ADDR", "RACK", "STATE", "CAPACITY", "USED", "FREE", "USE%",
                      "CHUNKS", "HEARTBEAT"], rows, {4, 5, 6, 7, 8, 9})
    emit(args, {"servers": servers}, text)
    return 0


async def cmd_fsck(m: Master, args: argparse.Namespace) -> int:
    report = await m.call("fsck")
    problems = report["problems"]

    def text() -> str:
        lines = [f"{report['chunks']} chunks: {report['healthy']} healthy, "
                 f"{report['under_goal']} under goal, {report['lost']} lost, "
                 f"{report['over_goal']} over goal, {report['stale']} with stale replicas, "
                 f"{report['corrupt']} with corrupt replicas; chunkds "
                 f"{report['chunkds_alive']} live, {report['chunkds_dead']} dead"]
        if problems:
            rows = []
            for p in problems:
                files = ", ".join(
                    f"{f['path'] or 'ino ' + str(f['ino'])}[{f['index']}]"
                    + (" (trash)" if f.get("in_trash") else "") for f in p["files"])
                seen = [f"stale@{s['id']}(v{s['version']})" for s in p["stale"]]
                seen += [f"corrupt@{c['id']}" for c in p["corrupt"]]
                rows.append([",".join(s.upper() for s in p["states"]), p["handle"],
                             p["version"], f"{p['live']}/{p['goal']}",
                             ",".join(p["replicas"]) or "-", " ".join(seen) or "-", files])
            lines.append(table(["STATE", "HANDLE", "VERSION", "LIVE/GOAL", "REPLICAS",
                                "SEEN", "FILES"], rows, {1, 2, 3}))
        lines.append("status: " + ("LOST CHUNKS" if report["lost"] else
                                   "DEGRADED" if problems else "HEALTHY"))
        return "\n".join(lines)
    emit(args, report, text)
    return 1 if report["lost"] else 0


async def cmd_checkpoint(m: Master, args: argparse.Namespace) -> int:
    reply = await m.call("checkpoint")
    emit(args, reply, lambda: f"checkpoint written at op log seq {reply['seq']}")
    return 0


async def cmd_dump_metadata(m: Master, args: argparse.Namespace) -> int:
    dump = await m.call("dump_metadata")
    print(json.dumps(dump, indent=2, default=jsonable))
    return 0


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="gfsfs admin: cluster status, files' chunks and replicas, goals.")
    add_common_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    add_common_options(common, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Any, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=fn)
        return p

    add("status", cmd_status, "master summary: chunkds, files, chunks, under-replicated, lost, "
        "capacity")
    add("df", cmd_df, "capacity per live chunkd and in total")
    p = add("ls", cmd_ls, "list a directory (or one file)")
    p.add_argument("-l", "--long", action="store_true",
                   help="long listing with goal and live replica counts")
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p = add("fileinfo", cmd_fileinfo, "a file's chunks: handle, version, replicas, lease")
    p.add_argument("path", metavar="PATH")
    p = add("setgoal", cmd_setgoal, "set the replication goal")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="also every file and directory below PATH")
    p.add_argument("goal", metavar="N", type=parse_goal, help=f"replicas per chunk, 1..{MAX_GOAL}")
    p.add_argument("path", metavar="PATH")
    p = add("chunkd", cmd_chunkd_list, "chunk servers: `gfs chunkd list`; `gfs chunkd drain "
            "ID` moves every replica off one (progress shown), `undrain ID` cancels")
    p.add_argument("action", choices=["list", "drain", "undrain"], nargs="?", default="list")
    p.add_argument("server", metavar="ID", nargs="?", help="chunk server id (drain, undrain)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="drain: start it and return at once")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="drain: give up waiting after this many seconds (exit 1); 0 = never")
    add("fsck", cmd_fsck, "chunks lost, under or over goal, with stale or corrupt "
        "replicas, and their files (exit 1 if any chunk is lost)")
    add("checkpoint", cmd_checkpoint, "write a master checkpoint now")
    add("dump-metadata", cmd_dump_metadata, "the whole namespace as JSON")
    from gfsfs.tools.cli_snapshot import add_commands
    add_commands(sub, common)
    return parser


def master_url(args: argparse.Namespace) -> tuple[str, float]:
    """(master URL, request timeout) from --master, --set, $GFS_MASTER, config."""
    cfg = config.load(args.config, list(args.overrides)).client
    url = args.master
    if url is None and not any(o.split("=", 1)[0].strip() == "client.master_url"
                               for o in args.overrides):
        url = os.environ.get("GFS_MASTER") or None
    url = url or cfg.master_url
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/"), cfg.request_timeout


async def run(args: argparse.Namespace, url: str, timeout: float) -> int:
    async with make_http(timeout=timeout, connections=16) as http:
        return int(await args.func(Master(http, url), args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        url, timeout = master_url(args)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        return trio.run(run, args, url, timeout)
    except Failure as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1

