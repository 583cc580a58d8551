"""Concurrent namespace mutations from several mounts (GFS §4.1)."""
from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import pytest

from conftest import needs_fuse
from faultkit import rpc, running
from gfsfs.tools.localcluster import Mount


def names_in(url: str, parent: int) -> dict[bytes, int]:
    out: dict[bytes, int] = {}
    offset = 0
    while True:
        ents = rpc(url, "readdir", ino=parent, offset=offset, limit=1024)["entries"]
        if not ents:
            return out
        for name, attr, cookie in ents:
            if name not in (b".", b".."):
                out[name] = attr["ino"]
            offset = cookie


@needs_fuse
def test_creates_race_rename_and_snapshot_of_dir(tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, hosts=False) as (c, m):
        assert m is not None
        m2 = Mount(c.url, tmp_path / "mnt2", c.logs / "mount2.out")
        m2.start()
        try:
            a, b = m.mountpoint, m2.mountpoint
            (a / "d").mkdir()
            made: list[str] = []
            errors: list[int] = []
            go = threading.Event()

            def creator(k: int) -> None:
                go.wait()
                for i in range(150):
                    name = f"c{k}-{i}"
                    try:
                        tmp = a / "d" / f".t{k}-{i}"
                        with open(tmp, "wb") as fh:
                            fh.write(name.encode() * 100)
                        os.rename(tmp, a / "d" / name)
                        made.append(name)
                    except OSError as exc:
                        errors.append(exc.errno)
            threads = [threading.Thread(target=creator, args=(k,)) for k in range(3)]
            for t in threads:
                t.start()
            go.set()
            import time
            time.sleep(0.5)
            d = rpc(c.url, "lookup", parent=1, name=b"d")["ino"]
            rpc(c.url, "snapshot", src=d, parent=1, name=b"snap")
            os.rename(b / "d", b / "d2")
            for t in threads:
                t.join(120)
            assert set(errors) <= {errno.ENOENT}, errors
            assert not (a / "d").exists()
            got = names_in(c.url, d)
            assert {n.decode() for n in got if not n.startswith(b".")} == set(made)
            snap = rpc(c.url, "lookup", parent=1, name=b"snap")["ino"]
            for name in names_in(c.url, snap):
                if not name.startswith(b"."):
                    assert (b / "snap" / name.decode()).read_bytes() == name * 100, name
        finally:
            m2.stop()


@needs_fuse
def test_rename_storm_every_file_exactly_once(tmp_path: Path,
                                              request: pytest.FixtureRequest) -> None:
    with running(tmp_path, request, 3, hosts=False) as (c, m):
        assert m is not None
        m2 = Mount(c.url, tmp_path / "mnt2", c.logs / "mount2.out")
        m2.start()
        try:
            dirs = ["x", "y", "z"]
            for dname in dirs:
                (m.mountpoint / dname).mkdir()
            files = [f"f{i}" for i in range(40)]
            for i, f in enumerate(files):
                (m.mountpoint / dirs[i % 3] / f).write_bytes(f.encode())

            def storm(root: Path, seed: int) -> None:
                rnd = random.Random(seed)
                for _ in range(300):
                    f, s, t = rnd.choice(files), rnd.choice(dirs), rnd.choice(dirs)
                    try:
                        os.rename(root / s / f, root / t / f)
                    except OSError as exc:
                        assert exc.errno == errno.ENOENT, exc
            threads = [threading.Thread(target=storm, args=(r, k))
                       for k, r in enumerate([m.mountpoint, m2.mountpoint] * 2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            seen: list[str] = []
            for dname in dirs:
                ino = rpc(c.url, "lookup", parent=1, name=dname.encode())["ino"]
                seen += [n.decode() for n in names_in(c.url, ino)]
            assert sorted(seen) == sorted(files)
            assert rpc(c.url, "fsck")
        finally:
            m2.stop()
