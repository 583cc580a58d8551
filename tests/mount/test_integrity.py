"""Every byte right under any mix of operations (issue 9).

The fsx-style exerciser (gfsfs/tools/fsx.py) against a real cluster with two
mounts, 256 KiB chunks so a 1 MiB file crosses chunks; the fixed sequences
that once returned wrong bytes; and the POSIX cases that failed: fallocate,
writing a set-id file as another user, ftruncate through a writable
descriptor of a mode-0 file, ``cp -a`` keeping mtimes.
"""
from __future__ import annotations

import dataclasses
import errno
import mmap
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from conftest import CLUSTER_SETTINGS, needs_fuse
from gfsfs.tools import fsx
from gfsfs.client.core import Client
from gfsfs.common.config import ClientConfig
from gfsfs.tools.localcluster import Cluster, Mount, is_mounted

pytestmark = [needs_fuse, pytest.mark.mount]

CS = 256 * 1024
DATA = Path(__file__).resolve().parents[1] / "data"
# two seeds of this many ops run at once (~80 s here); make soak runs long ones
FSX_OPS = int(os.environ.get("GFS_FSX_OPS", "6000"))


@dataclasses.dataclass
class TwoMounts:
    cluster: Cluster
    a: Mount
    b: Mount

    def remount_a(self) -> None:
        self.a.stop()
        self.a.start()


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoMounts]:
    base = tmp_path_factory.mktemp("integrity")
    cluster = Cluster(base, 3, extra=CLUSTER_SETTINGS + [f"master.chunk_size={CS}"])
    # world-traversable, so tests can act as a non-root user on the mounts
    top = Path(tempfile.mkdtemp(prefix="gfsfs-integrity-"))
    top.chmod(0o755)
    a = Mount("", top / "a", base / "logs" / "mount-a.out")
    b = Mount("", top / "b", base / "logs" / "mount-b.out")
    try:
        cluster.start()
        for m in (a, b):
            m.master_url = cluster.url
            m.start()
        yield TwoMounts(cluster, a, b)
    finally:
        for m in (a, b):
            m.stop()
        cluster.stop()
        if not any(is_mounted(m.mountpoint) for m in (a, b)):
            shutil.rmtree(top, ignore_errors=True)


def options(two: TwoMounts, name: str, tmp_path: Path, **kw: object) -> fsx.Options:
    return fsx.Options(two.a.mountpoint / name, second=two.b.mountpoint / name,
                       chunk_size=CS, log_path=tmp_path / f"{name}.oplog", **kw)  # type: ignore[arg-type]


def run_fsx(opt: fsx.Options, nops: int) -> fsx.Exerciser:
    ex = fsx.Exerciser(opt)
    ex.run(nops)
    return ex


# ---------------------------------------------------------------- the exerciser

def test_fsx_two_seeds_mmap_and_plain(two: TwoMounts, tmp_path: Path) -> None:
    """Two seeds at once on one cluster: seed 1 with mmap, seed 2 without;
    every read compared with the model, reads through the second mount
    after closes."""
    runs = [options(two, "fsx1", tmp_path, seed=1, mmap=True),
            options(two, "fsx2", tmp_path, seed=2, mmap=False)]
    errors: list[BaseException] = []
    done: list[fsx.Exerciser] = []

    def one(opt: fsx.Options) -> None:
        try:
            done.append(run_fsx(opt, FSX_OPS))
        except BaseException as exc:      # reported below, with its op log
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(opt,), daemon=True) for opt in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1200)
        assert not t.is_alive(), "an fsx run hung (see the mount logs)"
    if errors:
        raise errors[0]
    for ex in done:
        print(f"fsx seed {ex.opt.seed}: {sum(ex.counts.values())} ops: {dict(ex.counts)}")
        assert sum(ex.counts.values()) == FSX_OPS + 1
        assert ex.counts["second"] > 0 and ex.counts["write"] > 0


def test_fsx_with_remounts(two: TwoMounts, tmp_path: Path) -> None:
    """Unmount and mount again every 400 ops: nothing closed is lost."""
    opt = options(two, "fsx3", tmp_path, seed=3, remount=two.remount_a, remount_every=400)
    ex = run_fsx(opt, 2000)
    assert ex.counts["remount"] == 5


