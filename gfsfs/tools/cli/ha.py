"""``gfs ha`` and ``gfs promote URL``: the masters' roles, epoch and shadow
lag, and making a shadow master the primary (docs/ha.md)."""
from __future__ import annotations

import argparse
from typing import Any

from gfsfs.common.rpc import call
from gfsfs.common.errors import GFSError
from gfsfs.common.validate import check_addr
from gfsfs.tools.cli.args import add_command
from gfsfs.tools.cli.common import Failure, Master, describe
from gfsfs.tools.cli.output import emit, table


def describe_ha(st: dict[str, Any]) -> str:
    """``gfs ha``'s text: this master, then its shadows or its own lag."""
    role = "primary" if st["primary"] else f"shadow of {st['primary_url'] or 'unknown'}"
    lines = [f"{st['url']}: {role}, epoch {st['epoch']}, op log at {st['durable_seq']}"]
    follow = st.get("following")
    if follow:
        secs, behind = follow["seconds_behind"], follow["records_behind"]
        heard = "never" if secs is None else f"{secs:.1f} s ago"
        lines.append(f"  {'?' if behind is None else behind} records behind the primary, "
                     f"heard from {heard}; {follow['resyncs']} checkpoints taken")
    if st["shadows"]:
        rows = [[s["url"], "yes" if s["synchronous"] else "no",
                 "yes" if s["following"] else "no", s["behind"],
                 "-" if s["last_ack_seconds"] is None else f"{s['last_ack_seconds']:.1f} s",
                 s["dropped"]] for s in st["shadows"]]
        lines.append(table(["SHADOW", "SYNC", "FOLLOWING", "BEHIND", "LAST ACK", "DROPPED"],
                           rows, {3, 5}))
    return "\n".join(lines)


async def cmd_ha(m: Master, args: argparse.Namespace) -> int:
    st = await m.call("ha_status")
    emit(args, st, lambda: describe_ha(st))
    return 0


async def cmd_promote(m: Master, args: argparse.Namespace) -> int:
    """``promote`` goes to the named shadow, not to ``--master``."""
    try:
        url = check_addr(args.url.rstrip("/"), "URL")
        st = await call(m.http, url, "promote", {})
    except GFSError as exc:
        raise Failure(describe(exc, args.url, args.url)) from None
    emit(args, st, lambda: f"{st['url']} is primary in epoch {st['epoch']}")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``ha`` and ``promote`` to the ``gfs`` subcommand parser."""
    add_command(sub, common, "ha", cmd_ha, "the master's role, epoch and its shadows' lag")
    p = add_command(sub, common, "promote", cmd_promote,
                    "make the shadow master at URL the primary (raises the epoch)")
    p.add_argument("url", metavar="URL", help="the shadow to promote: http://host:port")
