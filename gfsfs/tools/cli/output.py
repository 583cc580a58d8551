"""How ``gfs`` prints: :func:`emit` (JSON with ``--json``, else text), aligned
tables, sizes, times, file types."""
from __future__ import annotations

import argparse
import json
import os
import stat
import time
from collections.abc import Callable
from typing import Any


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
        print(json.dumps(data, indent=2, default=jsonable))
    else:
        print(text())


def jsonable(obj: Any) -> Any:
    """``default`` for :func:`json.dumps`: bytes (names) as file-system text."""
    if isinstance(obj, bytes):
        return os.fsdecode(obj)
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def file_type(mode: int) -> str:
    return {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
            stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "chardev",
            stat.S_IFBLK: "blockdev"}.get(stat.S_IFMT(mode), "unknown")
