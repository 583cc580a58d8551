"""Hostile and broken requests against real daemons (issue 10): every one gets
a 4xx with an error code (or a correct answer), never a 500, and no daemon
dies; plus a seeded fuzz run of every route (gfsfs/tools/fuzz.py)."""
from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

from gfsfs.tools import fuzz
from gfsfs.common import validate
from gfsfs.common.errors import GFSError
from gfsfs.tools.localcluster import ROOT, Cluster, Mount

from conftest import _failed, make_cluster

FUZZ_COUNT = int(os.environ.get("GFS_FUZZ_COUNT", "3000"))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One cluster for the module; its daemons' logs are checked at the end."""
    c = make_cluster(tmp_path_factory.mktemp("hostile"),
                     extra=["master.body_timeout=2.0", "chunk_server.body_timeout=2.0"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


def rpc(base: str, name: str, body: object) -> tuple[int, dict]:
    resp = httpx.post(f"{base}/rpc/{name}", content=msgpack.packb(body), timeout=20)
    return resp.status_code, msgpack.unpackb(resp.content, strict_map_key=False)


def code(base: str, name: str, body: object) -> tuple[int, str]:
    status, reply = rpc(base, name, body)
    return status, reply["error"]["code"] if status >= 400 else "ok"


def register(c: Cluster, cid: str, addr: str = "http://127.0.0.9:7", cap: int = 1 << 40,
             chunks: list | None = None) -> tuple[int, str]:
    return code(c.url, "register", {"id": cid, "addr": addr, "capacity_bytes": cap,
                                    "used_bytes": 0, "free_bytes": cap, "chunks": chunks or []})


@pytest.mark.parametrize("addr", ["http://127.0.0.1:5000", "http://h", "https://a.b-c.d:1",
                                  "http://[::1]:65535", "http://localhost:80"])
def test_address_validator_accepts(addr: str) -> None:
    assert validate.check_addr(addr) == addr


@pytest.mark.parametrize("addr", ["http://127.0.0.1:65536", "http://h:0", "http://h:1,http://g:2",
                                  "http://[::1", "http://[zz]:1", "http://-h:1", "ftp://h:1",
                                  "http://h:1/", "http://u@h:1", "http://h:1?x", "http://", "",
                                  "http://" + "a" * 300 + ":1", 5, None])
def test_address_validator_refuses(addr: object) -> None:
    with pytest.raises(GFSError) as e:
        validate.check_addr(addr)
    assert e.value.code == "BADREQ"


def test_capacities_cannot_overflow_the_wire(hostile: Cluster) -> None:
    assert register(hostile, "big0", cap=(1 << 64) - 1) == (400, "EINVAL")
    assert register(hostile, "big0", cap=-1) == (400, "EINVAL")
    # each at the maximum: the sum of 20 is past 2**64. These fake chunkds send
    # no heartbeats and are dead after 3 missed ones (1.5 s): on a loaded
    # machine registering 20 can take longer, so register them all again and
    # look until one statfs sees them all alive at once.
    for _ in range(10):
        for i in range(20):
            assert register(hostile, f"big{i}", cap=1 << 60) == (200, "ok")
        status, st = rpc(hostile.url, "statfs", {})
        assert status == 200 and st["total_bytes"] <= (1 << 63) - 1
        if st["total_bytes"] == (1 << 63) - 1:
            break
    assert st["total_bytes"] == (1 << 63) - 1
    assert rpc(hostile.url, "cluster_status", {})[0] == 200
    assert httpx.get(f"{hostile.url}/status").status_code == 200
    assert httpx.get(f"{hostile.url}/metrics").status_code == 200


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), 1e300, -1.0, "x"])
def test_non_finite_and_out_of_range_floats_are_refused(hostile: Cluster, value: object) -> None:
    status, err = code(hostile.url, "trash_purge", {"older_than": value})
    assert 400 <= status < 500, err


@pytest.mark.parametrize("addr", ["http://127.0.0.1:65536", "http://127.0.0.1:99999",
                                  "http://127.0.0.1:0", "http://127.0.0.1:1,http://x:2",
                                  "ftp://h:1", "http://h:1/p", "http://u@h:1", "http:// h:1"])
