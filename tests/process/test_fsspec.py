"""gfs:// through fsspec (gfsfs.client.fsspec_gfs) against a real cluster: fsspec's own
calls, then pandas (CSV) and pyarrow (Parquet) round trips by URL, files of a
few MiB so that they cross the test cluster's 1 MiB chunks."""
from __future__ import annotations

import configparser
import os
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from conftest import TEST_CHUNK_SIZE
from gfsfs.client.fsspec_gfs import GFSFileSystem
from gfsfs.tools.localcluster import ROOT, Cluster

pd = pytest.importorskip("pandas")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# The installed package's entry points may predate this module (an editable
# install is not re-read): register the class as the entry point would.
# test_entry_point_registers_gfs checks the entry point itself.
fsspec.register_implementation("gfs", GFSFileSystem, clobber=True)


@pytest.fixture
def cluster(module_cluster: Cluster) -> Cluster:
    return module_cluster


@pytest.fixture
def url(cluster: Cluster) -> Iterator[str]:
    """gfs://HOST:PORT of the cluster; the fsspec instances are closed after."""
    yield "gfs://" + cluster.url.split("://", 1)[1]
    for fs in list(GFSFileSystem._cache.values()):
        fs.close()
    GFSFileSystem.clear_instance_cache()


def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({
        "id": range(rows),
        "x": [i * 0.25 for i in range(rows)],
        "name": [f"row-{i:07d}-{'abc' * (i % 5)}" for i in range(rows)],
    })


def test_entry_point_registers_gfs(tmp_path: Path) -> None:
    """setup.cfg's fsspec.specs entry point, as an installed distribution
    would carry it, makes fsspec find gfs:// in a fresh interpreter."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    specs = cfg["options.entry_points"]["fsspec.specs"].strip()
    dist = tmp_path / "gfsfs_probe-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gfsfs-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(f"[fsspec.specs]\n{specs}\n")
    code = ("import fsspec, gfsfs.client.fsspec_gfs as m; "
            "assert fsspec.get_filesystem_class('gfs') is m.GFSFileSystem; "
            "fs, path = fsspec.core.url_to_fs('gfs://h:7/a/b.csv'); "
            "print(fs.master, path)")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["http://h:7", "/a/b.csv"]


def test_fsspec_calls(url: str) -> None:
    with fsspec.open(f"{url}/a/b.txt", "w") as f:      # makes /a (auto_mkdir)
        f.write("hello\n")
    fs, path = fsspec.core.url_to_fs(f"{url}/a/b.txt")
    assert isinstance(fs, GFSFileSystem) and path == "/a/b.txt"
    assert fs.cat_file("/a/b.txt") == b"hello\n"
    assert fs.cat_file(f"{url}/a/b.txt", start=1, end=3) == b"el"
    info = fs.info("/a/b.txt")
    assert info["type"] == "file" and info["size"] == 6 and info["name"] == "/a/b.txt"
    assert fs.info("/a")["type"] == "directory" and fs.isdir("/a") and fs.isfile("/a/b.txt")
    fs.pipe_file("/a/c.bin", b"\0" * 10)
    fs.makedirs("/a/d/e", exist_ok=True)
    assert fs.ls("/a", detail=False) == ["/a/b.txt", "/a/c.bin", "/a/d"]
    assert [e["type"] for e in fs.ls("/a")] == ["file", "file", "directory"]
    assert fs.find("/") == ["/a/b.txt", "/a/c.bin"]
    assert fs.unstrip_protocol("/a/b.txt") == f"{url}/a/b.txt"
    with fsspec.open(f"{url}/a/b.txt", "rt") as f:
        assert f.readline() == "hello\n"
    copy = pickle.loads(pickle.dumps(fs))          # as dask ships it to workers
    assert copy.cat_file("/a/b.txt") == b"hello\n"
    with pytest.raises(FileNotFoundError):
        fs.info("/a/nope")
    with pytest.raises(FileNotFoundError):
        fsspec.open(f"{url}/a/nope", "rb").open()
    with pytest.raises(FileExistsError):
        fs.pipe_file("/a/c.bin", b"x", mode="create")
    with pytest.raises(FileExistsError):
        fs.mkdir("/a/d")
    fs.mv("/a/c.bin", "/a/d/c.bin")
    fs.cp_file("/a/d/c.bin", "/a/copy.bin")
    assert fs.cat_file("/a/copy.bin") == b"\0" * 10 and not fs.exists("/a/c.bin")
    with pytest.raises(OSError):
        fs.rm("/a/d")                                   # not empty
    fs.rm("/a/d", recursive=True)
    fs.rm("/a/*.bin")                                   # a glob: fsspec expands it
    assert fs.ls("/a", detail=False) == ["/a/b.txt"]
    fs.rm_file("/a/b.txt")
    fs.rmdir("/a")
    assert fs.ls("/") == []


def test_pandas_csv_roundtrip(url: str) -> None:
    df = frame(80_000)                                  # ~3 MiB of CSV
    df.to_csv(f"{url}/data/x.csv", index=False)
    fs, _ = fsspec.core.url_to_fs(url)
    assert fs.info("/data/x.csv")["size"] > 2 * TEST_CHUNK_SIZE
    pd.testing.assert_frame_equal(pd.read_csv(f"{url}/data/x.csv"), df)


def test_parquet_roundtrip(url: str) -> None:
    df = frame(120_000)
    fs, _ = fsspec.core.url_to_fs(url)
    table = pa.Table.from_pandas(df, preserve_index=False)
    with pytest.raises(FileNotFoundError):                    # no auto-mkdir, as on a disk
        pq.write_table(table, "/pq/t.parquet", filesystem=fs)
    fs.makedirs("/pq")
    pq.write_table(table, "/pq/t.parquet", filesystem=fs, compression="none")
    assert fs.info("/pq/t.parquet")["size"] > 2 * TEST_CHUNK_SIZE
    assert pq.read_table("/pq/t.parquet", filesystem=fs).equals(table)
    df.to_parquet(f"{url}/pq/p.parquet", index=False)          # pandas by URL
    pd.testing.assert_frame_equal(pd.read_parquet(f"{url}/pq/p.parquet"), df)
