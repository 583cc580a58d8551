"""``gfs-chunkd`` / ``python -m chunkd``: start one chunk server.

The server keeps its chunks, a ``server_info`` file (id, host, port, the
masters: ``master_url`` as configured, ``master_urls`` the list) and an
``epoch`` file (the highest master epoch seen: :mod:`chunkd.services.fence`)
in ``<data_dir>/<id>/``. It registers and heartbeats with every master of
``[chunk_server] master_url`` (comma-separated), one independent loop each
(:mod:`chunkd.services.heartbeat`). With no ``--id`` a fresh id is made up. A restart with
the same id and no ``--port`` (or ``--port 0``) binds the port it had before, so
it comes back as the same server with its chunks; port 0 otherwise means "pick
a free one". Prints one line ``gfs-chunkd ID listening on http://HOST:PORT``
(https with ``[tls]`` cert: the address it registers) once it serves; SIGINT/SIGTERM stop it cleanly (exit 0); a bad configuration
exits 2 with the reason on stderr.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import trio

from gfsfs.common.auth.secret import SecretError
from gfsfs.common.auth import reload
from gfsfs.common.auth.security import OPEN, Security
from gfsfs.common import logs, tls
from gfsfs.common.config import ChunkServerConfig, ConfigError, add_arguments, from_args
from gfsfs.common.httpserver import run_reporting
from gfsfs.common.rpc import make_http, serve_forever, source_address_for
from gfsfs.common.errors import GFSError
from gfsfs.common.validate import SERVER_ID, check_addr

from chunkd.services import fence as fencing
from chunkd.services.fence import Fence
from chunkd.services.heartbeat import ChunkReports, Heartbeat
from chunkd.storage.scrub import Scrubber
from chunkd.api.server import ChunkServer
from chunkd.api.shortcircuit import ShortCircuitServer
from chunkd.storage.diskstore import DiskChunkStore

log = logging.getLogger("chunkd")



def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gfs-chunkd", description="gfsfs chunk server")
    add_arguments(parser)
    parser.add_argument("--id", help="server id (default: a new one, cs-XXXXXXXX)")
    parser.add_argument("--host", help="address to listen on and register [chunk_server.host]")
    parser.add_argument("--port", type=int,
                        help="port; 0 or absent = the one this id had, else a free one")
    parser.add_argument("--data-dir", help="chunks live in DATA_DIR/<id>/ [chunk_server.data_dir]")
    parser.add_argument("--master", metavar="URL[,URL...]",
                        help="the master(s), comma-separated [chunk_server.master_url]")
    parser.add_argument("--rack", help="rack label for placement [chunk_server.rack]")
    return parser.parse_args(argv)


def overrides(args: argparse.Namespace) -> list[str]:
    """The flags as ``chunk_server.KEY=VALUE`` config overrides."""
    out: list[str] = []
    for flag, key in (("host", "host"), ("data_dir", "data_dir"), ("master", "master_url"),
                      ("rack", "rack")):
        value = getattr(args, flag)
        if value is not None:
            out.append(f"chunk_server.{key}={json.dumps(value)}")
    if args.port is not None:
        out.append(f"chunk_server.port={args.port}")
    return out


def server_id(args: argparse.Namespace) -> str:
    sid = args.id if args.id is not None else f"cs-{secrets.token_hex(4)}"
    if not SERVER_ID.fullmatch(sid):
        raise ConfigError(f"--id {sid!r}: 1-64 of letters, digits, '.', '_', '-' expected")
    return sid


def master_urls(text: str) -> list[str]:
    """``[chunk_server] master_url``: one URL or several, comma-separated
    (each ``http://host:port``; duplicates and a trailing "/" dropped)."""
    urls: list[str] = []
    for part in text.split(","):
        url = part.strip().rstrip("/")
        if not url:
            continue
        try:
            check_addr(url, "[chunk_server] master_url:")
        except GFSError as exc:
            raise ConfigError(exc.message) from None
        if url not in urls:
            urls.append(url)
    if not urls:
        raise ConfigError("[chunk_server] master_url: no master URL given")
    return urls


def load_server_info(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable server_info: {exc}") from None
    return info if isinstance(info, dict) else {}


def save_server_info(path: Path, info: dict[str, Any]) -> None:
    """Written to a temp file, fsync'd and renamed: never half written."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def choose_port(cfg: ChunkServerConfig, info: dict[str, Any]) -> int:
    """The configured port, else the persisted one if still free, else 0."""
    if cfg.port:
        return cfg.port
    old = info.get("port")
    if isinstance(old, int) and 0 < old < 65536 and _port_free(cfg.host, old):
        return old
    if old:
        log.warning("port %s of this server is taken; picking a new one", old)
    return 0


def _port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def run(cfg: ChunkServerConfig, sid: str, server_dir: Path, port: int,
              urls: list[str], fence: Fence, security: Security = OPEN,
              tls_use: tuple[ssl.SSLContext | None, ssl.SSLContext | None] = (None, None)
              ) -> None:
    """Serve until SIGINT/SIGTERM, talking to the masters at ``urls``;
    ``tls_use``: the (server, client) contexts of ``[tls]``."""
    server_tls, client_tls = tls_use
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        store = DiskChunkStore(server_dir, cfg.capacity_bytes, cfg.reserve_bytes)
        await store.open()
        # connections to the master and to other chunkds leave from our own
        # address, so the rest of the cluster sees this chunkd as one host
        async with make_http(local_address=source_address_for(cfg.host),
                             secret=security.secret, tls=client_tls) as http:
            reports = ChunkReports()
            server = ChunkServer(store, cfg, http, sid, reports=reports, fence=fence)
            server.app.verifier = security.verifier()
            server.tokens = security.tokens()
            shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(functools.partial(
                    serve_forever, server.app, cfg.host, port, shutdown, tls=server_tls))
                scheme = "http" if server_tls is None else "https"
                server.addr = f"{scheme}://{url_host(cfg.host)}:{bound}"
                save_server_info(server_dir / cfg.server_info_file,
                                 {"id": sid, "host": cfg.host, "port": bound,
                                  "master_url": cfg.master_url, "master_urls": urls,
                                  "rack": cfg.rack})
                print(f"gfs-chunkd {sid} listening on {server.addr}", flush=True)
                log.info("chunkd %s serving %s from %s; masters %s, epoch %d", sid, server.addr,
                         server_dir, ", ".join(urls), fence.epoch)
                server.masters = [
                    Heartbeat(server_id=sid, addr=server.addr, rack=cfg.rack, store=store,
                              http=http, master_url=url, interval=cfg.heartbeat_interval,
                              reports=reports, fence=fence) for url in urls]
                async with trio.open_nursery() as background:
                    await _background(background, server, cfg, sid)
                    background.start_soon(reload.watch_security, security, http)
                    async for signum in signals:
                        log.info("chunkd %s: signal %d, stopping", sid, signum)
                        break
                    background.cancel_scope.cancel()
                shutdown.set()


async def _background(nursery: trio.Nursery, server: ChunkServer, cfg: ChunkServerConfig,
                      sid: str) -> None:
    """The short-circuit socket, one heartbeat loop per master, the push
    buffers' expiry and the scrubber."""
    if cfg.short_circuit:
        local = ShortCircuitServer(server.store, sid, server.tokens)
        server.local_opens = lambda: local.opens
        await nursery.start(local.serve, server.addr)
    for heartbeat in server.masters:
        nursery.start_soon(heartbeat.run_forever)
    nursery.start_soon(server.buffers.run_expiry)
    nursery.start_soon(Scrubber(server.store, server.replicas.corrupt,
                                cfg.scrub_bytes_per_sec).run_forever)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        whole = from_args(args, overrides(args))
        cfg = whole.chunk_server
        security = Security.from_config(whole.cluster)
        sid = server_id(args)
        server_dir = Path(cfg.data_dir) / sid
        server_dir.mkdir(parents=True, exist_ok=True)
        info = load_server_info(server_dir / cfg.server_info_file)
        urls = master_urls(cfg.master_url)
        fence = Fence.load(server_dir / fencing.FILE)
        tls_use = tls.contexts(whole.tls)
    except (ConfigError, SecretError) as exc:
        print(f"gfs-chunkd: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gfs-chunkd: {exc}", file=sys.stderr)
        return 2
    logs.setup("chunk_server", cfg.log_dir, cfg.log_level)
    port = choose_port(cfg, info)
    try:
        failure = run_reporting(lambda: trio.run(run, cfg, sid, server_dir, port, urls,
                                                 fence, security, tls_use))
    except KeyboardInterrupt:
        return 0
    if failure is not None:
        log.error("%s", failure)
        print(f"gfs-chunkd: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
