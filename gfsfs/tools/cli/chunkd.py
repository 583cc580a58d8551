"""``gfs chunkd list`` and ``gfs chunkd drain|undrain ID``: the chunk servers,
and moving every replica off one."""
from __future__ import annotations

import argparse
from typing import Any

import trio

from gfsfs.tools.cli.args import add_command
from gfsfs.tools.cli.common import Failure, Master
from gfsfs.tools.cli.output import emit, human, percent, table


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


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``chunkd`` (list, drain, undrain) to the ``gfs`` subcommand parser."""
    p = add_command(sub, common, "chunkd", cmd_chunkd_list, "chunk servers: `gfs chunkd "
                    "list`; `gfs chunkd drain ID` moves every replica off one (progress "
                    "shown), `undrain ID` cancels")
    p.add_argument("action", choices=["list", "drain", "undrain"], nargs="?", default="list")
    p.add_argument("server", metavar="ID", nargs="?", help="chunk server id (drain, undrain)")
    p.add_argument("--no-wait", dest="wait", action="store_false",
                   help="drain: start it and return at once")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="drain: give up waiting after this many seconds (exit 1); 0 = never")
