#!/usr/bin/env python3
"""The cost of authentication (issue 14, docs/security.md): the workloads of
bench/failover.py -- create FILES files of 4 KiB in 10 directories then sync,
mkdir FILES directories, write 256 MiB in 1 MiB writes then fsync, and read
it back cold -- on a local directory, on a mount of an open cluster and on a
mount of a secured one (cluster secret: every request signed, chunk tokens
at the chunkds) and on a mount of the secured one through an export session
(no secret: a session's ticket signs, the export guard checks every request),
ROUNDS rounds interleaved. Printed: seconds (median) and the ratios
open/secured and open/export (1.0 = free). Measured, never asserted.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from failover import create, mkdirs, timed, write   # noqa: E402
from gfsfs.tools.localcluster import Cluster, Mount        # noqa: E402

SETTINGS = ["master.heartbeat_interval=0.5", "chunk_server.heartbeat_interval=0.5"]


def read_cold(root: Path) -> None:
    fd = os.open(root / "big", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while os.read(fd, 1 << 20):
            pass
    finally:
        os.close(fd)


def suite(root: Path, files: int) -> dict[str, float]:
    return {"create": timed(lambda: create(root, files)),
            "mkdir": timed(lambda: mkdirs(root, files)),
            "write": timed(lambda: write(root, 256 << 20)),
            "read": timed(lambda: read_cold(root))}


def on_cluster(base: Path, secure: bool, files: int, export: bool = False) -> dict[str, float]:
    extra = list(SETTINGS)
    options = []
    if export:
        rules = base / "exports.toml"
        rules.write_text('[[export]]\nname = "bench"\nfrom = "127.0.0.1"\npath = "/"\n')
        extra.append(f"master.exports_file={str(rules)!r}")
    c = Cluster(base, 3, extra=extra, secure=secure)
    if not export:
        options = c.secret_sets()
    m = Mount("", base / "mnt", base / "logs" / "mount.out", options=options)
    try:
        c.start()
        m.master_url = c.url
        m.start()
        return suite(m.mountpoint, files)
    finally:
        m.stop()
        c.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"local": [], "open": [], "secured": [],
                                               "export": []}
    with tempfile.TemporaryDirectory(prefix="gfs-bench-auth-", dir=Path.cwd()) as tmp:
        for r in range(args.rounds):
            for name in runs:
                base = Path(tmp) / f"{name}{r}"
                base.mkdir()
                if name == "local":
                    runs[name].append(suite(base, args.files))
                else:
                    runs[name].append(on_cluster(base, name != "open", args.files,
                                                 export=name == "export"))
                shutil.rmtree(base, ignore_errors=True)
    print(f"auth cost: {args.files} files, 256 MiB, {args.rounds} rounds interleaved (medians, s)")
    print(f"{'workload':10} {'local':>8} {'open':>8} {'secured':>8} {'export':>8} "
          f"{'open/secured':>13} {'open/export':>12}")
    for work in ("create", "mkdir", "write", "read"):
        med = {n: statistics.median(x[work] for x in runs[n]) for n in runs}
        print(f"{work:10} {med['local']:8.3f} {med['open']:8.3f} {med['secured']:8.3f} "
              f"{med['export']:8.3f} {med['open'] / med['secured']:13.2f} "
              f"{med['open'] / med['export']:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
