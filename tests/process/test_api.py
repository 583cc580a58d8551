"""The public client API (gfsfs.connect, gfsfs.client.api) against a real cluster: a
master and three chunkd processes shared by the module; each test starts from an empty root."""
from __future__ import annotations

import errno
import gc
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import gfsfs
from conftest import TEST_CHUNK_SIZE
from gfsfs.client.api import GFS, master_url, os_error
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import Cluster

CS = TEST_CHUNK_SIZE


def pattern(n: int, seed: int = 1) -> bytes:
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


@pytest.fixture
def fs(cluster: Cluster) -> Iterator[GFS]:
    handle = gfsfs.connect(cluster.url, request_timeout=5.0, retries=3,
                           upload_chunk_size=CS // 2)
    try:
        yield handle
    finally:
        for name in handle.listdir("/"):
            handle.rm(f"/{name}", recursive=True)
        handle.close()


def test_error_mapping_and_urls() -> None:
    assert type(os_error(GFSError("ENOENT", "x"), "/a")) is FileNotFoundError
    assert type(os_error(GFSError("EEXIST"))) is FileExistsError
    assert type(os_error(GFSError("ENOTDIR"))) is NotADirectoryError
    assert type(os_error(GFSError("EISDIR"))) is IsADirectoryError
    assert type(os_error(GFSError("EACCES"))) is PermissionError
    err = os_error(GFSError("UNAVAILABLE", "down"), "/a")
    assert isinstance(err, ConnectionError) and err.errno == errno.EIO
    assert err.filename == "/a" and err.gfs_code == "UNAVAILABLE"  # type: ignore[attr-defined]
    assert os_error(GFSError("ENOTEMPTY")).errno == errno.ENOTEMPTY
    assert master_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert master_url("gfs://h:1/a/b.csv") == "http://h:1"
    assert master_url("http://h:2/") == "http://h:2"
    assert master_url("h:1, gfs://h:2/x,http://h:1") == "http://h:1,http://h:2"


def test_connect_to_nothing_is_connection_error() -> None:
    with socket.socket() as s:                # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError):
        gfsfs.connect(f"127.0.0.1:{port}", failover_timeout=1.0, request_timeout=2.0)


def test_namespace(fs: GFS) -> None:
    st = fs.mkdir("/a/b/c", parents=True)
    assert st.is_dir() and st.path == "/a/b/c" and st.name == "c"
    fs.mkdir("/a/b", exist_ok=True)
    with pytest.raises(FileExistsError):
        fs.mkdir("/a/b")
    with pytest.raises(FileNotFoundError):
        fs.mkdir("/x/y")                      # no parents
    fs.write_bytes("/a/f", b"hello")
    entries = fs.ls("/a")
    assert [(s.name, s.type) for s in entries] == [("b", "directory"), ("f", "file")]
    assert entries[1].size == 5 and entries[1].path == "/a/f" and entries[1].goal >= 1
    assert fs.listdir("a/") == ["b", "f"]                 # relative = from the root
    assert fs.stat("/a/f").size == 5 and fs.exists("/a/f") and not fs.exists("/a/nope")
    assert fs.isdir("/a") and not fs.isdir("/a/f")
    with pytest.raises(FileExistsError):
        fs.mkdir("/a/f", exist_ok=True)                   # exists, not a directory
    with pytest.raises(NotADirectoryError):
        fs.ls("/a/f")
    with pytest.raises(NotADirectoryError):
        fs.stat("/a/f/g")
    fs.rename("/a/f", "/a/b/g")
    assert fs.read_bytes("/a/b/g") == b"hello" and not fs.exists("/a/f")
    fs.write_bytes("/a/h", b"other")
    with pytest.raises(FileExistsError):
        fs.rename("/a/h", "/a/b/g", replace=False)
    fs.rename("/a/h", "/a/b/g")                           # replaces
    assert fs.read_bytes("/a/b/g") == b"other"


def test_errors(fs: GFS) -> None:
    with pytest.raises(FileNotFoundError) as info:
        fs.open("/missing")
    assert info.value.filename == "/missing" and info.value.errno == errno.ENOENT
    for op in (lambda: fs.read_bytes("/missing"), lambda: fs.stat("/d/missing"),
               lambda: fs.rm("/missing"), lambda: fs.ls("/missing"),
               lambda: fs.rename("/missing", "/x")):
        with pytest.raises(FileNotFoundError):
            op()
    fs.mkdir("/d")
    fs.write_bytes("/d/f", b"x")
    with pytest.raises(OSError) as full:
        fs.rm("/d")                                       # not empty, not recursive
    assert full.value.errno == errno.ENOTEMPTY
    with pytest.raises(OSError):
        fs.rmdir("/d")
    with pytest.raises(IsADirectoryError):
        fs.open("/d", "rb")
    with pytest.raises(FileExistsError):
        fs.open("/d/f", "xb")
    with pytest.raises(ValueError):
        fs.open("/d/f", "rw")


def test_rm_recursive(fs: GFS) -> None:
    fs.mkdir("/t/u/v", parents=True)
    for p in ("/t/1", "/t/u/2", "/t/u/v/3"):
        fs.write_bytes(p, p.encode())
    fs.mkdir("/t/empty")
    fs.rm("/t/empty")                                     # an empty dir needs no recursive
    fs.rm("/t/1")
    fs.rm("/t", recursive=True)
    assert fs.listdir("/") == []


def test_large_write_read_across_chunks(fs: GFS) -> None:
    data = pattern(3 * CS + 54321)
    with fs.open("/big", "wb") as f:
        for off in range(0, len(data), 100_000):          # not chunk-aligned writes
            f.write(data[off:off + 100_000])
    assert fs.stat("/big").size == len(data)
    assert fs.read_bytes("/big") == data
    assert fs.read_bytes("/big", CS - 10, CS + 10) == data[CS - 10:CS + 10]
    assert fs.read_bytes("/big", -5) == data[-5:]
    with fs.open("/big", "rb") as f:
        got = bytearray()
        while piece := f.read(300_000):
            got += piece
        assert bytes(got) == data
        f.seek(2 * CS - 3)
        assert f.read(6) == data[2 * CS - 3:2 * CS + 3] and f.tell() == 2 * CS + 3
        assert f.seek(-4, 2) == len(data) - 4 and f.read() == data[-4:]
    with fs.open("/big", "r+b") as f:                     # overwrite across a boundary
        f.seek(CS - 2)
        f.write(b"XXXX")
    assert fs.read_bytes("/big", CS - 3, CS + 3) == data[CS - 3:CS - 2] + b"XXXX" + data[CS + 2:CS + 3]


def test_text_modes_append_and_truncate(fs: GFS) -> None:
    with fs.open("/t.txt", "w") as f:
        f.write("één\n")
        f.writelines(["twee\n", "drie\n"])
    with fs.open("/t.txt", "r") as f:
        assert f.readlines() == ["één\n", "twee\n", "drie\n"]
    with fs.open("/t.txt", "a") as f:
        f.write("vier\n")
    assert fs.read_bytes("/t.txt").decode().splitlines()[-1] == "vier"
    with fs.open("/t.txt", "ab", buffering=0) as f:       # each write one record append
        assert f.tell() == fs.stat("/t.txt").size
        f.write(b"five\n")
        assert f.tell() == fs.stat("/t.txt").size
    assert fs.read_bytes("/t.txt").endswith(b"vier\nfive\n")
    with fs.open("/t.txt", "w") as f:                     # w truncates
        f.write("x")
    assert fs.read_bytes("/t.txt") == b"x"
    with fs.open("/t.txt", "r+b") as f:
        f.truncate(0)
    assert fs.stat("/t.txt").size == 0


def test_snapshot_and_setgoal(fs: GFS) -> None:
    fs.mkdir("/src")
    fs.write_bytes("/src/f", pattern(CS + 100))
    reply = fs.snapshot("/src", "/snap")
    assert reply["files"] == 1
    fs.write_bytes("/src/f", b"changed")                  # copy-on-write: the snapshot keeps it
    assert fs.read_bytes("/snap/f") == pattern(CS + 100)
    with pytest.raises(FileExistsError):
        fs.snapshot("/src", "/snap")
    assert fs.setgoal("/snap", 2, recursive=True)["goal"] == 2
    assert fs.stat("/snap/f").goal == 2


def test_threads_share_one_handle(fs: GFS) -> None:
    failures: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            data = pattern(200_000 + i, seed=i)
            fs.write_bytes(f"/w{i}", data)
            assert fs.read_bytes(f"/w{i}") == data
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert len(fs.listdir("/")) == 6


def test_closed_handle(cluster: Cluster) -> None:
    with gfsfs.connect(cluster.url) as fs:
        f = fs.open("/late", "wb")
        f.write(b"buffered")                  # still in f's buffer
    assert fs.closed and f.closed             # closing the handle closed (wrote back) f
    with pytest.raises(ValueError):
        fs.stat("/")
    with gfsfs.connect(cluster.url) as again:
        assert again.read_bytes("/late") == b"buffered"
    assert not client_threads()
    dropped = gfsfs.connect(cluster.url)      # never closed: its finalizer stops the thread
    dropped.write_bytes("/dropped", b"x")
    assert client_threads()
    del dropped
    gc.collect()
    for _ in range(50):
        if not client_threads():
            break
        time.sleep(0.1)
    assert not client_threads()


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("gfsfs-client")]
