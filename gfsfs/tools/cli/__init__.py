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
import errno as _errno
import json
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import trio

from gfsfs.common import config
from gfsfs.client import paths
from gfsfs.common.config import ConfigError
from gfsfs.common.errors import Code, GFSError
from gfsfs.client.paths import components
from gfsfs.common.rpc import call, make_http

MAX_GOAL = 16
PROG = "gfs"


class Failure(Exception):
    """A failure to report on stderr with exit status 1."""


# ---------------------------------------------------------------- paths

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


# ---------------------------------------------------------------- master

class Master:
    """The master's RPCs, with errors turned into :class:`Failure`."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def call(self, name: str, body: dict[str, Any] | None = None,
                   what: str | None = None) -> Any:
        try:
            return await call(self.http, self.url, name, body or {})
        except GFSError as exc:
            raise Failure(describe(exc, what, self.url)) from None

    async def resolve(self, path: str, follow: bool = False) -> dict[str, Any]:
        """The Attr of ``path`` (an absolute path inside the file system);
        ``follow``: a symlink in the last component is followed too."""
        try:
            return await paths.resolve(paths.MasterLookups(self.http, self.url), path, follow)
        except GFSError as exc:
            raise Failure(describe(exc, path, self.url)) from None
        except OSError as exc:       # ELOOP: too many symbolic links
            code = _errno.errorcode.get(exc.errno or 0, "EIO")
            raise Failure(f"{path}: {os.strerror(exc.errno or _errno.EIO)} ({code})") from None

    async def readdir(self, ino: int, what: str) -> list[tuple[bytes, dict[str, Any]]]:
        out: list[tuple[bytes, dict[str, Any]]] = []
        offset = 0
        while True:
            reply = await self.call("readdir", {"ino": ino, "offset": offset, "limit": 1024},
                                    what)
            entries = reply["entries"]
            if not entries:
                return out
            for name, attr, cookie in entries:
                out.append((name, attr))
                offset = cookie


def describe(exc: GFSError, what: str | None, url: str) -> str:
    if exc.code == Code.UNAVAILABLE:
        return f"cannot reach the master: {exc.message}"
    if exc.code in (Code.NOROUTE, Code.BADREQ, Code.INTERNAL) or what is None:
        return f"master {url}: {exc.code}: {exc.message}"
    return f"{what}: {os.strerror(exc.errno)} ({exc.code})"


# ---------------------------------------------------------------- formatting

def human(n: int | float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)


def percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.0f}%" if whole else "-"


def table(headers: list[str], rows: list[list[Any]], right: set[int] | None = None) -> str:
    """Columns aligned; ``right`` = indexes of right-aligned (numeric) columns."""
    right = right or set()
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [row[i].rjust(widths[i]) if i in right else row[i].ljust(widths[i])
                 for i in range(len(headers))]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def when(ns: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ns / 1e9))


def name_text(name: bytes) -> str:
    return os.fsdecode(name)


def emit(args: argparse.Namespace, data: Any, text: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=_jsonable))
    else:
        print(text())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return os.fsdecode(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def file_type(mode: int) -> str:
    return {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
            stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
            stat.S_IFBLK: "blockdev"}.get(stat.S_IFMT(mode), "unknown")


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
    print(json.dumps(dump, indent=2, default=_jsonable))
    return 0


# ---------------------------------------------------------------- arguments

def _goal(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"goal must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_GOAL:
        raise argparse.ArgumentTypeError(f"goal must be 1..{MAX_GOAL}, got {value}")
    return value


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before and after the subcommand."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--master", metavar="URL", default=default,
                        help="master URL (default: $GFS_MASTER, else [client] master_url)")
    parser.add_argument("--json", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="machine-readable JSON on stdout")
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="TOML config file (default: configs/config.toml if present)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append",
                        default=[] if top else argparse.SUPPRESS, dest="overrides",
                        help="override one config key (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="gfsfs admin: cluster status, files' chunks and replicas, goals.")
    _common(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    _common(common, top=False)
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
    p.add_argument("goal", metavar="N", type=_goal, help=f"replicas per chunk, 1..{MAX_GOAL}")
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

