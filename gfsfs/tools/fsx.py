"""A file-system exerciser in the spirit of fsx (Avie Tevanian, Conrad Minshall;
the one xfstests still runs): seeded random operations on one file (and a
second file as the source of copies), each read compared with an in-memory
model of the bytes the file must hold.

Operations: write, read, truncate up and down, mmap store (with and without
msync) and mmap load, fallocate (allocate, keep-size, punch hole, zero range),
copy_file_range from the second file and within the file, fsync, close and
reopen, dropping the page cache, reading the whole file through a second mount
after a close (close-to-open), and remounting (through a callback).

A mismatch raises :class:`Mismatch`, whose text gives the seed, the op number,
the first bad offset and the last 50 ops; the whole op log (JSON lines) is
saved so the run can be replayed exactly (``--replay LOG``). Data written by
op ``n`` is derived from (seed, n), so a log holds no data.

    gfs-fsx /mnt/gfs/fsx.file --second /mnt2/gfs/fsx.file --ops 100000 --seed 7
    gfs-fsx --cluster --seeds 1,2,3 --ops 1000000      # a local cluster of its own
"""
from __future__ import annotations

import argparse
import ctypes
import errno
import json
import mmap
import os
import random
import signal
import sys
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = mmap.PAGESIZE
BLOCK = 64 * 1024
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, mode, offset, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


# op name -> weight in the random mix
WEIGHTS: dict[str, int] = {
    "read": 20, "write": 20, "mapread": 8, "mapwrite": 8, "truncate": 6,
    "falloc": 3, "falloc_keep": 2, "punch": 3, "zero": 3, "zero_keep": 1,
    "copy": 4, "copy_self": 2, "write_src": 3, "fsync": 3, "reopen": 3,
    "dropcache": 2, "second": 2, "check": 1,
}
MMAP_OPS = frozenset({"mapread", "mapwrite"})


class Mismatch(AssertionError):
    """A read returned bytes the model says are not there (or a size differed)."""


@dataclass
class Options:
    path: Path                       # the file under test
    src: Path | None = None          # the copy source (default: path + ".src")
    second: Path | None = None       # the same file through a second mount
    seed: int = 1
    maxlen: int = 1 << 20            # the file never grows past this
    maxop: int = 64 * 1024           # the largest single read/write/copy
    chunk_size: int = 1 << 20        # boundaries worth aiming at
    mmap: bool = True
    ops: frozenset[str] = frozenset(WEIGHTS)
    remount: Callable[[], None] | None = None   # unmount + mount again (harness)
    remount_every: int = 0           # ops between remounts (0: never)
    log_path: Path | None = None     # where the op log is saved on a mismatch
    progress: int = 0                # print a line every N ops (0: never)


