"""The ``gfs`` entry point: the argument parser (each command group's
``add_commands``), the master URL from options, environment and config, and
:func:`main`, which runs the chosen command and maps failures to exit status."""
from __future__ import annotations

import argparse
import os
import sys

import trio

from gfsfs.common import config
from gfsfs.common.config import ConfigError
from gfsfs.common.rpc import make_http
from gfsfs.tools.cli import admin, chunkd, files, ha, snapshot, status, trash
from gfsfs.tools.cli.args import add_common_options
from gfsfs.tools.cli.common import PROG, Failure, Master

# the order of ``gfs --help``
GROUPS = (status, files, chunkd, admin, snapshot, trash, ha)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="gfsfs admin: cluster status, files' chunks and replicas, goals.")
    add_common_options(parser, top=True)
    common = argparse.ArgumentParser(add_help=False)
    add_common_options(common, top=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in GROUPS:
        group.add_commands(sub, common)
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
