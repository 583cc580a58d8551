"""``gfs-master``: recover the namespace, serve RPCs, run the background loops.

Start-up: config -> logs -> op log recovery -> bind -> one readiness line on
stdout (``gfs-master listening on http://HOST:PORT``, https with ``[tls]``
cert). SIGINT/SIGTERM stop it
gracefully (the op log is already durable; no checkpoint needed) with exit 0.

A damaged op log (a bad record before the torn tail, a gap in sequence
numbers, a record that does not replay) stops start-up: the file and byte
offset go to stderr and the log, the files are left as they are, exit 1.
``--recover-log`` instead keeps a copy of the damaged file
(``oplog.N.damaged-<time>``; newer log files are set aside the same way), cuts
it at the damage -- every record from there is lost -- and starts.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from gfsfs.common import config, logs, rpc, tls
from gfsfs.common.httpserver import ListenError, run_reporting
from gfsfs.common.config import ConfigError, HAConfig, MasterConfig, TLSConfig, WebConfig
from gfsfs.common.auth.secret import SecretError
from gfsfs.common.auth.web import WebAuthError
from gfsfs.common.auth import reload
from gfsfs.common.auth.security import OPEN, Security

from master.chunks.registry import LivenessMonitor
from master.core import CheckpointLoop, Master
from master.chunks.leases import ChunkdCaller
from master.state.logread import LogDamage
from master.services.trash import TrashPurger
from master.services.replication import COPY_TIMEOUT, Replicator
from master.api.server import build_app
from master.exports.rules import ExportTable
from master.api import web, weblogin
from master.ha import failover
from master.ha.role import Role
from master.ha.service import HA

log = logging.getLogger("master")


@dataclass(frozen=True)
class TLS:
    """``[tls]`` as this master uses it: the contexts it serves and calls with."""
    server: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None
    scheme: str = "http"

    @classmethod
    def of(cls, cfg: TLSConfig) -> TLS:
        server, client = tls.contexts(cfg)
        return cls(server, client, tls.scheme(cfg))


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="gfs-master",
                                description="The gfsfs master: namespace, chunk map, leases.")
    config.add_arguments(p)
    p.add_argument("--host", help="address to listen on (master.host)")
    p.add_argument("--port", type=int, help="port to listen on, 0 = any free (master.port)")
    p.add_argument("--data-dir", help="op log and checkpoints (master.data_dir)")
    p.add_argument("--recover-log", action="store_true",
                   help="if the op log is damaged, keep a copy of the damaged file "
                        "(oplog.N.damaged-TIME), cut it at the damage (losing every record "
                        "from there) and start")
    args = p.parse_args(argv)
    extra = []
    if args.host is not None:
        extra.append(f"master.host={json.dumps(args.host)}")
    if args.port is not None:
        extra.append(f"master.port={args.port}")
    if args.data_dir is not None:
        extra.append(f"master.data_dir={json.dumps(args.data_dir)}")
    return args, extra


def main(argv: list[str] | None = None) -> int:
    args, extra = parse_args(argv)
    try:
        whole = config.from_args(args, extra)
        cfg, ha_cfg = whole.master, whole.ha
        security = Security.from_config(whole.cluster)
        weblogin.check_config(whole.web)        # a bad users or token file stops here
        exports = _exports(cfg, security)
        if cfg.role == "shadow" and not cfg.primary_url and not ha_cfg.etcd:
            raise ConfigError("[master] primary_url: a shadow needs its primary's URL "
                              "(or [ha] etcd, to learn it)")
        tls_use = TLS.of(whole.tls)
    except (ConfigError, SecretError, WebAuthError) as exc:
        print(f"gfs-master: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.setup("master", cfg.log_dir, cfg.log_level)
    try:
        _run_master(cfg, ha_cfg, args.recover_log, security, tls_use, whole.web, exports)
    except ListenError as exc:
        log.error("%s", exc)
        print(f"gfs-master: {exc}", file=sys.stderr)
        return 1
    except LogDamage as damage:
        log.critical("%s; not starting", damage)
        print(f"gfs-master: {damage}\n"
              "gfs-master: not starting; the files are unchanged. Restore the data dir from a "
              "backup, or run with --recover-log to keep a copy of the damaged file and cut "
              "the log there (every record from that offset on is lost).", file=sys.stderr)
        return 1
    return 0


def _exports(cfg: MasterConfig, security: Security) -> ExportTable | None:
    """The export rules of ``[master] exports_file`` (ConfigError if bad)."""
    if not cfg.exports_file:
        return None
    if not security.on:
        raise ConfigError("[master] exports_file: exports need the cluster secret "
                          "([cluster] secret_file): without it no session can be checked")
    return ExportTable(cfg.exports_file)


def _run_master(cfg: MasterConfig, ha_cfg: HAConfig, recover_log: bool,
                security: Security = OPEN, tls_use: TLS = TLS(),
                web_cfg: WebConfig | None = None,
                exports: ExportTable | None = None) -> None:
    result: list[tuple[str, int] | None] = []
    failure = run_reporting(lambda: result.append(trio.run(serve, cfg, recover_log, ha_cfg,
                                                           security, tls_use, web_cfg,
                                                           exports)))
    if failure is not None:
        raise failure
    if result and result[0] is not None:
        _restart_as_shadow(*result[0], learns=bool(ha_cfg.etcd))


def _restart_as_shadow(primary: str, port: int, learns: bool = False) -> None:
    """Exec this master again as a shadow of ``primary``: it starts from its
    own op log and, finding that it disagrees with the new primary's (records
    it logged that nobody else has), takes the primary's checkpoint."""
    if not primary and not learns:           # with etcd it asks etcd who leads
        log.critical("stepped down, but the new primary is unknown: stopping")
        return
    argv = [sys.executable, "-m", "master", *sys.argv[1:], "--port", str(port),
            "--set", 'master.role="shadow"', "--set", f"master.primary_url={json.dumps(primary)}"]
    log.warning("restarting as a shadow of %s", primary)
    logging.shutdown()
    os.execv(sys.executable, argv)