def test_one_address_validator_everywhere(hostile: Cluster, addr: str) -> None:
    assert register(hostile, "addr-test", addr=addr) == (400, "BADREQ")
    chunkd = hostile.servers[0].url
    assert code(chunkd, "sync", {"handles": [], "relay": addr}) == (400, "BADREQ")
    assert code(chunkd, "replicate", {"handle": 1 << 40, "version": 1, "source": addr}) == \
        (400, "BADREQ")
    assert code(chunkd, "truncate", {"handle": 1 << 40, "version": 1, "length": 0,
                                     "secondaries": [addr]})[0] == 400
    if "," not in addr:             # the chain header is a list of addresses by design
        resp = httpx.put(f"{chunkd}/data/abcd", content=b"x", headers={"x-gfs-chain": addr})
        assert resp.status_code == 400


def test_ids_of_the_kernels_no_id_are_refused(hostile: Cluster) -> None:
    for field in ("uid", "gid"):
        body = {"parent": 1, "name": f"noid-{field}".encode(), "mode": 0o100644,
                "uid": 0, "gid": 0, field: (1 << 32) - 1}
        assert code(hostile.url, "create", body) == (400, "EINVAL")
    st, attr = rpc(hostile.url, "create", {"parent": 1, "name": b"owned", "mode": 0o100644,
                                           "uid": 0, "gid": 0})
    assert st == 200
    assert code(hostile.url, "setattr", {"ino": attr["ino"], "uid": (1 << 32) - 1}) == \
        (400, "EINVAL")
    assert code(hostile.url, "lookup", {"parent": 1, "name": b"owned",
                                        "ctx": {"uid": (1 << 32) - 1, "gid": 0}}) == \
        (400, "EINVAL")


def test_a_version_no_grant_explains_is_refused(hostile: Cluster, tmp_path: Path) -> None:
    """A report of v2**64-1 (or v+2) is refused, never adopted: the chunk stays writable."""
    m = Mount(hostile.url, tmp_path / "mnt", hostile.logs / "mount-versions.out")
    m.start()
    try:
        f = m.mountpoint / "versioned"
        f.write_bytes(b"a" * 1000)
        ino = os.stat(f).st_ino
        st, info = rpc(hostile.url, "fileinfo", {"ino": ino})
        chunk = info["chunks"][0]
        handle, version = chunk["handle"], chunk["version"]
        assert register(hostile, "liar", chunks=[[handle, (1 << 63) - 1]]) == (200, "ok")
        assert code(hostile.url, "report_chunks", {"id": "liar", "added": [[handle, version + 2]]}) \
            == (200, "ok")
        st, info = rpc(hostile.url, "fileinfo", {"ino": ino})
        assert info["chunks"][0]["version"] == version
        assert "liar" not in {r["id"] for r in info["chunks"][0]["replicas"]}
        with open(f, "r+b") as fh:              # still writable
            fh.write(b"b" * 10)
        assert f.read_bytes() == b"b" * 10 + b"a" * 990
        metrics = httpx.get(f"{hostile.url}/metrics").text
        assert "gfs_master_refused_versions_total 2" in metrics or \
            "gfs_master_refused_versions 2" in metrics
    finally:
        m.stop()


def test_websocket_and_other_upgrades_get_a_4xx(hostile: Cluster) -> None:
    ws = {"upgrade": "websocket", "connection": "Upgrade",
          "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13"}
    for base in (hostile.url, hostile.servers[0].url):
        for path in ("/status", "/rpc/statfs", "/", "/nope"):
            resp = httpx.get(f"{base}{path}", headers=ws)
            assert resp.status_code == 400
            assert msgpack.unpackb(resp.content)["error"]["code"] == "NOROUTE"
        resp = httpx.get(f"{base}/status", headers={"upgrade": "h2c", "connection": "Upgrade"})
        assert resp.status_code == 400
    assert httpx.get(f"{hostile.url}/status").status_code == 200


