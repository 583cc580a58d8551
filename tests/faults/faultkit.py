"""Helpers for the fault tests: master RPCs, polling, bounded file system
operations, and nftables partitions on loopback.

"Hosts" are loopback addresses: the master on 127.0.0.1, chunkds on
127.0.0.2..., the mount connecting from 127.0.0.10 (``[client]
source_address``; chunkds connect out from their own ``host``). A partition is
an nftables table with a uniquely named ``output`` chain that drops packets
between two addresses (and ports); every packet on loopback is locally
generated, so the output hook sees each one. :class:`Partition` deletes its
table in ``heal`` and on exit, even when the test fails.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from conftest import make_cluster
from gfsfs.tools.localcluster import Cluster, Mount

MASTER_HOST = "127.0.0.1"
CLIENT_HOST = "127.0.0.10"


def chunk_host(i: int) -> str:
    return f"127.0.0.{2 + i}"


def rpc(url: str, name: str, /, **body: Any) -> Any:
    r = httpx.post(f"{url}/rpc/{name}", content=msgpack.packb(body, use_bin_type=True),
                   timeout=10.0)
    reply = msgpack.unpackb(r.content, raw=False, strict_map_key=False)
    assert r.status_code == 200, reply
    return reply


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except (httpx.HTTPError, AssertionError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout}s (last: {last!r})")
        time.sleep(every)


def bounded(what: str, fn: Callable[[], Any], bound: float) -> tuple[Any, float]:
    """Run ``fn`` in a thread; (its result or the exception it raised, seconds
    taken). Fails the test if it has not returned within ``bound`` seconds (the
    thread is a daemon: a stuck file system call cannot hold the test run)."""
    out: dict[str, Any] = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            out["value"] = exc
        out["took"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True, name=what)
    t.start()
    t.join(bound)
    if t.is_alive():
        raise AssertionError(f"{what}: still blocked after {bound}s")
    return out["value"], out["took"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_uncached(path: Path) -> bytes:
    """The file's bytes through the mount, not the kernel's page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        parts = []
        while True:
            piece = os.read(fd, 1 << 20)
            if not piece:
                return b"".join(parts)
            parts.append(piece)
    finally:
        os.close(fd)


def write_fsync(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def ino_of(url: str, name: str, parent: int = 1) -> int:
    return int(rpc(url, "lookup", parent=parent, name=name.encode())["ino"])


def file_chunks(url: str, name: str) -> list[dict[str, Any]]:
    return rpc(url, "fileinfo", ino=ino_of(url, name))["chunks"]


def replica_ids(chunk: dict[str, Any]) -> set[str]:
    return {r["id"] for r in chunk["replicas"]}


def servers(url: str) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in rpc(url, "cluster_status")["servers"]}


def chunk_files(cluster: Cluster, server_id: str) -> set[int]:
    d = cluster.data / "chunks" / server_id
    return {int(p.stem, 16) for p in d.glob("*.chunk")} if d.exists() else set()


def daemon(cluster: Cluster, server_id: str):  # type: ignore[no-untyped-def]
    return next(d for d in cluster.servers if d.name == server_id)


# ---------------------------------------------------------------- clusters

@contextmanager
def running(tmp_path: Path, request: pytest.FixtureRequest, chunkds: int = 3,
            extra: list[str] | None = None, mount_opts: list[str] | None = None,
            hosts: bool = True, chunk_sets: list[list[str]] | None = None,
            mount: bool = True) -> Iterator[tuple[Cluster, Mount | None]]:
    """A cluster (each daemon on its own loopback address when ``hosts``) and a
    mount connecting from CLIENT_HOST; both stopped, and logs printed on
    failure, however the block ends."""
    kw: dict[str, Any] = {}
    if hosts:
        kw = {"host": MASTER_HOST, "chunk_hosts": [chunk_host(i) for i in range(chunkds + 4)]}
    c = make_cluster(tmp_path, chunkds, extra, **kw)
    c.chunk_sets = list(chunk_sets or [])
    opts = ["--set", f'client.source_address="{CLIENT_HOST}"'] if hosts else []
    m = Mount("", tmp_path / "mnt", c.logs / "mount.out", options=opts + list(mount_opts or []))
    ok = False
    try:
        c.start()
        m.master_url = c.url
        if mount:
            m.start()
        yield c, (m if mount else None)
        ok = True
    finally:
        if not ok:
            print(c.logs_text())
            if m.daemon is not None:
                print(f"===== mount =====\n{m.daemon.log_tail(8000)}")
        m.stop()
        c.stop()


# ---------------------------------------------------------------- partitions

def have_nft() -> bool:
    if shutil.which("nft") is None:
        return False
    return subprocess.run(["nft", "list", "tables"], capture_output=True).returncode == 0


needs_nft = pytest.mark.skipif(not have_nft(), reason="needs nft (Debian package nftables) "
                               "and CAP_NET_ADMIN")


class Partition:
    """Drop rules in a table of our own: ``cut(rules)`` installs them (each
    rule an nft match expression, ``drop`` appended), ``heal()`` deletes the
    table. Use as a context manager so the table goes away on failure too."""

    def __init__(self, tag: str) -> None:
        self.table = f"gfstest_{tag}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.active = False

    def cut(self, rules: list[str]) -> None:
        self.heal()
        body = "\n".join(f"    {r} drop" for r in rules)
        script = (f"table inet {self.table} {{\n  chain out {{\n"
                  f"    type filter hook output priority -10; policy accept;\n{body}\n  }}\n}}\n")
        r = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True,
                           timeout=10)
        assert r.returncode == 0, f"nft failed: {r.stderr}\n{script}"
        self.active = True

    def heal(self) -> None:
        if self.active:
            subprocess.run(["nft", "delete", "table", "inet", self.table], capture_output=True,
                           timeout=10)
            self.active = False

    def __enter__(self) -> Partition:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()


def between(a: str, b: str, port: int) -> list[str]:
    """Both directions of TCP between host ``a`` and ``b``'s service on ``port``."""
    return [f"ip saddr {a} ip daddr {b} tcp dport {port}",
            f"ip saddr {b} tcp sport {port} ip daddr {a}"]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].rstrip("/"))