@dataclass
class Exerciser:
    opt: Options
    model: bytearray = field(default_factory=bytearray)
    src_model: bytearray = field(default_factory=bytearray)
    oplog: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    seconds: Counter[str] = field(default_factory=Counter)   # time spent per op name
    fd: int = -1
    src_fd: int = -1

    def __post_init__(self) -> None:
        self.rng = random.Random(self.opt.seed)
        self.src_path = self.opt.src or self.opt.path.with_name(self.opt.path.name + ".src")
        names = [n for n in WEIGHTS if n in self.opt.ops and (self.opt.mmap or n not in MMAP_OPS)
                 and (self.opt.second is not None or n != "second")]
        self.names = names
        self.weights = [WEIGHTS[n] for n in names]
        self.recent: deque[str] = deque(maxlen=50)

    # ------------------------------------------------------------ running

    def setup(self) -> None:
        for p in (self.opt.path, self.src_path):
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.close(fd)
        self._open()
        src = random.Random(f"{self.opt.seed}:src").randbytes(self.opt.maxlen // 2)
        os.pwrite(self.src_fd, src, 0)
        self.src_model[:] = src

    def _open(self) -> None:
        self.fd = os.open(self.opt.path, os.O_RDWR)
        self.src_fd = os.open(self.src_path, os.O_RDWR)

    def _close(self) -> None:
        for fd in (self.fd, self.src_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.src_fd = -1

    def run(self, nops: int) -> None:
        """``nops`` random operations, then a final whole-file check."""
        self.setup()
        try:
            start = time.monotonic()
            for n in range(1, nops + 1):
                if self.opt.remount_every and n % self.opt.remount_every == 0 and self.opt.remount:
                    op = {"n": n, "op": "remount"}
                else:
                    op = self.next_op(n)
                self.apply(op)
                if self.opt.progress and n % self.opt.progress == 0:
                    rate = n / max(time.monotonic() - start, 1e-9)
                    print(f"fsx seed {self.opt.seed}: {n} ops ({rate:.0f}/s), size {len(self.model)}",
                          flush=True)
            self.apply({"n": nops + 1, "op": "check"})
        finally:
            self._close()

    def replay(self, ops: list[dict[str, Any]]) -> None:
        self.setup()
        try:
            for op in ops:
                self.apply(op)
        finally:
            self._close()

    def apply(self, op: dict[str, Any]) -> None:
        self.oplog.append(op)
        self.recent.append(json.dumps(op, sort_keys=True))
        self.counts[op["op"]] += 1
        start = time.perf_counter()
        try:
            getattr(self, "do_" + op["op"])(**{k: v for k, v in op.items() if k != "op"})
            self.check_size(op["n"])
            self.seconds[op["op"]] += time.perf_counter() - start
        except Mismatch as exc:
            raise Mismatch(self.report(op["n"], f"{exc}\n{self.diagnose(exc)}")) from None
        except OSError as exc:
            raise Mismatch(self.report(op["n"], f"{op['op']} failed: {exc!r}")) from None

    # ------------------------------------------------------------ choosing

    def _offset(self, limit: int) -> int:
        """An offset below ``limit``, often just around a page, 64 KiB block
        or chunk boundary."""
        limit = max(1, limit)
        r = self.rng.random()
        if r < 0.3:
            unit = self.rng.choice((PAGE, BLOCK, self.opt.chunk_size))
            base = self.rng.randrange(0, limit + unit, unit)
            return max(0, min(limit - 1, base + self.rng.randint(-64, 64)))
        return self.rng.randrange(limit)

    def _length(self) -> int:
        if self.rng.random() < 0.2:
            return self.rng.randint(1, 64)
        return self.rng.randint(1, self.opt.maxop)

    def next_op(self, n: int) -> dict[str, Any]:
        name = self.rng.choices(self.names, self.weights)[0]
        size, maxlen = len(self.model), self.opt.maxlen
        op: dict[str, Any] = {"n": n, "op": name}
        if name in ("read", "mapread"):
            if size == 0:
                return {"n": n, "op": "check"}
            op["off"] = self._offset(size)
            op["count"] = min(self._length(), size - op["off"])
        elif name in ("write", "mapwrite", "falloc", "falloc_keep", "zero", "zero_keep"):
            op["off"] = self._offset(maxlen)
            op["count"] = min(self._length(), maxlen - op["off"])
            if name == "mapwrite":
                op["msync"] = self.rng.random() < 0.5
        elif name == "punch":
            op["off"] = self._offset(max(size, 1))
            op["count"] = self._length()
        elif name == "truncate":
            to_zero = self.rng.random() < 0.1        # now and then, all the way down
            sizes = [self._offset(maxlen), self._offset(max(size, 1))] + ([0] if to_zero else [])
            op["size"] = self.rng.choice(sizes)
        elif name == "copy":
            op["src_off"] = self._offset(len(self.src_model))
            op["off"] = self._offset(maxlen)
            op["count"] = min(self._length(), maxlen - op["off"])
        elif name == "copy_self":
            if size < 2:
                return {"n": n, "op": "check"}
            a, b = sorted(self.rng.sample(range(size), 2))
            length = min(self._length(), b - a, size - b)
            if length <= 0:
                return {"n": n, "op": "check"}
            op["src_off"], op["off"] = (a, b) if self.rng.random() < 0.5 else (b, a)
            op["count"] = length
        elif name == "write_src":
            op["off"] = self._offset(len(self.src_model))
            op["count"] = min(self._length(), len(self.src_model) - op["off"])
        return op

    # ------------------------------------------------------------ checking

    def data(self, n: int, length: int) -> bytes:
        """The bytes op ``n`` writes: from (seed, n), so a replay needs no data."""
        return random.Random(self.opt.seed * 1_000_003 + n).randbytes(length)

    def compare(self, got: bytes, off: int, what: str, count: int | None = None) -> None:
        """``got`` must be the model's bytes at ``off`` (and ``count`` long if given)."""
        want = bytes(self.model[off:off + (len(got) if count is None else count)])
        if got != want:
            bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                       min(len(got), len(want)))
            exc = Mismatch(f"{what}: first bad byte at offset {off + bad:#x} "
                           f"(got {got[bad:bad + 16].hex() or 'EOF'}, "
                           f"want {want[bad:bad + 16].hex() or 'EOF'}); "
                           f"{_bad_extent(got, want, bad)}; "
                           f"read {len(got)} bytes at {off:#x}, model size {len(self.model):#x}")
            exc.offset = off + bad     # type: ignore[attr-defined]
            raise exc

    def diagnose(self, exc: Mismatch) -> str:
        """Stale read or lost data? The bad range read again through a new
        descriptor (caches dropped) and through the second mount."""
        bad = getattr(exc, "offset", None)
        if bad is None:
            return "(no offset to diagnose)"
        want = bytes(self.model[bad:bad + 4096])
        lines = []
        paths = [("this mount, new descriptor", self.opt.path)]
        if self.opt.second is not None:
            paths.append(("second mount", self.opt.second))
        for what, path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    got = os.pread(fd, len(want), bad)
                finally:
                    os.close(fd)
            except OSError as e:
                lines.append(f"  {what}: {e}")
                continue
            same = sum(1 for a, b in zip(got, want) if a == b)
            verdict = "right (a stale read)" if got == want else "WRONG (stored bytes differ)"
            lines.append(f"  {what}: {verdict}; {same} of {len(want)} bytes at {bad:#x} agree")
        return "re-read:\n" + "\n".join(lines)

    def check_size(self, n: int) -> None:
        if self.fd < 0:
            return
        size = os.fstat(self.fd).st_size
        if size != len(self.model):
            raise Mismatch(f"fstat size {size:#x}, model size {len(self.model):#x}")

    def report(self, n: int, what: str) -> str:
        path = self.opt.log_path or Path(f"fsx-seed{self.opt.seed}.oplog")
        try:
            with open(path, "w") as f:
                f.write(json.dumps({"seed": self.opt.seed, "maxlen": self.opt.maxlen,
                                    "maxop": self.opt.maxop}) + "\n")
                for op in self.oplog:
                    f.write(json.dumps(op) + "\n")
            saved = f"op log saved to {path} (replay: gfs-fsx FILE --replay {path})"
        except OSError as exc:
            saved = f"op log not saved: {exc}"
        tail = "\n".join("  " + line for line in self.recent)
        return f"fsx seed {self.opt.seed}, op {n}: {what}\n{saved}\nlast ops:\n{tail}"

    # ------------------------------------------------------------ model edits

    def _grow(self, model: bytearray, end: int) -> None:
        if end > len(model):
            model.extend(bytes(end - len(model)))

    def _put(self, off: int, data: bytes) -> None:
        self._grow(self.model, off + len(data))
        self.model[off:off + len(data)] = data

    # ------------------------------------------------------------ operations

    def do_read(self, n: int, off: int, count: int) -> None:
        self.compare(os.pread(self.fd, count, off), off, "read", count)

    def do_write(self, n: int, off: int, count: int) -> None:
        data = self.data(n, count)
        done = os.pwrite(self.fd, data, off)
        if done != count:
            raise Mismatch(f"short write: {done} of {count}")
        self._put(off, data)

    def do_mapread(self, n: int, off: int, count: int) -> None:
        base = off - off % PAGE
        with mmap.mmap(self.fd, off + count - base, mmap.MAP_SHARED, mmap.PROT_READ,
                       offset=base) as m:
            got = m[off - base:off - base + count]
        self.compare(got, off, "mmap load", count)

    def do_mapwrite(self, n: int, off: int, count: int, msync: bool) -> None:
        data = self.data(n, count)
        if off + count > len(self.model):
            os.ftruncate(self.fd, off + count)       # a mapping cannot grow the file
            self._grow(self.model, off + count)
        base = off - off % PAGE
        with mmap.mmap(self.fd, off + count - base, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE, offset=base) as m:
            m[off - base:off - base + count] = data
            if msync:
                m.flush()
        self.model[off:off + count] = data

    def do_truncate(self, n: int, size: int) -> None:
        os.ftruncate(self.fd, size)
        del self.model[size:]
        self._grow(self.model, size)

    def _falloc(self, mode: int, off: int, length: int) -> None:
        try:
            fallocate(self.fd, mode, off, length)
        except OSError as exc:
            raise Mismatch(f"fallocate mode {mode:#x} at {off:#x}+{length:#x}: {exc}") from None

    def do_falloc(self, n: int, off: int, count: int) -> None:
        self._falloc(0, off, count)
        self._grow(self.model, off + count)

    def do_falloc_keep(self, n: int, off: int, count: int) -> None:
        self._falloc(FALLOC_FL_KEEP_SIZE, off, count)

    def do_punch(self, n: int, off: int, count: int) -> None:
        self._falloc(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, count)
        end = min(off + count, len(self.model))
        if off < end:
            self.model[off:end] = bytes(end - off)

    def do_zero(self, n: int, off: int, count: int) -> None:
        self._falloc(FALLOC_FL_ZERO_RANGE, off, count)
        self._grow(self.model, off + count)
        self.model[off:off + count] = bytes(count)

    def do_zero_keep(self, n: int, off: int, count: int) -> None:
        self._falloc(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, count)
        end = min(off + count, len(self.model))
        if off < end:
            self.model[off:end] = bytes(end - off)

    def _copy(self, src_fd: int, src: bytearray, src_off: int, off: int, length: int) -> None:
        want = max(0, min(length, len(src) - src_off))
        data = bytes(src[src_off:src_off + want])
        done = 0
        while done < want:
            k = os.copy_file_range(src_fd, self.fd, want - done, src_off + done, off + done)
            if k == 0:
                break
            done += k
        if done != want:
            raise Mismatch(f"copy_file_range copied {done} of {want} bytes")
        if want:
            self._put(off, data)

    def do_copy(self, n: int, src_off: int, off: int, count: int) -> None:
        self._copy(self.src_fd, self.src_model, src_off, off, count)

    def do_copy_self(self, n: int, src_off: int, off: int, count: int) -> None:
        self._copy(self.fd, self.model, src_off, off, count)

    def do_write_src(self, n: int, off: int, count: int) -> None:
        data = self.data(n, count)
        os.pwrite(self.src_fd, data, off)
        self.src_model[off:off + count] = data

    def do_fsync(self, n: int) -> None:
        os.fsync(self.fd)

    def do_reopen(self, n: int) -> None:
        self._close()
        self._open()

    def do_dropcache(self, n: int) -> None:
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def do_check(self, n: int) -> None:
        """The whole file, read from the start."""
        got = os.pread(self.fd, len(self.model) + 1, 0)
        self.compare(got, 0, "whole-file read")
        if len(got) != len(self.model):
            raise Mismatch(f"whole-file read gave {len(got):#x} bytes, model {len(self.model):#x}")

    def do_second(self, n: int) -> None:
        """Close (which makes the data visible), then read it all through the
        second mount: close-to-open."""
        assert self.opt.second is not None
        self._close()
        with open(self.opt.second, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            got = f.read()
        if size != len(self.model):
            raise Mismatch(f"second mount: size {size:#x} after close, model {len(self.model):#x}")
        self.compare(got, 0, "second mount after close")
        if len(got) != len(self.model):
            raise Mismatch(f"second mount read {len(got):#x} bytes, model {len(self.model):#x}")
        self._open()

    def do_remount(self, n: int) -> None:
        self._close()
        assert self.opt.remount is not None
        self.opt.remount()
        self._open()
        self.do_check(n)


def _bad_extent(got: bytes, want: bytes, first: int) -> str:
    """How far the bad bytes run from ``first`` (and whether they are zeros)."""
    end = first
    n = min(len(got), len(want))
    while end < n and got[end] != want[end]:
        end += 1
    zeros = end > first and not any(got[first:end])
    return f"{end - first} bad bytes from there{' (all zero)' if zeros else ''}"


# ---------------------------------------------------------------- command line

def _cluster_run(args: argparse.Namespace) -> int:
    """``--cluster``: a local master + 3 chunkds and two mounts in a temp dir."""
    import tempfile

    from gfsfs.tools.localcluster import Cluster, Mount
    _stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="gfs-fsx-") as tmp:
        base = Path(args.keep or tmp).resolve()
        cluster = Cluster(base, 3, extra=[f"master.chunk_size={args.chunk_size}",
                                          "master.heartbeat_interval=0.5",
                                          "chunk_server.heartbeat_interval=0.5",
                                          "chunk_server.reserve_bytes=0"])
        mounts = [Mount("", base / f"mnt{i}", base / "logs" / f"mount{i}.out",
                        options=["--set", "client.log_level=DEBUG"] if args.debug else [])
                  for i in (1, 2)]
        try:
            cluster.start()
            for m in mounts:
                m.master_url = cluster.url
                m.start()

            def remount() -> None:
                mounts[0].stop()
                mounts[0].start()

            if args.replay:
                name = "fsx-replay"
                return _replay(args.replay, mounts[0].mountpoint / name,
                               mounts[1].mountpoint / name, remount)
            failed = 0
            for seed in [int(s) for s in args.seeds.split(",")]:
                for use_mmap in ([True, False] if args.both_modes else [not args.no_mmap]):
                    name = f"fsx-{seed}-{'mmap' if use_mmap else 'plain'}"
                    opt = Options(mounts[0].mountpoint / name, second=mounts[1].mountpoint / name,
                                  seed=seed, maxlen=args.maxlen, maxop=args.maxop,
                                  chunk_size=args.chunk_size, mmap=use_mmap, remount=remount,
                                  ops=_ops(args.skip),
                                  remount_every=args.remount_every, progress=args.progress,
                                  log_path=Path(f"{name}.oplog").resolve())
                    failed += _run_one(opt, args.ops)
            return 1 if failed else 0
        finally:
            for m in mounts:
                m.stop()
            cluster.stop()


class Stopped(Exception):
    """SIGTERM or SIGINT: stop the run and take the cluster down."""


def _stop_on_sigterm() -> None:
    """Raise :class:`Stopped` on SIGTERM and SIGINT, so the ``finally`` that
    unmounts and stops the daemons runs (the default SIGTERM kills the process
    and leaves the mounts and daemons behind). A signal that arrives while a
    system call sits in the file system is handled when the call returns."""
    def stop(signum: int, frame: object) -> None:
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _replay(log: str, path: Path, second: Path | None,
            remount: Callable[[], None] | None = None, save_to: Path | None = None) -> int:
    with open(log) as f:
        head = json.loads(f.readline())
        ops = [json.loads(line) for line in f if line.strip()]
    opt = Options(path, second=second, seed=head["seed"], maxlen=head["maxlen"],
                  maxop=head["maxop"], remount=remount, log_path=save_to or Path(log + ".again"))
    try:
        Exerciser(opt).replay(ops)
    except Mismatch as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"replay of {len(ops)} ops passed")
    return 0


