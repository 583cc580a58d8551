#!/usr/bin/env python3
"""Master scale: RSS per file, checkpoint write/load time, start-up, and the
worst getattr stall while a checkpoint is written.

Workload: ``--files`` files (default 1,000,000) in directories of
``--per-dir`` (default 1000) under one top directory, each file a regular
file with one chunk: per file one ``records.create`` and one
``records.add_chunk`` record applied with ``Namespace.apply`` -- what the op
log replay does -- in a fresh process (RSS read from /proc/self/statm, after
``gc.collect``). Names are ``f<i>`` (7-8 bytes), uid/gid 1000, mode 0644.

Then, in a ``master.core.Master`` on a temp data dir holding that namespace:

1. checkpoint write (``Master.checkpoint``: the op log call the checkpoint
   loop makes), while a trio task calls the getattr RPC's handler every 1 ms
   and another stages a create every 5 ms: the worst gap between getattrs
   (minus the 1 ms sleep) is the stall;
2. checkpoint load (``logread.read_checkpoint`` + ``image.from_state``);
3. start-up: ``Master.open`` of the data dir after ``--tail`` more records
   (create + add_chunk pairs) were logged after the checkpoint.

Local baseline printed beside the RSS: a dict of N plain tuples of 11 small
ints (what one inode's numbers are), measured in its own process.
Printed, never asserted.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gfsfs.common.config import MasterConfig  # noqa: E402
from master.core import Master  # noqa: E402
from master.state import image, records  # noqa: E402
from master.state.logread import numbered, CKPT_PREFIX, read_checkpoint  # noqa: E402
from master.state.namespace import ROOT_INO, Namespace  # noqa: E402

CHUNK = 64 << 20
NOW = 1_700_000_000_000_000_000


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def build(ns: Namespace, files: int, per_dir: int, start: int = 0) -> None:
    """``files`` files with one chunk each, through ``Namespace.apply``."""
    top = ns.child(ROOT_INO, b"top")
    if top is None:
        ns.apply(records.mkdir(ROOT_INO, b"top", 0o755, 0, 0, ns.next_ino, now=NOW))
        top = ns.child(ROOT_INO, b"top")
    assert top is not None
    d = 0
    for i in range(start, start + files):
        if i % per_dir == 0 or d == 0:
            name = b"d%d" % (i // per_dir)
            found = ns.child(top.ino, name)
            if found is None:
                ns.apply(records.mkdir(top.ino, name, 0o755, 1000, 1000, ns.next_ino,
                                       now=NOW + i))
                found = ns.child(top.ino, name)
            assert found is not None
            d = found.ino
        ino = ns.next_ino
        ns.apply(records.create(d, b"f%d" % i, stat.S_IFREG | 0o644, 1000, 1000, 0, ino,
                                now=NOW + i))
        ns.apply(records.add_chunk(ino, 0, ns.next_handle, 1))


def measure_memory(files: int, per_dir: int) -> dict[str, Any]:
    before = rss()
    ns = Namespace(CHUNK)
    t0 = time.perf_counter()
    build(ns, files, per_dir)
    took = time.perf_counter() - t0
    used = rss() - before
    return {"files": files, "bytes": used, "per_file": used / files, "build_s": took}


def measure_tuples(files: int) -> dict[str, Any]:
    before = rss()
    d = {i: (i, 0o100644, 1000, 1000, 1, NOW + i, NOW + i, NOW + i, 0, 3, i)
         for i in range(files)}
    used = rss() - before
    assert len(d) == files
    return {"bytes": used, "per_file": used / files}


def in_child(what: str, files: int, per_dir: int, tail: int = 0) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", what, "--files", str(files),
                          "--per-dir", str(per_dir), "--tail", str(tail)], check=True, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__)
                                                                         .parent.parent)})
    return json.loads(out.stdout.strip().splitlines()[-1])


async def no_chunkd(addr: str, name: str, body: dict[str, Any]) -> Any:
    raise RuntimeError("no chunkd in this bench")


async def checkpoint_with_load(m: Master) -> dict[str, float]:
    """Checkpoint time and the worst getattr stall while it runs, with a
    trickle of creates staged meanwhile."""
    top = m.ns.child(ROOT_INO, b"top")
    assert top is not None
    probe = next(iter(m.ns.inodes))
    worst, count = 0.0, 0
    done = False

    async def getattrs() -> None:
        nonlocal worst, count
        last = time.perf_counter()
        while not done:
            m.ns.attr(m.ns.get(probe))
            count += 1
            await trio.sleep(0.001)
            now = time.perf_counter()
            worst = max(worst, now - last - 0.001)
            last = now

    async def creates() -> None:
        i = 0
        while not done:
            m.stage(records.create(top.ino, b"during%d" % i, stat.S_IFREG | 0o644, 0, 0, 0,
                                   m.ns.next_ino))
            i += 1
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(getattrs)
        nursery.start_soon(creates)
        await trio.sleep(0.2)
        t0 = time.perf_counter()
        await m.checkpoint()
        took = time.perf_counter() - t0
        done = True
    await m.oplog.commit(m.oplog.last_seq)
    return {"write_s": took, "stall_ms": worst * 1000, "getattrs": count}


def bench_checkpoint(files: int, per_dir: int, tail: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="gfs-master-scale-"))
    try:
        cfg = MasterConfig(chunk_size=CHUNK, data_dir=str(tmp))
        m = Master.open(cfg, no_chunkd, tmp)
        ns = Namespace(CHUNK, cfg.replication_factor)
        ns.apply(records.init(now=NOW))
        build(ns, files, per_dir)
        m.ns.replace(ns)
        out = trio.run(checkpoint_with_load, m)
        path = numbered(tmp, CKPT_PREFIX)[-1][1]
        out["ckpt_bytes"] = path.stat().st_size
        t0 = time.perf_counter()
        _seq, state = read_checkpoint(path)
        image.from_state(state, cfg.replication_factor)
        out["load_s"] = time.perf_counter() - t0
        del state
        recs: list[dict[str, Any]] = []
        apply = m.ns.apply
        m.ns.apply = lambda rec: (recs.append(rec), apply(rec))[1]  # type: ignore[method-assign]
        build(m.ns, tail // 2, per_dir, start=files + 10 * per_dir)
        for rec in recs:
            m.oplog.append(rec)
        m.oplog.flush_sync()
        m.close()
        out["tail_records"] = len(recs)
        del m, ns, recs
        gc.collect()
        t0 = time.perf_counter()
        again = Master.open(cfg, no_chunkd, tmp)
        out["startup_s"] = time.perf_counter() - t0
        again.close()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1_000_000)
    p.add_argument("--per-dir", type=int, default=1000)
    p.add_argument("--tail", type=int, default=50_000, help="records replayed at start-up")
    p.add_argument("--child", choices=["memory", "tuples", "checkpoint"])
    p.add_argument("--skip-checkpoint", action="store_true")
    args = p.parse_args()
    if args.child == "memory":
        print(json.dumps(measure_memory(args.files, args.per_dir)))
        return
    if args.child == "tuples":
        print(json.dumps(measure_tuples(args.files)))
        return
    if args.child == "checkpoint":
        print(json.dumps(bench_checkpoint(args.files, args.per_dir, args.tail)))
        return
    mem = in_child("memory", args.files, args.per_dir)
    base = in_child("tuples", args.files, args.per_dir)
    print(f"workload: {args.files:,} files (one chunk each) in directories of "
          f"{args.per_dir}, built with Namespace.apply(create, add_chunk)")
    print(f"master RSS  {mem['per_file']:8.0f} B/file  ({mem['bytes'] / 2**20:.0f} MiB, "
          f"built in {mem['build_s']:.1f} s)")
    print(f"baseline    {base['per_file']:8.0f} B/file  (a dict of {args.files:,} tuples "
          f"of 11 ints)")
    if args.skip_checkpoint:
        return
    ck = in_child("checkpoint", args.files, args.per_dir, args.tail)
    print(f"checkpoint  write {ck['write_s']:.2f} s ({ck['ckpt_bytes'] / 2**20:.0f} MiB), "
          f"load {ck['load_s']:.2f} s")
    print(f"getattr     worst stall {ck['stall_ms']:.1f} ms during the checkpoint "
          f"({ck['getattrs']} getattrs, creates staged every 5 ms)")
    print(f"start-up    {ck['startup_s']:.2f} s (Master.open: checkpoint + "
          f"{ck['tail_records']:,} records replayed)")


if __name__ == "__main__":
    main()
