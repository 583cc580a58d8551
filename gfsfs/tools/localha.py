"""``make run-ha``: a local HA cluster mounted at ./mnt -- etcd, a primary
master and two shadows (automatic failover through etcd), three chunkds that
register with all three masters, and a mount that follows the primary.

Ports: masters 5000, 5010, 5020; chunkds 5001-5003; etcd on two free ports.
Every process but etcd is restarted when it dies (as ``make run``);
``kill -9 $(cat logs/master.pid)`` and watch a shadow take over (``gfs ha``).
Ctrl-C unmounts and stops everything.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from gfsfs.tools.etcd import Etcd
from gfsfs.tools.localcluster import (ROOT, Cluster, Daemon, GiveUp, Mount, Policy,
                                      Supervisor, python, say, url_scheme)

HA_SETTINGS = ["ha.failover_seconds=5.0", "master.shadow_timeout=2.0"]


def shadow_master(cluster: Cluster, i: int, port: int) -> Daemon:
    """Shadow ``i`` (2, 3) of ``cluster``'s master, with its own data dir and port."""
    argv = [python(), "-m", "master", "--host", cluster.host, "--port", str(port),
            "--data-dir", str(cluster.data / f"master-{i}"),
            "--set", f"master.log_dir={str(cluster.logs)!r}",
            "--set", 'master.role="shadow"'] + cluster.sets()
    return Daemon(f"master-{i}", argv, cluster.logs / f"master-{i}.out")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", default=str(ROOT), help="directory holding data/ and logs/")
    p.add_argument("--mountpoint", default=str(ROOT / "mnt"))
    p.add_argument("--master-ports", default="5000,5010,5020",
                   help="the primary's port, then the shadows' (default %(default)s)")
    p.add_argument("--chunk-base-port", type=int, default=5001)
    p.add_argument("--insecure", action="store_true",
                   help="no cluster secret: anyone who reaches the ports may do anything")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(args.base).resolve()
    ports = [int(x) for x in args.master_ports.split(",")]
    host = "127.0.0.1"
    scheme = url_scheme()       # https when configs/config.toml has a [tls] cert
    urls = [f"{scheme}://{host}:{port}" for port in ports]
    etcd = Etcd(base)
    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    cluster = mount = None
    shadows: list[Daemon] = []
    try:
        etcd.start()
        extra = HA_SETTINGS + [f"ha.etcd={json.dumps(etcd.url)}"]
        cluster = Cluster(base, 3, host=host, master_port=ports[0], extra=extra,
                          chunk_ports=[args.chunk_base_port + i for i in range(3)],
                          also_masters=urls[1:], secure=not args.insecure)
        cluster.start_master()
        shadows = [shadow_master(cluster, i + 2, port) for i, port in enumerate(ports[1:])]
        for d in shadows:
            d.start()
        for i in range(3):
            cluster.add_chunkd(i)
        mount = Mount(",".join(urls), Path(args.mountpoint).resolve(), cluster.logs / "mount.out",
                      options=cluster.secret_sets())
        mount.start()
        sup = Supervisor(cluster, mount, Policy(), lambda: stop["now"] or not etcd.alive(),
                         cluster.logs, more=shadows)
        say(f"gfsfs: etcd {etcd.url}; masters {', '.join(urls)} (the first is primary, "
            f"failover through etcd); 3 chunkds; data in {cluster.data}, logs in {cluster.logs}")
        say(f"gfsfs: mounted at {mount.mountpoint}; `gfs --master {','.join(urls)} ha` shows "
            "who is primary; Ctrl-C unmounts and stops everything.")
        sup.run()
        if not etcd.alive():
            say(f"gfsfs: etcd died; see {etcd.logfile}", err=True)
            return 1
        return 0
    except GiveUp as e:
        say(f"gfsfs: GIVING UP: {e}; see {base / 'logs'}", err=True)
        return 1
    finally:
        say("gfsfs: unmounting and stopping...")
        if mount is not None:
            mount.stop()
        if cluster is not None:
            for d in cluster.servers:
                d.stop()
        for d in shadows:
            d.stop()
        if cluster is not None and cluster.master is not None:
            cluster.master.stop()
        etcd.stop()
        say("gfsfs: stopped.")


if __name__ == "__main__":
    sys.exit(main())