def _ops(skip: str) -> frozenset[str]:
    left_out = {s for s in skip.split(",") if s}
    unknown = left_out - set(WEIGHTS)
    if unknown:
        raise SystemExit(f"gfs-fsx: --skip: unknown ops {sorted(unknown)}; known: {sorted(WEIGHTS)}")
    return frozenset(WEIGHTS) - left_out


def _run_one(opt: Options, nops: int) -> int:
    ex = Exerciser(opt)
    start = time.monotonic()
    try:
        ex.run(nops)
    except Mismatch as exc:
        print(f"FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    took = time.monotonic() - start
    mix = ", ".join(f"{k} {v} ({1000 * ex.seconds[k] / v:.1f} ms)"
                    for k, v in sorted(ex.counts.items()))
    print(f"fsx seed {opt.seed} ({'mmap' if opt.mmap else 'plain'}): {nops} ops passed in "
          f"{took:.1f} s ({nops / took:.0f} ops/s); {mix}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gfs-fsx", description=__doc__.split("\n\n")[0])
    p.add_argument("file", nargs="?", help="the file to exercise (created/truncated)")
    p.add_argument("--second", help="the same file as seen through a second mount")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seeds", default="1", help="with --cluster: comma-separated seeds")
    p.add_argument("--ops", type=int, default=10_000)
    p.add_argument("--maxlen", type=int, default=1 << 20)
    p.add_argument("--maxop", type=int, default=64 * 1024)
    p.add_argument("--chunk-size", type=int, default=256 * 1024)
    p.add_argument("--no-mmap", action="store_true")
    p.add_argument("--skip", default="", help="comma-separated ops left out of the mix")
    p.add_argument("--both-modes", action="store_true", help="with --cluster: mmap and plain")
    p.add_argument("--remount-every", type=int, default=0)
    p.add_argument("--progress", type=int, default=0)
    p.add_argument("--replay", help="replay an op log saved by a failed run")
    p.add_argument("--keep", help="with --cluster: keep the cluster's data and logs in this dir")
    p.add_argument("--debug", action="store_true", help="with --cluster: mounts log at DEBUG")
    p.add_argument("--cluster", action="store_true",
                   help="start a local cluster with two mounts in a temp dir and run there")
    args = p.parse_args(argv)
    if args.cluster:
        try:
            return _cluster_run(args)
        except Stopped as exc:
            print(f"gfs-fsx: stopped by {exc}; the cluster is down", file=sys.stderr)
            return 130
    if not args.file:
        p.error("FILE is required without --cluster")
    if args.replay:
        return _replay(args.replay, Path(args.file), Path(args.second) if args.second else None)
    opt = Options(Path(args.file), second=Path(args.second) if args.second else None,
                  seed=args.seed, maxlen=args.maxlen, maxop=args.maxop,
                  chunk_size=args.chunk_size, mmap=not args.no_mmap, progress=args.progress,
                  ops=_ops(args.skip))
    return _run_one(opt, args.ops)


if __name__ == "__main__":
    sys.exit(main())