def test_a_peer_answering_without_an_error_body_is_unavailable_not_500(
        hostile: Cluster) -> None:
    """A relay to something that is not a gfsfs daemon (here: a plain HTTP
    server answering 404 with no msgpack)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def answer() -> None:
        for _ in range(2):
            conn, _addr = srv.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        status, err = code(hostile.servers[0].url, "sync",
                           {"handles": [], "relay": f"http://127.0.0.1:{port}"})
        assert (status, err) == (404, "NOROUTE")
        status, err = code(hostile.servers[0].url, "replicate",
                           {"handle": 1 << 40, "version": 1, "source": f"http://127.0.0.1:{port}"})
        assert status < 500 or err == "UNAVAILABLE", err
    finally:
        srv.close()


def _short_body(host: str, port: int, path: str, method: str = "POST") -> bytes:
    with socket.create_connection((host, port), timeout=20) as s:
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n"
                  .encode() + b"\x81")
        s.shutdown(socket.SHUT_WR)
        return s.recv(200)


def test_short_bodies_then_half_close_several_at_once(hostile: Cluster) -> None:
    host, port = "127.0.0.1", int(hostile.url.rsplit(":", 1)[1])
    cport = int(hostile.servers[0].url.rsplit(":", 1)[1])
    out: list[bytes] = []
    jobs = [(port, "/rpc/lookup", "POST"), (port, "/web/upload?path=/x", "PUT"),
            (cport, "/data/abcd", "PUT"), (cport, "/rpc/commit", "POST")] * 4
    threads = [threading.Thread(target=lambda j=j: out.append(_short_body(host, j[0], j[1], j[2])))
               for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(out) == len(jobs)
    assert all(o.startswith(b"HTTP/1.1 4") for o in out), out
    for base in (hostile.url, hostile.servers[0].url):
        assert httpx.get(f"{base}/status").status_code == 200


def test_a_body_that_never_arrives_times_out(hostile: Cluster) -> None:
    """15 requests announcing more than they send: each is answered 408 and
    closed within the configured body_timeout (2 s here), none lingers."""
    targets = [(hostile.url, "/rpc/lookup"), (hostile.servers[0].url, "/data/abcd")]
    socks = []
    for i in range(15):
        base, path = targets[i % 2]
        host, port = base.removeprefix("http://").rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=30)
        method = "PUT" if path.startswith("/data") else "POST"
        s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nab"
                  .encode())
        socks.append(s)
    start = time.monotonic()
    for s in socks:
        head = s.recv(200)
        assert head.startswith(b"HTTP/1.1 408"), head
        while s.recv(65536):            # then the server closes
            pass
        s.close()
    assert time.monotonic() - start < 15


def test_fuzz_every_route(hostile: Cluster, tmp_path: Path,
                          request: pytest.FixtureRequest) -> None:
    """A seeded fuzz run (GFS_FUZZ_COUNT requests): no 5xx but UNAVAILABLE from
    relays to absent peers, every error with a code, daemons alive, no
    traceback in their logs, and a file written before it unchanged."""
    m = Mount(hostile.url, tmp_path / "mnt", hostile.logs / "mount-fuzz.out")
    m.start()
    try:
        data = os.urandom(3 << 20)
        (m.mountpoint / "before").write_bytes(data)
        tally = fuzz.run(hostile.url, [d.url for d in hostile.servers], seed=7,
                         count=FUZZ_COUNT)
        print(tally.summary())
        assert tally.failures == [], tally.failures[:20]
        assert not [k for k, n in tally.counts.items() if k[1] >= 500 and k[1] != 503]
        problems = fuzz.log_problems(hostile.logs)
        assert problems == [], problems[:20]
        fd = os.open(m.mountpoint / "before", os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        assert hashlib.sha256((m.mountpoint / "before").read_bytes()).digest() == \
            hashlib.sha256(data).digest()
    finally:
        if _failed(request):
            print(hostile.logs_text())
        m.stop()


def test_closed_connections_do_not_linger_in_close_wait(hostile: Cluster) -> None:
    """Clients that leave -- after a full request, mid-body, mid-head -- are
    closed on the server's side at once (no CLOSE-WAIT socket stays)."""
    port = int(hostile.url.rsplit(":", 1)[1])
    for i in range(12):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall([b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
                   b"POST /rpc/statfs HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n\x80",
                   b"GET /sta"][i % 3])
        time.sleep(0.05)
        s.close()
    deadline = time.monotonic() + 5
    while True:
        out = subprocess.run(["ss", "-tanH", "state", "close-wait", f"sport = :{port}"],
                             capture_output=True, text=True, check=True).stdout
        if not out.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert out.strip() == ""


@pytest.mark.parametrize("raw", [b"BLAH\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n",
                                 b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
                                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40])
