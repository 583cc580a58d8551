"""The op log of a real master process: a full disk, a damaged log.

The ENOSPC test mounts a small tmpfs as the master's data dir (we are root),
fills it, and checks over RPC that nothing unacknowledged is ever visible --
live, after a kill -9, and after a clean restart -- and that mutations resume
by themselves once there is room again.
"""
from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from gfsfs.common import rpc
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import ROOT, Daemon
from master.state.namespace import ROOT_INO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


def master_argv(data: Path, logs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "master", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(data), "--set", f"master.log_dir={str(logs)!r}", *extra]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class Client:
    """Namespace RPCs against one master URL."""

    def __init__(self, url: str) -> None:
        self.url = url

    def create(self, names: list[bytes]) -> dict[bytes, str]:
        """Create ``names`` concurrently; name -> "ok" or the error code."""
        out: dict[bytes, str] = {}

        async def one(http: object, name: bytes) -> None:
            try:
                await rpc.call(http, self.url, "create",  # type: ignore[arg-type]
                               {"parent": ROOT_INO, "name": name,
                                "mode": stat.S_IFREG | 0o644, "uid": 0, "gid": 0})
                out[name] = "ok"
            except GFSError as exc:
                out[name] = exc.code

        async def run() -> None:
            async with rpc.make_http(timeout=20) as http:
                async with trio.open_nursery() as nursery:
                    for name in names:
                        nursery.start_soon(one, http, name)

        trio.run(run)
        return out

    def existing(self, names: set[bytes]) -> set[bytes]:
        """Those of ``names`` a lookup finds."""
        found: set[bytes] = set()

        async def run() -> None:
            async with rpc.make_http(timeout=20) as http:
                for name in names:
                    try:
                        await rpc.call(http, self.url, "lookup",
                                       {"parent": ROOT_INO, "name": name})
                        found.add(name)
                    except GFSError as exc:
                        assert exc.code == "ENOENT", exc

        trio.run(run)
        return found

    def metric(self, name: str) -> float:
        import httpx
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        assert m, name
        return float(m.group(1))


def fill(fs: Path) -> Path:
    """Fill ``fs`` to the last byte with one file."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def check_visible(c: Client, acked: set[bytes], failed: set[bytes]) -> None:
    found = c.existing(acked | failed)
    missing, ghosts = sorted(acked - found), sorted(failed & found)
    assert not missing, f"acknowledged but gone: {missing[:5]}"
    assert not ghosts, f"refused but visible: {ghosts[:5]}"


def test_full_disk_undoes_unacknowledged_and_recovers(tmp_path: Path, small_fs: Path) -> None:
    data, logs = small_fs / "master", tmp_path / "logs"
    master = Daemon("master", master_argv(data, logs), tmp_path / "master.out")
    acked: set[bytes] = set()
    failed: set[bytes] = set()

    def burst(prefix: str, n: int = 40) -> dict[bytes, str]:
        got = Client(master.url).create([f"{prefix}-{i:03d}".encode() for i in range(n)])
        acked.update(k for k, v in got.items() if v == "ok")
        failed.update(k for k, v in got.items() if v != "ok")
        return got

    try:
        master.start()
        c = Client(master.url)
        assert set(burst("before").values()) == {"ok"}
        filler = fill(small_fs)
        codes: set[str] = set()
        for round_ in range(200):          # the log's last page may still have room
            codes |= set(burst(f"full{round_}").values())
            if "ENOSPC" in codes:
                print(f"ENOSPC after {round_ + 1} bursts")
                break
        assert "ENOSPC" in codes and codes <= {"ok", "ENOSPC"}, codes
        check_visible(c, acked, failed)
        assert c.metric("gfs_master_oplog_failed") == 1
        assert c.metric("gfs_master_oplog_failures_total") >= 1
        assert master.log_tail(200_000).count("CRITICAL") == 1
        assert set(burst("refused", 10).values()) == {"ENOSPC"}
        check_visible(c, acked, failed)

        # a crash while the log is unusable, and a start on the full disk
        master.kill()
        master.start()
        c = Client(master.url)
        check_visible(c, acked, failed)

        # room again: mutations resume by themselves
        filler.unlink()
        deadline = time.monotonic() + 30
        while set(burst(f"retry{int(time.monotonic() * 1000)}", 1).values()) != {"ok"}:
            assert time.monotonic() < deadline, "mutations did not resume"
            time.sleep(0.3)
        assert set(burst("after").values()) == {"ok"}
        assert c.metric("gfs_master_oplog_failed") == 0
        check_visible(c, acked, failed)

        master.stop()
        master.start()
        check_visible(Client(master.url), acked, failed)
        assert {n for n in acked if n.startswith(b"after-")} and failed
    finally:
        master.stop()


def _make_log(tmp_path: Path) -> tuple[Path, Path]:
    data, logs = tmp_path / "data", tmp_path / "logs"
    master = Daemon("master", master_argv(data, logs), tmp_path / "master.out")
    try:
        master.start()
        got = Client(master.url).create([b"f%02d" % i for i in range(20)])
        assert set(got.values()) == {"ok"}
    finally:
        master.stop()
    path = sorted(data.glob("oplog.*"))[-1]
    return data, path


def test_flipped_byte_stops_start_up_and_recover_log_keeps_a_copy(tmp_path: Path) -> None:
    data, path = _make_log(tmp_path)
    raw = bytearray(path.read_bytes())
    offset = len(raw) // 2
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))
    r = subprocess.run(master_argv(data, tmp_path / "logs"), cwd=ROOT, capture_output=True,
                       text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode != 0
    m = re.search(r"op log (\S+) is damaged at byte offset (\d+)", r.stderr)
    assert m, r.stderr
    assert m.group(1) == str(path) and int(m.group(2)) <= offset
    assert "--recover-log" in r.stderr
    assert path.read_bytes() == bytes(raw)           # untouched

    master = Daemon("master", master_argv(data, tmp_path / "logs", "--recover-log"),
                    tmp_path / "recover.out")
    try:
        master.start()
        copies = list(data.glob(f"{path.name}.damaged-*"))
        assert len(copies) == 1 and copies[0].read_bytes() == bytes(raw)
        assert path.stat().st_size == int(m.group(2))
        c = Client(master.url)
        kept = c.existing({b"f%02d" % i for i in range(20)})
        assert 0 < len(kept) < 20                   # the records before the damage
        assert set(c.create([b"new"]).values()) == {"ok"}
    finally:
        master.stop()
