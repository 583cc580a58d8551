#!/usr/bin/env python3
"""gfsfs failover benchmark (docs/ha.md), two parts in one run:

1. The cost of synchronous op-log shipping: the same workloads on a local
   directory, on a mount of a cluster with one master, and on a mount of a
   cluster whose master has one synchronous shadow (sync_shadows = 1):
     create   FILES files of 4 KiB in 10 directories (open/write/close), then sync
     mkdir    FILES directories
     write    256 MiB in 1 MiB writes, then fsync
   printed with the ratio (no shadow / with shadow; 1.0 = shipping is free).
2. Failover through a real etcd (failover_seconds = FAILOVER): a mount given
   both masters creates files in a loop; the primary is killed with SIGKILL;
   printed: seconds from the kill to the first create that succeeded after
   it, the creates acknowledged before the kill that are missing afterwards
   (must be 0), over ROUNDS rounds.

Everything runs on loopback in a temp dir on the same disk as the local
directory; the masters have their own 127.0.0.N. Measured, never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gfsfs.tools.etcd import Etcd, free_port
from gfsfs.tools.localcluster import Cluster, Daemon, Mount, python

MIB = 1 << 20
SETTINGS = ["master.heartbeat_interval=0.5", "chunk_server.heartbeat_interval=0.5",
            "master.shadow_timeout=2.0"]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def create(root: Path, files: int) -> None:
    data = os.urandom(4096)
    for i in range(files):
        sub = root / f"c{i % 10}"
        sub.mkdir(exist_ok=True)
        with open(sub / f"f{i}", "wb") as f:
            f.write(data)
    os.sync()


def mkdirs(root: Path, files: int) -> None:
    for i in range(files):
        (root / f"m{i}").mkdir()


def write(root: Path, size: int) -> None:
    block = os.urandom(MIB)
    with open(root / "big", "wb", buffering=0) as f:
        for _ in range(size // MIB):
            f.write(block)
        os.fsync(f.fileno())


def suite(root: Path, files: int) -> dict[str, float]:
    return {"create": timed(lambda: create(root, files)),
            "mkdir": timed(lambda: mkdirs(root, files)),
            "write": timed(lambda: write(root, 256 * MIB))}


def master_daemon(base: Path, name: str, host: str, port: int, sets: list[str]) -> Daemon:
    argv = [python(), "-m", "master", "--host", host, "--port", str(port),
            "--data-dir", str(base / "data" / name),
            "--set", f"master.log_dir={str(base / 'logs')!r}"]
    for s in SETTINGS + sets:
        argv += ["--set", s]
    return Daemon(name, argv, base / "logs" / f"{name}.out")


def with_cluster(base: Path, shadow: bool, run: Callable[[Path], dict[str, float]]
                 ) -> dict[str, float]:
    """A master on 127.0.0.2 (and a synchronous shadow on 127.0.0.3), 3 chunkds."""
    sport = free_port("127.0.0.3")
    shadow_url = f"http://127.0.0.3:{sport}"
    cluster = Cluster(base, 3, host="127.0.0.2", extra=SETTINGS,
                      also_masters=[shadow_url] if shadow else [])
    mount = Mount("", base / "mnt", base / "logs" / "mount.out")
    sd = None
    try:
        cluster.start_master()
        if shadow:
            sd = master_daemon(base, "shadow", "127.0.0.3", sport,
                               ['master.role="shadow"',
                                f"master.primary_url={json.dumps(cluster.url)}"])
            sd.start()
        for i in range(3):
            cluster.add_chunkd(i)
        mount.master_url = cluster.url
        mount.start()
        return run(mount.mountpoint)
    finally:
        mount.stop()
        cluster.stop()
        if sd is not None:
            sd.stop()


def failover_round(base: Path, failover: float) -> tuple[float, int, int]:
    """(seconds from kill -9 to the next successful create, acknowledged
    creates lost, creates acknowledged before the kill)."""
    etcd = Etcd(base)
    ports = [free_port("127.0.0.2"), free_port("127.0.0.3")]
    urls = [f"http://127.0.0.2:{ports[0]}", f"http://127.0.0.3:{ports[1]}"]
    sets = [f"ha.failover_seconds={failover}"]
    masters: list[Daemon] = []
    cluster = None
    mount = None
    try:
        etcd.start()
        sets.append(f"ha.etcd={json.dumps(etcd.url)}")
        masters = [master_daemon(base, "a", "127.0.0.2", ports[0], sets + ['master.role="primary"']),
                   master_daemon(base, "b", "127.0.0.3", ports[1], sets + ['master.role="shadow"'])]
        for d in masters:
            d.start()
        cluster = Cluster(base, 3, host="127.0.0.1", extra=SETTINGS)
        cluster.master = masters[0]
        cluster.also_masters = urls[1:]
        wait_primary(urls[0])
        for i in range(3):
            cluster.add_chunkd(i)
        mount = Mount(",".join(urls), base / "mnt", base / "logs" / "mount.out",
                      options=["--set", "client.failover_timeout=60"])
        mount.start()
        return kill_during_creates(mount.mountpoint, masters[0])
    finally:
        if mount is not None:
            mount.stop()
        if cluster is not None:
            for d in cluster.servers:
                d.stop()
        for d in masters:
            d.signal(signal.SIGCONT)
            d.stop()
        etcd.stop()


def wait_primary(url: str, timeout: float = 30.0) -> None:
    import httpx
    import msgpack
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            r = httpx.post(f"{url}/rpc/ha_status", content=msgpack.packb({}), timeout=2)
            if msgpack.unpackb(r.content).get("primary"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} was not elected in {timeout}s")


def kill_during_creates(mnt: Path, primary: Daemon) -> tuple[float, int, int]:
    done: list[tuple[float, str]] = []
    stop = threading.Event()

    def loop() -> None:
        i = 0
        while not stop.is_set():
            name = f"f{i}"
            (mnt / name).write_bytes(b"x" * 100)
            done.append((time.monotonic(), name))
            i += 1
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    time.sleep(2.0)
    before = len(done)
    killed = time.monotonic()
    primary.kill()
    while not any(ts > killed for ts, _n in done) and time.monotonic() - killed < 120:
        time.sleep(0.01)
    first = next((ts for ts, _n in done if ts > killed), float("nan"))
    time.sleep(0.5)
    stop.set()
    t.join(30)
    present = set(os.listdir(mnt))
    lost = sum(1 for _ts, n in done[:before] if n not in present)
    return first - killed, lost, before


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--failover", type=float, default=5.0, help="[ha] failover_seconds")
    p.add_argument("--dir", default=None)
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="gfsbench-ha-", dir=args.dir))
    try:
        print(f"# gfsfs failover bench, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{os.cpu_count()} cores, {args.files} files", flush=True)
        (base / "local").mkdir()
        t_local = suite(base / "local", args.files)
        t_one = with_cluster(base / "one", False, lambda m: suite(m, args.files))
        t_sync = with_cluster(base / "sync", True, lambda m: suite(m, args.files))
        print(f"{'workload':<8} {'local s':>8} {'1 master':>9} {'+shadow':>9} "
              f"{'ratio':>6}  (1 master / with a synchronous shadow)")
        for k in t_local:
            print(f"{k:<8} {t_local[k]:8.3f} {t_one[k]:9.3f} {t_sync[k]:9.3f} "
                  f"{t_one[k] / t_sync[k]:6.2f}")
        for r in range(args.rounds):
            took, lost, before = failover_round(base / f"failover{r}", args.failover)
            print(f"failover round {r + 1}: first create {took:.2f} s after kill -9 of the "
                  f"primary (failover_seconds {args.failover:g}); {lost} of {before} "
                  "acknowledged creates lost", flush=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
