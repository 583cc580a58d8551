"""The ``gfs`` entry point: the argument parser (each command group's
``add_commands``), the master URL from options, environment and config, and
:func:`main`, which runs the chosen command and maps failures to exit status."""
from __future__ import annotations

import argparse
import os
import ssl
import sys

import trio

from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth import web as webauth
from gfsfs.common.auth.secret import Secret
from gfsfs.common import config, masters, tls
from gfsfs.common.config import ClientConfig, ConfigError
from gfsfs.common.rpc import RpcHTTP, make_http
from gfsfs.tools.cli import admin, chunkd, files, ha, quota, secret, snapshot, status, trash, web
from gfsfs.tools.cli.args import add_common_options
from gfsfs.tools.cli.common import PROG, Failure, Master

# the order of ``gfs --help``
GROUPS = (status, files, chunkd, admin, snapshot, trash, quota, ha, secret, web)


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


def master_url(args: argparse.Namespace) -> tuple[str, ClientConfig]:
    """(the master URLs, comma-separated, normalized; the client config) from
    --master, --set, $GFS_MASTER, config. ConfigError without an address."""
    cfg = config.load(args.config, list(args.overrides)).client
    url = args.master
    if url is None and not any(o.split("=", 1)[0].strip() == "client.master_url"
                               for o in args.overrides):
        url = os.environ.get("GFS_MASTER") or None
    try:
        return ",".join(masters.parse(url or cfg.master_url)), cfg
    except ValueError as exc:
        raise ConfigError(f"master URL: {exc}") from None


def secret_of(args: argparse.Namespace) -> Secret | None:
    """The cluster secret: ``[cluster] secret_file`` (--config, --set), else
    $GFS_SECRET_FILE; None if neither names one. SecretError if unusable."""
    path = config.load(args.config, list(args.overrides)).cluster.secret_file
    return secrets.from_config(path or os.environ.get("GFS_SECRET_FILE", ""))


def admin_token_of(args: argparse.Namespace) -> str | None:
    """Without a secret: the admin token, from $GFS_ADMIN_TOKEN_FILE, else
    ``[web] admin_token_file``; None if neither names one. WebAuthError if
    the file is unusable. It lets ``gfs`` call the admin RPCs
    (master.api.weblogin.ADMIN_RPCS) of a secured cluster."""
    path = os.environ.get("GFS_ADMIN_TOKEN_FILE") \
        or config.load(args.config, list(args.overrides)).web.admin_token_file
    return webauth.load_tokens(path)[0] if path else None


async def run(args: argparse.Namespace, url: str, cfg: ClientConfig,
              secret: Secret | None = None, tls_ctx: ssl.SSLContext | None = None,
              token: str | None = None) -> int:
    if token is not None and secret is None:
        http: RpcHTTP = RpcHTTP(cfg.request_timeout, 16, None,
                                webauth.BearerSigner(token), tls_ctx)  # type: ignore[arg-type]
    else:
        http = make_http(timeout=cfg.request_timeout, connections=16, secret=secret,
                         tls=tls_ctx)
    async with http:
        return int(await args.func(Master(http, url, cfg.failover_timeout), args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "local", False):          # runs here, needs no cluster (gfs secret init)
        try:
            return int(args.func(None, args))
        except Failure as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 1
    try:
        url, cfg = master_url(args)
        secret = secret_of(args)
        tls_ctx = tls.client_context(config.load(args.config, list(args.overrides)).tls)
        token = admin_token_of(args) if secret is None else None
    except (ConfigError, secrets.SecretError, webauth.WebAuthError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        return trio.run(run, args, url, cfg, secret, tls_ctx, token)
    except Failure as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
