"""Arguments of ``gfs``: the options every subcommand takes (before or after
its name), the helper that adds a subcommand, and the argument types."""
from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from gfsfs.tools.cli.common import Master

MAX_GOAL = 16

Command = Callable[[Master, argparse.Namespace], Awaitable[int]]


def add_common_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """Options accepted before and after the subcommand."""
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--master", metavar="URL", default=default,
                        help="master URL, or several comma-separated (the primary is "
                             "followed; default: $GFS_MASTER, else [client] master_url)")
    parser.add_argument("--json", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="machine-readable JSON on stdout")
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="TOML config file (default: configs/config.toml if present)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append",
                        default=[] if top else argparse.SUPPRESS, dest="overrides",
                        help="override one config key (repeatable)")


def add_command(sub: Any, common: argparse.ArgumentParser, name: str, fn: Command,
                help: str) -> argparse.ArgumentParser:
    """A subcommand ``name`` running ``fn``, with the common options."""
    p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help,
                                                description=help)
    p.set_defaults(func=fn)
    return p


def parse_goal(text: str) -> int:
    """A replication goal, 1..MAX_GOAL."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"goal must be an integer, got {text!r}") from None
    if not 1 <= value <= MAX_GOAL:
        raise argparse.ArgumentTypeError(f"goal must be 1..{MAX_GOAL}, got {value}")
    return value


def parse_seconds(text: str) -> float:
    """A duration in seconds, not negative."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seconds expected, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value
