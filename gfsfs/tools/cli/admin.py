"""``gfs fsck``, ``gfs checkpoint`` and ``gfs dump-metadata``: the master's
health report on every chunk, a checkpoint now, the namespace as JSON."""
from __future__ import annotations

import argparse
import json
from typing import Any

from gfsfs.tools.cli.args import add_command
from gfsfs.tools.cli.common import Master
from gfsfs.tools.cli.output import emit, jsonable, table


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


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``fsck``, ``checkpoint`` and ``dump-metadata`` to the ``gfs`` subcommand parser."""
    add_command(sub, common, "fsck", cmd_fsck, "chunks lost, under or over goal, with stale "
                "or corrupt replicas, and their files (exit 1 if any chunk is lost)")
    add_command(sub, common, "checkpoint", cmd_checkpoint, "write a master checkpoint now")
    add_command(sub, common, "dump-metadata", cmd_dump_metadata, "the whole namespace as JSON")
