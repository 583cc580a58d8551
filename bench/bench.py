#!/usr/bin/env python3
"""gfsfs benchmark: the same workloads on a gfsfs mount and on a local directory,
in the same run, printed with the ratio local_time / gfsfs_time (1.0 = as fast as
local, higher is better).

Workloads (sizes scale with --scale):
  seq-write   1 GiB written in 1 MiB writes, then fsync
  cold-read   that file read back after a remount and `echo 3 > drop_caches`
  cp-in/out   a 256 MiB file copied in with cp, then out
  create      2000 files of 4 KiB in 20 directories
  ls-lR       `ls -lR` of that tree
  rm-rf       `rm -rf` of that tree
  append      4 processes x 1000 records of 1 KiB, O_APPEND, one file

The cluster is a master and 3 chunkds (goal 3) on loopback in a temp dir on the
same disk as the local directory. Speed is measured here, never asserted.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gfsfs.tools.localcluster import Cluster, Mount

MIB = 1 << 20


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def drop_caches() -> None:
    subprocess.run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"  (could not drop caches: {exc})", file=sys.stderr)


def seq_write(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with open(path, "wb", buffering=0) as f:
        for _ in range(size // MIB):
            f.write(block)
        os.fsync(f.fileno())


def seq_read(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(MIB):
            pass


def make_tree(root: Path, files: int, dirs: int) -> None:
    data = os.urandom(4096)
    for d in range(dirs):
        sub = root / f"d{d:02}"
        sub.mkdir()
        for i in range(files // dirs):
            (sub / f"f{i:04}").write_bytes(data)


def append_records(path: Path, procs: int, records: int) -> None:
    code = ("import os,sys\n"
            "fd=os.open(sys.argv[1],os.O_WRONLY|os.O_APPEND|os.O_CREAT,0o644)\n"
            "rec=(sys.argv[2]*1024)[:1023].encode()+b'\\n'\n"
            f"for _ in range({records}): os.write(fd, rec)\n"
            "os.close(fd)\n")
    ps = [subprocess.Popen([sys.executable, "-c", code, str(path), chr(65 + i)])
          for i in range(procs)]
    for p in ps:
        assert p.wait() == 0


def run_suite(root: Path, remount: Callable[[], Path], scale: float, src: Path) -> dict[str, float]:
    """Times of every workload under ``root``; ``remount`` gives a cold root."""
    t: dict[str, float] = {}
    big = int(1024 * scale) * MIB
    t["seq-write"] = timed(lambda: seq_write(root / "big", big))
    root = remount()
    drop_caches()
    t["cold-read"] = timed(lambda: seq_read(root / "big"))
    (root / "big").unlink()
    t["cp-in"] = timed(lambda: subprocess.run(["cp", str(src), str(root / "cp")], check=True))
    out = Path(tempfile.mkdtemp())
    drop_caches()
    t["cp-out"] = timed(lambda: subprocess.run(["cp", str(root / "cp"), str(out / "cp")],
                                                check=True))
    shutil.rmtree(out)
    (root / "cp").unlink()
    tree = root / "tree"
    tree.mkdir()
    t["create"] = timed(lambda: make_tree(tree, int(2000 * scale) or 20, 20))
    root = remount()
    tree = root / "tree"
    t["ls-lR"] = timed(lambda: subprocess.run(["ls", "-lR", str(tree)], check=True,
                                               stdout=subprocess.DEVNULL))
    t["rm-rf"] = timed(lambda: subprocess.run(["rm", "-rf", str(tree)], check=True))
    t["append"] = timed(lambda: append_records(root / "log", 4, int(1000 * scale) or 10))
    size = (root / "log").stat().st_size
    assert size == 4 * (int(1000 * scale) or 10) * 1024, size
    return t


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="size factor (0.1 for a quick run)")
    p.add_argument("--dir", default=None, help="where the local dir and the cluster live")
    args = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="gfsbench-", dir=args.dir))
    local = base / "local"
    local.mkdir()
    src = base / "src"
    seq_write(src, int(256 * args.scale) * MIB)
    cluster = Cluster(base / "cluster", 3)
    mnt = base / "mnt"
    mount = Mount("", mnt, base / "cluster" / "logs" / "mount.out")
    try:
        print(f"# gfsfs bench, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
              f"{os.cpu_count()} cores, scale {args.scale}", flush=True)
        t_local = run_suite(local, lambda: local, args.scale, src)
        cluster.start()
        mount.master_url = cluster.url
        mount.start()

        def remount() -> Path:
            mount.stop()
            mount.start()
            return mnt

        t_gfs = run_suite(mnt, remount, args.scale, src)
    finally:
        mount.stop()
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    sizes = {"seq-write": 1024, "cold-read": 1024, "cp-in": 256, "cp-out": 256}
    print(f"{'workload':<10} {'local s':>9} {'gfsfs s':>9} {'ratio':>7}  {'gfsfs MiB/s':>11}")
    for name in t_local:
        mb = sizes.get(name)
        rate = f"{mb * args.scale / t_gfs[name]:11.1f}" if mb else ""
        print(f"{name:<10} {t_local[name]:9.3f} {t_gfs[name]:9.3f} "
              f"{t_local[name] / t_gfs[name]:7.3f}  {rate}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
