#!/usr/bin/env python3
"""Mount a gfsfs file system: ``python mount.py MASTER_URL MOUNTPOINT``.

Reads top to bottom: arguments and config, logging, a check that the master
answers and speaks our PROTOCOL_VERSION (``statfs``), daemonizing (unless
--foreground), then in one trio run: the client, the Operations,
``pyfuse3.init``, signal handling (SIGINT/SIGTERM -> ``pyfuse3.terminate()``),
``pyfuse3.main()`` and a clean unmount.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import signal
import ssl
import sys
from contextlib import ExitStack
from pathlib import Path

import pyfuse3
import trio

from gfsfs.common.auth import reload
from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth.secret import Secret
from gfsfs.common import config as gconfig
from gfsfs.common import masters
from gfsfs.common import tls as gtls
from gfsfs.fuse import ext as fuse_ext
from gfsfs.common import logs
from gfsfs.client.core import Client
from gfsfs.client.session import SessionError, wanted as session_wanted
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.fuse.operations import Operations

log = logging.getLogger("gfsfs.mount")

# -o options we interpret; everything else is handed to libfuse as is.
OUR_OPTIONS = {"attr_timeout", "entry_timeout", "debug", "ro", "allow_other", "export",
               "password_file"}
READ_AHEAD_KB = 1024     # kernel read-ahead of the mount's bdi (FUSE's default is 128)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gfs-mount", description="Mount a gfsfs (GFS) file system through FUSE.")
    parser.add_argument("master_url", metavar="MASTER_URL",
                        help="e.g. http://127.0.0.1:5000; several masters (the primary and "
                             "its shadows) comma-separated: the mount follows the primary")
    parser.add_argument("mountpoint", metavar="MOUNTPOINT", help="an empty directory")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT]",
                        help="mount options: ro, allow_other, debug, attr_timeout=S, "
                             "entry_timeout=S, or any libfuse option")
    parser.add_argument("-f", "--foreground", action="store_true",
                        help="stay in the foreground (do not daemonize)")
    parser.add_argument("--debug", action="store_true", help="log at DEBUG level")
    gconfig.add_arguments(parser)
    return parser.parse_args(argv)


def split_options(raw: list[str]) -> dict[str, str | None]:
    """``-o`` groups as {key: value or None}, split at commas not escaped
    with a backslash (``fsname=http://a:5000\\,http://b:5000``); escapes are
    kept for libfuse, which removes them."""
    out: dict[str, str | None] = {}
    for group in raw:
        for opt in re.split(r"(?<!\\),", group):
            opt = opt.strip()
            if opt:
                key, _, value = opt.partition("=")
                out[key] = value if "=" in opt else None
    return out


def client_config(args: argparse.Namespace, opts: dict[str, str | None]) -> ClientConfig:
    cfg = gconfig.from_args(args).client
    try:
        urls = masters.parse(args.master_url)
    except ValueError as exc:
        raise gconfig.ConfigError(f"MASTER_URL: {exc}") from None
    changes: dict[str, object] = {"master_url": ",".join(urls)}
    for key in ("attr_timeout", "entry_timeout"):
        if opts.get(key) is not None:
            try:
                changes[key] = float(opts[key])  # type: ignore[arg-type]
            except ValueError:
                raise gconfig.ConfigError(f"-o {key}: not a number: {opts[key]!r}") from None
    if "debug" in opts or args.debug:
        changes["log_level"] = "DEBUG"
    for key in ("export", "password_file"):         # an export session (docs/security.md)
        if opts.get(key):
            changes[key] = os.path.abspath(opts[key]) if key == "password_file" \
                else opts[key]
    return dataclasses.replace(cfg, **changes)


def fuse_options(opts: dict[str, str | None]) -> set[str]:
    fuse_opts = set(pyfuse3.default_options)      # default_permissions
    fuse_opts.add("subtype=gfsfs")
    if "fsname" not in opts:            # mount.fuse.gfsfs passes fsname=MASTER_URL
        fuse_opts.add("fsname=gfsfs")
    if os.getuid() == 0 or "allow_other" in opts:
        fuse_opts.add("allow_other")
    for key, value in opts.items():
        if key in ("attr_timeout", "entry_timeout", "export", "password_file"):
            continue
        fuse_opts.add(key if value is None else f"{key}={value}")
    return fuse_opts


MOUNT_WAIT = 5.0     # seconds the mount waits for any master to answer at start


async def check_master(cfg: ClientConfig, read_only: bool = False,
                       secret: Secret | None = None,
                       tls: ssl.SSLContext | None = None) -> tuple[dict[str, object], str]:
    """The master's ``statfs`` (the protocol check), and ``cfg.master_url``
    with the master to start at first: the one that answered -- or, unless
    the mount is read-only (which may stay on a shadow), the primary it names.
    A shadow answers this too, so waiting here means no master answers at
    all: give up after :data:`MOUNT_WAIT` seconds, not ``failover_timeout``.
    An export session is opened here first, if we want one: its refusal
    stops the mount (``info["readonly"]``: the export is read-only)."""
    cfg = dataclasses.replace(cfg, failover_timeout=min(cfg.failover_timeout, MOUNT_WAIT))
    async with Client.open(cfg, secret, tls=tls,
                           session=session_wanted(cfg, secret)) as client:
        info = await client.statfs(find_primary=not read_only)
        if client.session is not None:
            info = {**info, "readonly": client.session.readonly,
                    "export": client.session.export}
        return info, client.masters.spec()


def daemonize() -> int:
    """Fork; the parent waits until the child reports the mount is up (exit 0)
    or failed (exit 1). Returns the write end of the pipe in the child."""
    rfd, wfd = os.pipe()
    if os.fork() > 0:
        os.close(wfd)
        with os.fdopen(rfd, "rb") as r:
            status = r.read(1)
        os._exit(0 if status == b"1" else 1)
    os.close(rfd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.chdir("/")
    return wfd


async def tune_readahead(mountpoint: str) -> None:
    """Raise the kernel read-ahead of this mount (root only, best effort)."""
    try:
        st = await trio.to_thread.run_sync(os.stat, mountpoint)
        path = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
        await trio.to_thread.run_sync(path.write_text, f"{READ_AHEAD_KB}\n")
        log.debug("set %s to %d", path, READ_AHEAD_KB)
    except OSError as exc:
        log.debug("could not raise read-ahead: %s", exc)


async def serve(cfg: ClientConfig, mountpoint: str, fuse_opts: set[str], read_only: bool,
                ready_fd: int | None, secret: Secret | None = None,
                tls: ssl.SSLContext | None = None) -> None:
    async with Client.open(cfg, secret, tls=tls, session=session_wanted(cfg, secret)) \
            as client, trio.open_nursery() as nursery:
        ops = Operations(client, cfg, read_only=read_only)
        log.debug("FUSE options: %s", sorted(fuse_opts))
        with fuse_ext.installed(nursery, ops.fallocate):
            pyfuse3.init(ops, mountpoint, fuse_opts)
        unmount_clean = False
        try:
            nursery.start_soon(watch_signals)
            nursery.start_soon(tune_readahead, mountpoint)
            if client.session is None:      # a rotated secret is read again
                nursery.start_soon(reload.watch_client, secret, client.http)
            log.info("mounted %s on %s", cfg.master_url, mountpoint)
            if ready_fd is not None:
                os.write(ready_fd, b"1")
                os.close(ready_fd)
            await pyfuse3.main(min_tasks=4, max_tasks=64)
            unmount_clean = True
        finally:
            nursery.cancel_scope.cancel()
            pyfuse3.close(unmount=True)
            log.info("unmounted %s%s", mountpoint, "" if unmount_clean else " after an error")


async def watch_signals() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("got %s, unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    opts = split_options(args.options)
    try:
        cfg = client_config(args, opts)
        secret = secrets.from_config(gconfig.from_args(args).cluster.secret_file)
        tls = gtls.client_context(gconfig.from_args(args).tls)   # before chdir("/")
    except (gconfig.ConfigError, secrets.SecretError) as exc:
        print(f"gfs-mount: {exc}", file=sys.stderr)
        return 2
    cfg = dataclasses.replace(cfg, log_dir=os.path.abspath(cfg.log_dir))  # we may chdir("/")
    logs.setup("client", cfg.log_dir, cfg.log_level, console=True)
    mountpoint = os.path.abspath(args.mountpoint)
    if not os.path.isdir(mountpoint):
        print(f"gfs-mount: {mountpoint} is not a directory", file=sys.stderr)
        return 1
    try:
        info, spec = trio.run(check_master, cfg, "ro" in opts, secret, tls)
    except SessionError as exc:
        print(f"gfs-mount: {exc}", file=sys.stderr)
        return 2
    except GFSError as exc:
        if exc.code == Code.PROTOCOL:       # logged: the console and the log file
            log.error("cannot mount: %s; upgrade the client or the master", exc.message)
        elif exc.code in (Code.EACCES, Code.EAGAIN, Code.ENOENT, Code.ENOTDIR):
            print(f"gfs-mount: cannot mount {cfg.export or '/'}: {exc.message}",
                  file=sys.stderr)
        else:
            print(f"gfs-mount: master {cfg.master_url} does not answer: {exc}", file=sys.stderr)
        return 1
    log.info("master %s: %s chunkds, chunk size %s", spec.split(",")[0],
             info.get("chunkds"), info.get("chunk_size"))
    cfg = dataclasses.replace(cfg, master_url=spec)
    if info.get("readonly") and "ro" not in opts:
        log.info("export %s is read-only: mounting read-only", info.get("export"))
        opts["ro"] = None
    with ExitStack() as stack:
        ready_fd = None if args.foreground else daemonize()
        if ready_fd is not None:
            stack.callback(lambda: _close_quietly(ready_fd))
            logs.setup("client", cfg.log_dir, cfg.log_level, console=False)
        try:
            trio.run(serve, cfg, mountpoint, fuse_options(opts), "ro" in opts, ready_fd, secret,
                     tls)
        except RuntimeError as exc:       # pyfuse3.init: mount failed
            log.error("mount failed: %s", exc)
            return 1
    return 0


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