def test_fsx_replay_of_a_lost_mmap_page(two: TwoMounts, tmp_path: Path) -> None:
    """The op log of a run that lost a mmap store (0x84000..0x84150 read as
    zeros after a second store to the same page): a read-ahead piece fetched
    while the first store was still buffered was kept as current, the
    kernel's fault of the page got the old zeros and wrote them back."""
    path = two.a.mountpoint / "replay"
    rc = fsx._replay(str(DATA / "fsx-seed2-lost-mmap-page.oplog"), path,
                     two.b.mountpoint / "replay", save_to=tmp_path / "again.oplog")
    assert rc == 0


def test_fsx_mismatch_report_names_seed_op_and_offset(tmp_path: Path) -> None:
    """On a local file, a model that disagrees with the file is reported
    with the seed, the op, the first bad offset and a saved op log."""
    opt = fsx.Options(tmp_path / "f", seed=5, chunk_size=CS, log_path=tmp_path / "log")
    ex = fsx.Exerciser(opt)
    ex.setup()
    try:
        ex.apply({"n": 1, "op": "write", "off": 100, "count": 50})
        ex.model[120] ^= 0xFF                     # the "file system" is now wrong
        with pytest.raises(fsx.Mismatch) as e:
            ex.apply({"n": 2, "op": "read", "off": 0, "count": 200})
    finally:
        ex._close()
    text = str(e.value)
    assert "seed 5, op 2" in text and "first bad byte at offset 0x78" in text
    lines = (tmp_path / "log").read_text().splitlines()
    assert len(lines) == 3 and '"seed": 5' in lines[0]


def test_fsx_on_a_local_directory(tmp_path: Path) -> None:
    """The model itself is right: a local file system passes."""
    ex = run_fsx(fsx.Options(tmp_path / "f", seed=9, chunk_size=CS), 5000)
    assert ex.counts["punch"] and ex.counts["copy"] and ex.counts["mapwrite"]