def make_caller(http: Any, timeout: float = 10.0) -> ChunkdCaller:
    async def caller(addr: str, name: str, body: dict[str, Any]) -> Any:
        return await rpc.call(http, addr, name, body, timeout=timeout)
    return caller


async def serve(cfg: MasterConfig, recover_log: bool = False,
                ha_cfg: HAConfig | None = None,
                security: Security = OPEN, tls_use: TLS = TLS(),
                web_cfg: WebConfig | None = None,
                exports: ExportTable | None = None) -> tuple[str, int] | None:
    """Serve until stopped; if this master stepped down, the new primary's URL
    and our port (``main`` then restarts it as that primary's shadow)."""
    # from our own address: a host with several (127.0.0.N in tests) is then
    # one host to its peers and to a firewall rule
    async with rpc.make_http(local_address=rpc.source_address_for(cfg.host),
                             secret=security.secret, tls=tls_use.client) as http:
        master = Master.open(cfg, make_caller(http), recover_log=recover_log)
        master.security = security
        master.web_cfg = web_cfg or WebConfig()
        master.exports = exports
        try:
            # a target answers `replicate` once it has the whole chunk
            replicator = Replicator(master, master.fenced(make_caller(http, COPY_TIMEOUT)))
            async with trio.open_nursery() as watcher:      # a rotated secret, read again
                watcher.start_soon(reload.watch_security, security, http)
                await _run(cfg, master, replicator, HA(master, http), ha_cfg, tls_use)
                watcher.cancel_scope.cancel()
        finally:
            master.close()
    log.info("master stopped")
    role = master.role
    return (role.primary_url, role.port) if role.demoted.is_set() else None


async def _run(cfg: MasterConfig, master: Master, replicator: Replicator | None = None,
               ha: HA | None = None, ha_cfg: HAConfig | None = None,
               tls_use: TLS = TLS()) -> None:
    shutdown = trio.Event()
    ha = ha or HA(master, None)
    app = build_app(master, ha)
    app.verifier = master.security.verifier()
    role = master.role
    election = None
    if ha_cfg is not None and ha_cfg.etcd:
        election = failover.election_for(ha_cfg, role.url, cfg.host)
        configured_primary = failover.start_as_candidate(ha, election)
    async with trio.open_nursery() as loops:
        loops.start_soon(_signals, shutdown)
        loops.start_soon(_step_down, role, shutdown)
        loops.start_soon(LivenessMonitor(master.registry).run_forever)
        loops.start_soon(CheckpointLoop(master).run_forever)
        # the primary's duties: a shadow starts them when it is promoted
        loops.start_soon(_when_primary, role, TrashPurger(master).run_forever)
        loops.start_soon(_when_primary, role, (replicator or Replicator(master)).run_forever)
        async with trio.open_nursery() as server:
            port = await server.start(functools.partial(
                rpc.serve_forever, web.wrap(app), cfg.host, cfg.port, shutdown,
                tls=tls_use.server))
            url = f"{tls_use.scheme}://{cfg.host}:{port}"
            role.url = cfg.advertise_url.rstrip("/") or url
            role.port = port
            loops.start_soon(ha.run)                # follows the primary while a shadow
            if election is not None:
                election.me = role.url
                loops.start_soon(failover.run, ha, election, configured_primary)
            # the page's data client
            loops.start_soon(web.run_client, app, cfg.host, port, tls_use.client,
                             tls_use.scheme)
            print(f"gfs-master listening on {url}", flush=True)
            log.info("listening on %s:%d as %s, %d inodes, %d chunks", cfg.host, port,
                     "primary" if role.primary else f"shadow of {role.primary_url}",
                     len(master.ns.inodes), len(master.ns.chunks))
        # serve_forever returned: shutdown was set
        loops.cancel_scope.cancel()


async def _when_primary(role: Role, loop: Callable[[], Awaitable[None]]) -> None:
    await role.promoted.wait()
    await loop()


async def _step_down(role: Role, shutdown: trio.Event) -> None:
    """Another master was promoted: stop serving (``main`` restarts as its shadow)."""
    await role.demoted.wait()
    shutdown.set()


async def _signals(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("signal %d: stopping", signum)
            shutdown.set()
            return


if __name__ == "__main__":
    sys.exit(main())
