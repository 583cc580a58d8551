"""``gfs status`` and ``gfs df``: the cluster summary and its capacity, from
the master's ``cluster_status``."""
from __future__ import annotations

import argparse
from typing import Any

from gfsfs.tools.cli.args import add_command
from gfsfs.tools.cli.common import Master
from gfsfs.tools.cli.output import emit, human, percent, table


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
            ["masters", ha_line(st["ha"])],
        ]
        width = max(len(k) for k, _v in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
    emit(args, data, text)
    return 0


def ha_line(ha: dict[str, Any]) -> str:
    """This master's role and epoch, and its shadows' lag (or its own)."""
    if not ha["primary"]:
        lag = ha.get("following", {})
        return (f"shadow of {ha['primary_url'] or 'unknown'} (epoch {ha['epoch']}), "
                f"{lag.get('records_behind', '?')} records behind")
    shadows = ", ".join(f"{s['url']} {'sync' if s['synchronous'] else 'async'} "
                        f"{s['behind']} behind" for s in ha["shadows"])
    return f"primary, epoch {ha['epoch']}; shadows: {shadows or 'none'}"


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


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``status`` and ``df`` to the ``gfs`` subcommand parser."""
    add_command(sub, common, "status", cmd_status, "master summary: chunkds, files, chunks, "
                "under-replicated, lost, capacity")
    add_command(sub, common, "df", cmd_df, "capacity per live chunkd and in total")