def _pids_under(base: Path) -> list[int]:
    """Processes whose command line names ``base`` (the daemons and mounts of
    one gfs-fsx --cluster run, which put their data and logs there)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes()
            except OSError:
                continue
            if str(base).encode() in argv and b"gfsfs.tools.fsx" not in argv:
                pids.append(int(d.name))
    return pids


# the mounts are stopped under a running fsx: a release the kernel already
# dropped when the mount went away makes pyfuse3 log "fuse_reply_* failed"
@pytest.mark.allow_errors
def test_fsx_cluster_stops_its_cluster_on_sigterm(tmp_path: Path) -> None:
    """SIGTERM to ``gfs-fsx --cluster`` unmounts both mounts and stops the
    master and chunkds it started (before, they were left behind)."""
    base = tmp_path / "fsx"
    proc = subprocess.Popen([sys.executable, "-m", "gfsfs.tools.fsx", "--cluster", "--keep",
                             str(base), "--ops", "100000000", "--progress", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()             # the first progress line: all up
        assert "20" in line, line + proc.stderr.read()
        assert len(_pids_under(base)) >= 6        # master, 3 chunkds, 2 mounts
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
        err = proc.stderr.read()
        assert rc == 130 and "stopped by SIGTERM" in err, err
        assert not any(is_mounted(base / f"mnt{i}") for i in (1, 2))
        assert _pids_under(base) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for i in (1, 2):
            if is_mounted(base / f"mnt{i}"):
                subprocess.run(["fusermount3", "-uz", str(base / f"mnt{i}")], check=False)
        for pid in _pids_under(base):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- fixed sequences

def test_read_after_write_overlapping_old_data(two: TwoMounts) -> None:
    """Write, then read an overlapping range through the same descriptor;
    mmap store then mmap load; copy_file_range then read back."""
    path = two.a.mountpoint / "seq"
    old, new = os.urandom(CS + 4096), os.urandom(0x8189)
    with open(path, "w+b") as f:
        f.write(old)
        f.flush()
        os.fsync(f.fileno())
        assert os.pread(f.fileno(), 0x20000, 0x10000) == old[0x10000:0x30000]
        os.pwrite(f.fileno(), new, 0x37E77)
        want = bytearray(old)
        want[0x37E77:0x37E77 + len(new)] = new
        assert os.pread(f.fileno(), 0xA9C6, 0x30170) == want[0x30170:0x3AB36]
        with mmap.mmap(f.fileno(), len(want)) as m:
            m[0x369F:0x9381] = b"\x5a" * (0x9381 - 0x369F)
            want[0x369F:0x9381] = b"\x5a" * (0x9381 - 0x369F)
            assert m[0x3000:0xA000] == want[0x3000:0xA000]
        src = two.a.mountpoint / "seq.src"
        src.write_bytes(os.urandom(0x10000))
        with open(src, "rb") as s:
            n = os.copy_file_range(s.fileno(), f.fileno(), 0x10000, 0, 0x2F000)
        assert n == 0x10000
        want[0x2F000:0x3F000] = src.read_bytes()
        assert os.pread(f.fileno(), 0x12000, 0x2E000) == want[0x2E000:0x40000]
    assert path.read_bytes() == want
    assert (two.b.mountpoint / "seq").read_bytes() == want


def test_mmap_stores_around_a_truncate(two: TwoMounts) -> None:
    """A mmap store, a second store in the same page, a truncate down, a
    write leaving a hole: the first store is still there after a reopen."""
    path = two.a.mountpoint / "mmaptrunc"
    with open(path, "w+b") as f:
        f.truncate(0x20000)
        want = bytearray(0x20000)
        with mmap.mmap(f.fileno(), 0x20000) as m:
            m[0x369F:0x9382] = b"\x11" * (0x9382 - 0x369F)
        with mmap.mmap(f.fileno(), 0x20000) as m:
            m[0x8DE3:0x8E00] = b"\x22" * (0x8E00 - 0x8DE3)
        want[0x369F:0x9382] = b"\x11" * (0x9382 - 0x369F)
        want[0x8DE3:0x8E00] = b"\x22" * (0x8E00 - 0x8DE3)
        f.truncate(0x1134F)
        del want[0x1134F:]
        os.pwrite(f.fileno(), b"\x33" * 100, 0x30000)
        want += bytes(0x30000 - len(want)) + b"\x33" * 100
    assert path.read_bytes() == want
    assert (two.b.mountpoint / "mmaptrunc").read_bytes() == want


def test_read_ahead_started_before_a_write_is_not_kept(two: TwoMounts) -> None:
    """The race behind the stale reads, made exact with the client library:
    a sequential read waits on the master while the same client buffers a
    write over the range it is about to read ahead. What it fetched then
    must not be served once the write is flushed."""
    cfg = dataclasses.replace(ClientConfig(), master_url=two.cluster.url, retries=3,
                              request_timeout=10.0)
    old, new = bytes([1]) * CS, bytes([2]) * 65536

    async def main() -> None:
        async with Client.open(cfg) as client:
            ino = (await client.create(1, b"race", stat.S_IFREG | 0o644, 0, 0))["ino"]
            await client.write(ino, 0, old)
            await client.flush(ino)
            of = client.open_file(ino)
            assert await client.read(ino, 0, 4096, of) == old[:4096]
            client.open_file(ino)                 # another open: the size is asked anew
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await client.read(ino, 4096, 4096, of))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()   # it waits on the master
                await client.write(ino, 4096, new)            # buffered meanwhile
            assert got[0] in (old[4096:8192], new[:4096])
            await client.flush(ino)
            assert await client.read(ino, 8192, 4096, of) == new[4096:8192]
    trio.run(main)


# ---------------------------------------------------------------- POSIX cases

FALLOCATE = ["fallocate"]


def test_fallocate_modes(two: TwoMounts) -> None:
    path = two.a.mountpoint / "falloc"
    data = os.urandom(300_000)
    path.write_bytes(data)
    want = bytearray(data)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(FALLOCATE + list(args) + [str(path)], capture_output=True, text=True)

    assert run("-l", "1000000").returncode == 0                   # mode 0: grows
    want += bytes(1_000_000 - len(want))
    assert path.stat().st_size == 1_000_000
    assert run("-p", "-o", "1000", "-l", str(CS)).returncode == 0  # punch across a chunk edge
    want[1000:1000 + CS] = bytes(CS)
    assert run("-z", "-o", "290000", "-l", "800000").returncode == 0   # zero range, grows
    want[290000:] = bytes(len(want) - 290000)
    want += bytes(1_090_000 - len(want))
    assert run("-n", "-o", "0", "-l", "5000000").returncode == 0  # keep size: nothing changes
    assert run("-z", "-n", "-o", "2000", "-l", "5000000").returncode == 0
    want[2000:] = bytes(len(want) - 2000)
    assert path.stat().st_size == len(want) == 1_090_000
    assert path.read_bytes() == want
    r = run("-c", "-o", "0", "-l", str(CS))                       # collapse: not supported
    assert r.returncode != 0 and "not supported" in r.stderr
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 2_000_000, 1000)
    finally:
        os.close(fd)
    assert path.stat().st_size == 2_001_000
    assert (two.b.mountpoint / "falloc").read_bytes() == bytes(want) + bytes(2_001_000 - len(want))


def as_nobody(code: str) -> subprocess.CompletedProcess[str]:
    argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", code]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", [0o4777, 0o2777, 0o6777])
def test_writing_a_setid_file_as_another_user_clears_the_bits(two: TwoMounts, mode: int) -> None:
    d = two.a.mountpoint / f"setid{mode:o}"
    d.mkdir()
    d.chmod(0o777)
    f = d / "f"
    f.write_bytes(b"root's")
    f.chmod(mode)
    r = as_nobody(f"import os\nfd = os.open({str(f)!r}, os.O_WRONLY)\n"
                  f"assert os.write(fd, b'nobody') == 6\nos.close(fd)")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o777
    assert f.read_bytes() == b"nobody"


def test_ftruncate_through_a_writable_descriptor_of_a_mode_0_file(two: TwoMounts) -> None:
    d = two.a.mountpoint / "mode0"
    d.mkdir()
    d.chmod(0o777)
    r = as_nobody(f"import os\nfd = os.open({str(d / 'f')!r}, os.O_CREAT | os.O_RDWR, 0)\n"
                  "os.write(fd, b'x' * 100)\nos.ftruncate(fd, 0)\nos.ftruncate(fd, 10)\n"
                  "os.close(fd)")
    assert r.returncode == 0, r.stderr
    st = os.stat(d / "f")
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_uid) == (10, 0, 65534)
    r = as_nobody(f"import os\nos.truncate({str(d / 'f')!r}, 0)")   # by name: mode 0 refuses
    assert r.returncode != 0 and "PermissionError" in r.stderr


def test_cp_a_keeps_mtimes_across_remount_and_master_restart(two: TwoMounts,
                                                             tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i, size in enumerate((0, 10, 70_000, 3 * CS)):
        (src / f"f{i}").write_bytes(os.urandom(size))
        os.utime(src / f"f{i}", ns=(1_500_000_000_123_456_789, 1_400_000_000_987_654_321 + i))
    dst = two.a.mountpoint / "cpa"
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)

    def mtimes(root: Path) -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in sorted(root.iterdir())}

    want = mtimes(src)
    assert mtimes(dst) == want
    two.remount_a()
    assert mtimes(dst) == want
    two.cluster.restart_master(kill=True)
    two.remount_a()
    assert mtimes(dst) == want
    assert mtimes(two.b.mountpoint / "cpa") == want
    assert all((dst / n).read_bytes() == (src / n).read_bytes() for n in want)


def test_collapse_range_is_refused_cleanly(two: TwoMounts) -> None:
    path = two.a.mountpoint / "collapse"
    path.write_bytes(b"z" * CS * 2)
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            fsx.fallocate(fd, 0x08, 0, CS)           # FALLOC_FL_COLLAPSE_RANGE
        assert e.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    assert path.read_bytes() == b"z" * CS * 2