def test_malformed_http_gets_400_with_a_code(hostile: Cluster, raw: bytes) -> None:
    """A bad request line, no Host, a negative Content-Length, a TLS hello."""
    for base in (hostile.url, hostile.servers[0].url):
        host, port = base.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(raw)
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400"), reply
        assert msgpack.unpackb(body)["error"]["code"] == "BADREQ"


def test_shutdown_does_not_wait_for_idle_keep_alive_connections(tmp_path: Path) -> None:
    """A daemon told to stop closes idle connections at once (it waited the
    whole graceful period, 2 s per daemon, for clients' pooled connections)."""
    c = make_cluster(tmp_path, chunkds=1)
    try:
        c.start()
        with httpx.Client() as http:        # keeps its connections open
            for base in (c.url, c.servers[0].url):
                for _ in range(3):
                    assert http.get(f"{base}/status").status_code == 200
            for d in (c.servers[0], c.master):
                start = time.monotonic()
                d.stop()
                assert time.monotonic() - start < 1.5, d.name
    finally:
        c.stop()


def test_a_taken_port_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = str(taken.getsockname()[1])
    py = [sys.executable, "-m"]
    try:
        for name, argv in (
                ("master", py + ["master", "--host", "127.0.0.1", "--port", port,
                                 "--data-dir", str(tmp_path / "m"),
                                 "--set", f"master.log_dir={str(tmp_path)!r}"]),
                ("chunkd", py + ["chunkd", "--id", "c1", "--host", "127.0.0.1", "--port", port,
                                 "--data-dir", str(tmp_path / "c"), "--master", "http://127.0.0.1:1",
                                 "--set", f"chunk_server.log_dir={str(tmp_path)!r}"])):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert out.returncode == 1, (name, out.stdout, out.stderr)
            assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
            assert "Traceback" not in out.stdout + out.stderr
    finally:
        taken.close()


def survived(tally: fuzz.Tally, c: Cluster) -> None:
    """A fuzz run's verdict: no failure, no 5xx but UNAVAILABLE, no traceback."""
    print(tally.summary())
    assert tally.failures == [], tally.failures[:20]
    assert not [k for k, n in tally.counts.items() if k[1] >= 500 and k[1] != 503]
    problems = fuzz.log_problems(c.logs)
    assert problems == [], problems[:20]


def test_fuzz_a_secured_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The same fuzz against daemons that want the cluster secret: signed
    hostile requests reach the handlers and get no 5xx; the one in ten sent
    unsigned gets 401; no traceback; the daemons keep answering."""
    c = make_cluster(tmp_path, secure=True,
                     extra=["master.body_timeout=2.0", "chunk_server.body_timeout=2.0"])
    try:
        c.start()
        tally = fuzz.run(c.url, [d.url for d in c.servers], seed=11, count=FUZZ_COUNT // 2,
                         secret=c.secret())
        survived(tally, c)
        assert sum(n for k, n in tally.counts.items() if k[1] == 401) > FUZZ_COUNT // 40
    finally:
        if _failed(request):
            print(c.logs_text())
        c.stop()


def test_fuzz_through_an_export_session(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The fuzz signed by a mount's export session (docs/security.md#exports)
    instead of the secret: every request passes the export guard first, and
    nothing it is sent makes a 5xx or a traceback."""
    from gfsfs.common.auth.session import session_secret
    exports = tmp_path / "exports.toml"
    exports.write_text('[[export]]\nname = "fuzz"\nfrom = "127.0.0.1"\npath = "/"\n')
    c = make_cluster(tmp_path, secure=True,
                     extra=["master.body_timeout=2.0", "chunk_server.body_timeout=2.0",
                            f"master.exports_file={str(exports)!r}"])
    try:
        c.start()
        opened = httpx.post(f"{c.url}/rpc/session_open", timeout=10,
                            content=msgpack.packb({"path": "/"}))
        assert opened.status_code == 200, opened.content
        reply = msgpack.unpackb(opened.content)
        tally = fuzz.run(c.url, [d.url for d in c.servers], seed=12, count=FUZZ_COUNT // 4,
                         secret=session_secret(reply["ticket"], reply["key"]))
        survived(tally, c)
        # most hostile requests go where a session may not (401); some reach the handlers
        assert sum(n for k, n in tally.counts.items() if k[1] == 200) >= 10
    finally:
        if _failed(request):
            print(c.logs_text())
        c.stop()
