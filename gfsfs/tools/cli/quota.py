"""``gfs quota``: per-directory quotas (docs/quotas.md), over the master's
``quota_set``, ``quota_rm`` and ``quota_list`` RPCs (see
:mod:`gfsfs.common.protocol.client_master`)::

    gfs quota set PATH [--bytes 10G] [--inodes 1M] [--soft-bytes 8G]
                       [--soft-inodes 900k] [--grace 7d]
    gfs quota ls [PATH]        every quota (or those over PATH): limits, usage
    gfs quota rm PATH

Byte sizes take K, M, G, T, P (powers of 1024; ``KiB``, ``GB``... accepted the
same); inode counts take k, M, G (powers of 1000); the grace takes s, m, h,
d, w (plain number: seconds).
"""
from __future__ import annotations

import argparse
import re
from typing import Any

from gfsfs.tools.cli.args import add_command
from gfsfs.tools.cli.common import Failure, Master
from gfsfs.tools.cli.output import emit, human, table, when
from gfsfs.tools.cli.paths import fs_path

_NUM = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*$")
_BYTES = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_COUNT = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_TIME = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _parse(text: str, units: dict[str, int], what: str, strip: str = "") -> float:
    m = _NUM.match(text)
    unit = m.group(2).lower() if m else ""
    for suffix in ("ib", "b") if strip else ():
        if len(unit) > 1 and unit.endswith(suffix):
            unit = unit[:-len(suffix)]
            break
    if m is None or unit not in units:
        raise argparse.ArgumentTypeError(f"{what} expected (e.g. {', '.join(EXAMPLES[what])}), "
                                         f"got {text!r}")
    return float(m.group(1)) * units[unit]


EXAMPLES = {"a size": ["10G", "512M", "1000"], "a count": ["1M", "500k", "1000"],
            "a duration": ["7d", "12h", "30m", "90"]}


def parse_size(text: str) -> int:
    return int(_parse(text, _BYTES, "a size", strip="b"))


def parse_count(text: str) -> int:
    return int(_parse(text, _COUNT, "a count"))


def parse_duration(text: str) -> float:
    return _parse(text, _TIME, "a duration")


def _limit(value: int, used: int, fmt: Any) -> str:
    return "-" if not value else f"{fmt(value)} ({100.0 * used / value:.0f}%)"


def _grace(seconds: float) -> str:
    for unit, n in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def _state(q: dict[str, Any]) -> str:
    notes = []
    for kind in ("bytes", "inodes"):
        if q[f"soft_{kind}_expired"]:
            notes.append(f"soft {kind} grace over")
        elif q[f"since_{kind}"]:
            notes.append(f"soft {kind} over since {when(q[f'since_{kind}'])}")
    return "; ".join(notes) or "ok"


async def cmd_quota_set(m: Master, args: argparse.Namespace) -> int:
    path = fs_path(args.path)
    attr = await m.resolve(path, follow=True)
    body: dict[str, Any] = {"ino": attr["ino"]}
    for key in ("bytes", "inodes", "soft_bytes", "soft_inodes"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    if len(body) == 1:
        raise Failure("give at least one of --bytes, --inodes, --soft-bytes, --soft-inodes")
    if args.grace is not None:
        body["grace"] = args.grace
    reply = await m.call("quota_set", body, path)
    emit(args, reply, lambda: f"quota on {reply['path']}: " + _summary(reply))
    return 0


def _summary(q: dict[str, Any]) -> str:
    return (f"bytes {human(q['used_bytes'])} of {_limit(q['bytes'], q['used_bytes'], human)}"
            f" (soft {_limit(q['soft_bytes'], q['used_bytes'], human)}), inodes "
            f"{q['used_inodes']} of {_limit(q['inodes'], q['used_inodes'], str)} (soft "
            f"{_limit(q['soft_inodes'], q['used_inodes'], str)}), grace {_grace(q['grace'])}")


async def cmd_quota_ls(m: Master, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.path is not None:
        path = fs_path(args.path)
        body["ino"] = (await m.resolve(path, follow=True))["ino"]
    quotas = (await m.call("quota_list", body, args.path))["quotas"]

    def text() -> str:
        if not quotas:
            return "no quotas"
        rows = [[q["path"], human(q["used_bytes"]), _limit(q["bytes"], q["used_bytes"], human),
                 _limit(q["soft_bytes"], q["used_bytes"], human), q["used_inodes"],
                 _limit(q["inodes"], q["used_inodes"], str),
                 _limit(q["soft_inodes"], q["used_inodes"], str), _grace(q["grace"]), _state(q)]
                for q in quotas]
        return table(["PATH", "BYTES", "HARD", "SOFT", "INODES", "HARD", "SOFT", "GRACE",
                      "STATE"], rows, {1, 2, 3, 4, 5, 6})
    emit(args, {"quotas": quotas}, text)
    return 0


async def cmd_quota_rm(m: Master, args: argparse.Namespace) -> int:
    path = fs_path(args.path)
    attr = await m.resolve(path, follow=True)
    await m.call("quota_rm", {"ino": attr["ino"]}, path)
    emit(args, {"path": path, "removed": True}, lambda: f"quota on {path} removed")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``quota set|ls|rm`` to the ``gfs`` subcommand parser."""
    p = sub.add_parser("quota", help="per-directory quotas: bytes and inodes, hard and soft",
                       description="per-directory quotas (docs/quotas.md)")
    qsub = p.add_subparsers(dest="quota_command", metavar="ACTION", required=True)
    s = add_command(qsub, common, "set", cmd_quota_set,
                    "set (or replace) the quota of a directory")
    s.add_argument("path", metavar="PATH", help="the directory")
    s.add_argument("--bytes", type=parse_size, metavar="SIZE",
                   help="hard limit on the bytes below it (10G; 0: none)")
    s.add_argument("--inodes", type=parse_count, metavar="N",
                   help="hard limit on files+dirs+symlinks below it (1M; 0: none)")
    s.add_argument("--soft-bytes", dest="soft_bytes", type=parse_size, metavar="SIZE",
                   help="soft limit on bytes: may be exceeded for the grace period")
    s.add_argument("--soft-inodes", dest="soft_inodes", type=parse_count, metavar="N",
                   help="soft limit on inodes")
    s.add_argument("--soft", dest="soft_bytes", type=parse_size, metavar="SIZE",
                   help=argparse.SUPPRESS)
    s.add_argument("--grace", type=parse_duration, metavar="TIME",
                   help="how long a soft limit may be exceeded (7d default; 12h, 30m, 90)")
    ls = add_command(qsub, common, "ls", cmd_quota_ls, "quotas, their limits and usage")
    ls.add_argument("path", metavar="PATH", nargs="?",
                    help="only the quotas that apply to PATH (its own and its ancestors')")
    rm = add_command(qsub, common, "rm", cmd_quota_rm, "remove the quota of a directory")
    rm.add_argument("path", metavar="PATH", help="the directory")
