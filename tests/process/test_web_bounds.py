"""The web page's data routes under bad conditions, against real daemons
(no mount needed):

- ``PUT /web/upload`` over ``[master] web_upload_max_bytes`` gets 413 TOOBIG,
  whether the size is declared up front or only shows while the body streams,
  and leaves nothing behind (no file, no temporary file, nothing in trash);
- ``GET /web/download`` with a replica at an unreachable address reads from
  another one, and with no replica reachable answers 503 UNAVAILABLE (JSON),
  not 500;
- a download whose chunks go bad after the 200 and the first bytes went out
  makes the HTTP client raise, instead of handing it a short body.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

from gfsfs.tools.localcluster import Cluster

from conftest import make_cluster

MIB = 1 << 20
WEB = {"X-GFS-Web": "1"}
LIMIT = 4 * MIB


@pytest.fixture
def small_uploads(tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(tmp_path, extra=[f"master.web_upload_max_bytes={LIMIT}"])
    try:
        c.start()
        yield c
    except BaseException:
        print(c.logs_text())
        raise
    finally:
        c.stop()


def _err(resp: httpx.Response) -> tuple[int, str]:
    assert resp.headers["content-type"] == "application/json", resp.text[:200]
    return resp.status_code, resp.json()["error"]["code"]


def _names(http: httpx.Client, path: str = "/") -> list[str]:
    return [e["name"] for e in http.get("/web/api/list", params={"path": path}).json()["entries"]]


def _trash_count(http: httpx.Client) -> int:
    return int(http.get("/web/api/cluster").json()["trash"]["count"])


def test_web_upload_over_the_limit_is_413_and_leaves_nothing(small_uploads: Cluster) -> None:
    with httpx.Client(base_url=small_uploads.url, timeout=60) as http:
        # declared too big: refused before anything is created
        r = http.put("/web/upload", params={"path": "/declared"}, content=os.urandom(LIMIT + 1),
                     headers=WEB)
        assert _err(r) == (413, "TOOBIG")

        # too big only as it streams (chunked, no Content-Length)
        def body() -> Iterator[bytes]:
            for _ in range(6):
                yield os.urandom(MIB)

        r = http.put("/web/upload", params={"path": "/streamed"}, content=body(), headers=WEB)
        assert _err(r) == (413, "TOOBIG")
        assert _names(http) == []               # no file, no .gfs-upload-* left
        assert _trash_count(http) == 0          # the partial one was purged too

        # at the limit: fine
        data = os.urandom(LIMIT)
        r = http.put("/web/upload", params={"path": "/fits"}, content=data, headers=WEB)
        assert r.status_code == 201, r.text
        assert http.get("/web/download", params={"path": "/fits"}).content == data
        assert _names(http) == ["fits"]


def _register_fake(http: httpx.Client, addr: str, chunks: list[list[int]]) -> None:
    """A chunkd that claims the file's chunks, at ``addr`` (nothing there)."""
    body = {"id": "fake", "addr": addr, "rack": "elsewhere", "capacity_bytes": 1 << 30,
            "used_bytes": 0, "free_bytes": 1 << 30, "chunks": chunks}
    r = http.post("/rpc/register", content=msgpack.packb(body),
                  headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.content


def test_web_download_with_unreachable_replicas(small_uploads: Cluster) -> None:
    c = small_uploads
    data = os.urandom(3 * MIB)
    with httpx.Client(base_url=c.url, timeout=60) as http:
        assert http.put("/web/upload", params={"path": "/f"}, content=data,
                        headers=WEB).status_code == 201
        info = http.get("/web/api/file", params={"path": "/f"}).json()
        _register_fake(http, "http://127.0.0.1:1",
                       [[ch["handle"], ch["version"]] for ch in info["chunks"]])
        info = http.get("/web/api/file", params={"path": "/f"}).json()
        assert all("fake" in ch["replicas"] for ch in info["chunks"]), info
        r = http.get("/web/download", params={"path": "/f"})
        assert r.status_code == 200 and r.content == data

        for d in c.servers:                     # now no replica answers at all
            d.stop()
        r = http.get("/web/download", params={"path": "/f"})
        assert _err(r) == (503, "UNAVAILABLE")
        assert http.get("/web/api/cluster").status_code == 200     # the master lives on


# replicas are corrupted on purpose
@pytest.mark.allow_errors
def test_web_download_failing_midway_is_an_error_in_the_client(tmp_path: Path) -> None:
    """24 chunks of 1 MiB; once the first bytes arrived, the chunks from 12 on
    are corrupted on every chunkd (in place: the master's client may hold
    their files open for short-circuit reads). The download cannot finish:
    httpx must raise, not return a short body with status 200."""
    c = make_cluster(tmp_path)
    size = 24 * MIB
    data = os.urandom(size)
    try:
        c.start()
        _download_spoiled_midway(c, data)
    except BaseException:
        print(c.logs_text())
        raise
    finally:
        c.stop()


def _download_spoiled_midway(c: Cluster, data: bytes) -> None:
    size = len(data)
    with httpx.Client(base_url=c.url, timeout=120) as http:
        assert http.put("/web/upload", params={"path": "/f"}, content=data,
                        headers=WEB).status_code == 201
        info = http.get("/web/api/file", params={"path": "/f"}).json()
        late = {ch["handle"] for ch in info["chunks"] if ch["index"] >= 12}
        got = bytearray()
        with pytest.raises(httpx.HTTPError) as e:
            with http.stream("GET", "/web/download", params={"path": "/f"}) as resp:
                assert resp.status_code == 200
                assert resp.headers["content-length"] == str(size)
                pieces = resp.iter_raw(1 << 16)
                got += next(pieces)
                spoiled = 0
                for f in (c.data / "chunks").glob("*/*.chunk"):
                    if int(f.stem, 16) in late:
                        with open(f, "r+b") as fh:
                            fh.write(b"\xff" * 4096)
                        spoiled += 1
                assert spoiled >= len(late)
                for piece in pieces:
                    got += piece
        print(f"download raised {type(e.value).__name__}: {e.value} after {len(got)} bytes")
        assert len(got) < size
        assert bytes(got) == data[:len(got)]
