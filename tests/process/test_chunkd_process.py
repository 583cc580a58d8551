"""Three real chunkd processes on loopback, no master (it is unreachable):
a chained push, a commit at the primary, reads from every replica, and a
restart that comes back on the same port with its chunk."""
from __future__ import annotations

import os
from pathlib import Path

import httpx

from gfsfs.tools.localcluster import Daemon, python
from gfsfs.common.rpc import pack, unpack

HANDLE = 77


def chunkd(i: int, tmp: Path) -> Daemon:
    argv = [python(), "-m", "chunkd", "--id", f"cs{i}", "--host", "127.0.0.1", "--port", "0",
            "--data-dir", str(tmp / "data"), "--master", "http://127.0.0.1:1",
            "--set", f"chunk_server.log_dir={str(tmp / 'logs')!r}",
            "--set", "chunk_server.reserve_bytes=0"]
    return Daemon(f"cs{i}", argv, tmp / "logs" / f"cs{i}.out")


def rpc(http: httpx.Client, url: str, name: str, body: dict[str, object]) -> object:
    resp = http.post(f"{url}/rpc/{name}", content=pack(body))
    reply = unpack(resp.content)
    assert resp.status_code == 200, reply
    return reply


def test_three_chunkds_chain_commit_read_restart(tmp_path: Path) -> None:
    servers = [chunkd(i, tmp_path) for i in (1, 2, 3)]
    data = os.urandom((6 << 20) + 123)       # bigger than one in-memory read piece
    try:
        for d in servers:
            d.start(timeout=20)
        urls = [d.url for d in servers]
        with httpx.Client(timeout=20) as http:
            for url in urls:
                rpc(http, url, "set_version", {"handle": HANDLE, "version": 1, "create": True})
            resp = http.put(f"{urls[0]}/data/c0ffee", content=data,
                            headers={"x-gfs-chain": ",".join(urls[1:])})
            assert resp.status_code == 200 and unpack(resp.content) == {"length": len(data)}
            assert rpc(http, urls[0], "commit", {
                "handle": HANDLE, "version": 1, "offset": 0, "data_id": "c0ffee",
                "secondaries": urls[1:], "sync": True}) == {"length": len(data)}
            for url in urls:
                got = http.get(f"{url}/chunk/{HANDLE}",
                               params={"offset": 0, "length": 8 << 20, "version": 1})
                assert got.status_code == 200 and got.content == data, url

            old_url = servers[1].url
            servers[1].stop()
            assert servers[1].proc is not None and servers[1].proc.returncode == 0
            servers[1].start(timeout=20)
            assert servers[1].url == old_url
            got = http.get(f"{old_url}/chunk/{HANDLE}",
                           params={"offset": 1000, "length": 5000, "version": 1})
            assert got.status_code == 200 and got.content == data[1000:6000]
            status = unpack(http.get(f"{old_url}/status").content)
            assert status["id"] == "cs2" and status["chunks"] == 1
    except BaseException:
        for d in servers:
            print(f"===== {d.name} =====\n{d.log_tail()}")
        raise
    finally:
        for d in servers:
            d.stop()
