"""A secured cluster of real daemons (issue 14): the cluster secret on every
request, chunk tokens at the chunkds (over HTTP and short-circuit), daemons
that will not start with a secret others can read."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio

import gfsfs
from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth.hmac import Signer
from gfsfs.common.rpc import Signing, call, make_http
from gfsfs.common.shortcircuit import FRAME, socket_name
from gfsfs.tools.localcluster import Cluster, python
from conftest import make_cluster

REFUSAL = {"error": {"code": "UNAUTHORIZED", "message": "authentication required"}}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("secured"), secure=True)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def post(url: str, name: str, body: dict[str, Any], headers: dict[str, str] | None = None
         ) -> httpx.Response:
    return httpx.post(f"{url}/rpc/{name}", content=msgpack.packb(body), headers=headers or {},
                      timeout=10)


def signed(secret: secrets.Secret, name: str, body: dict[str, Any]) -> dict[str, str]:
    return {"authorization": Signer(secret).header("POST", f"/rpc/{name}", msgpack.packb(body))}


def gfs(c: Cluster, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python(), "-m", "gfsfs.tools.cli", "--master", c.url, *args],
                          capture_output=True, text=True, timeout=60, env=env)


def test_the_client_library_with_the_secret_reads_and_writes(secured: Cluster) -> None:
    data = os.urandom(3 << 20)          # three chunks of the test size
    with gfsfs.connect(secured.url, secret_file=str(secured.secret_file),
                       short_circuit=False) as fs:
        with fs.open("/f", "wb") as f:
            f.write(data)
        with fs.open("/f", "rb") as f:
            assert f.read() == data
    with pytest.raises(Exception, match="UNAUTHORIZED|authentication"):
        gfsfs.connect(secured.url, secret_file="", request_timeout=5, failover_timeout=2)
    # the chunkds saw chunk tokens, not signatures, from the client
    seen = 0.0
    for server in secured.servers:
        metrics = httpx.get(f"{server.url}/metrics", headers={
            "authorization": Signer(secured.secret()).header("GET", "/metrics", b"")}).text
        seen += float(next(line for line in metrics.splitlines()
                           if line.startswith('gfs_auth_requests_total{how="token"}')).split()[-1])
    assert seen >= 4        # pushes, commits and reads of three chunks


def test_the_fast_rpc_path_refuses_unsigned_wrong_and_replayed_requests(secured: Cluster) -> None:
    assert post(secured.url, "statfs", {}).status_code == 401
    assert msgpack.unpackb(post(secured.url, "statfs", {}).content) == REFUSAL
    other = secrets.Secret.of(os.urandom(32))
    assert post(secured.url, "statfs", {}, signed(other, "statfs", {})).status_code == 401
    good = signed(secured.secret(), "statfs", {})
    assert post(secured.url, "statfs", {}, good).status_code == 200
    assert post(secured.url, "statfs", {}, good).status_code == 401      # the replay
    # a big body takes the server's other path: the same rules
    big = {"junk": b"x" * (2 << 20)}
    assert post(secured.url, "statfs", big).status_code == 401
    assert post(secured.url, "statfs", big, signed(secured.secret(), "statfs", big)).status_code \
        == 200


def test_a_fake_chunkd_cannot_register_nor_forge_heartbeats(secured: Cluster) -> None:
    other = secrets.Secret.of(os.urandom(32))
    body = {"id": "evil", "addr": "http://127.0.0.1:9", "rack": "r", "protocol": 1,
            "capacity_bytes": 1 << 40, "used_bytes": 0, "free_bytes": 1 << 40, "chunks": []}
    for headers in ({}, signed(other, "register", body)):
        resp = post(secured.url, "register", body, headers)
        assert (resp.status_code, msgpack.unpackb(resp.content)) == (401, REFUSAL)
    real = secured.servers[0].url
    beat = {"id": "chunk1", "addr": real, "chunks": [], "capacity_bytes": 0,
            "used_bytes": 0, "free_bytes": 0}
    assert post(secured.url, "heartbeat", beat, signed(other, "heartbeat", beat)).status_code \
        == 401
    listed = gfs(secured, "chunkd", "list", "--json", *secured.secret_sets())
    assert listed.returncode == 0, listed.stderr
    assert "evil" not in listed.stdout and listed.stdout.count('"chunk') >= 3


def test_no_byte_leaves_a_chunkd_without_a_token(secured: Cluster) -> None:
    with gfsfs.connect(secured.url, secret_file=str(secured.secret_file)) as fs:
        with fs.open("/t", "wb") as f:
            f.write(b"secret bytes" * 1000)
    cli = gfs(secured, "fileinfo", "/t", "--json", *secured.secret_sets())
    assert cli.returncode == 0, cli.stderr
    handle = int(__import__("json").loads(cli.stdout)["chunks"][0]["handle"])
    for server in secured.servers:
        resp = httpx.get(f"{server.url}/chunk/{handle}", params={"offset": 0, "length": 100})
        assert (resp.status_code, msgpack.unpackb(resp.content)) == (401, REFUSAL)
        assert b"secret" not in resp.content
        # short-circuit: the same refusal, and no file descriptors
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5)
        sock.connect(socket_name(server.url))
        raw = msgpack.packb({"handle": handle, "version": 1})
        sock.sendall(FRAME.pack(len(raw)) + raw)
        msg, fds, _, _ = socket.recv_fds(sock, 4096, 2)
        sock.close()
        assert fds == [] and b"UNAUTHORIZED" in msg


def test_gfs_without_the_secret_is_refused_clearly(secured: Cluster) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GFS_SECRET_FILE"}
    r = gfs(secured, "status", env=env)
    assert r.returncode == 1 and "UNAUTHORIZED" in r.stderr and "Traceback" not in r.stderr
    r = gfs(secured, "status", env={**env, "GFS_SECRET_FILE": str(secured.secret_file)})
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("daemon", ["master", "chunkd"])
def test_a_daemon_will_not_start_with_a_secret_others_can_read(daemon: str,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "secret"
    secrets.generate(path)
    path.chmod(0o644)
    args = ["--set", f"cluster.secret_file={str(path)!r}", "--set",
            f"{'master' if daemon == 'master' else 'chunk_server'}.log_dir={str(tmp_path)!r}"]
    if daemon == "master":
        args += ["--port", "0", "--data-dir", str(tmp_path / "m")]
    else:
        args += ["--id", "c1", "--set", f"chunk_server.data_dir={str(tmp_path / 'c')!r}"]
    r = subprocess.run([python(), "-m", daemon, *args], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2
    assert f"secret file {path} is readable or writable by others" in r.stderr
    assert "Traceback" not in r.stderr
    missing = [a.replace(str(path), str(tmp_path / "none")) for a in args]
    r = subprocess.run([python(), "-m", daemon, *missing], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2 and "does not exist" in r.stderr and "gfs secret init" in r.stderr


def test_a_rotated_secret_is_read_again_without_restarts(tmp_path: Path) -> None:
    """docs/security.md#rotating-the-secret, with no restart: the new key put
    first (signing) beside the old one, then the old one removed; every
    daemon follows within seconds, and the cluster keeps working."""
    import time
    from gfsfs.common.auth.private import write_private
    c = make_cluster(tmp_path, secure=True)
    try:
        c.start()
        old = c.secret()
        assert old is not None and c.secret_file is not None
        new = secrets.Secret.of(os.urandom(32))
        body: dict[str, Any] = {"ino": 1}

        def answered(secret: secrets.Secret) -> int:
            return post(c.url, "getattr", body, signed(secret, "getattr", body)).status_code

        write_private(c.secret_file, f"{new.keys[0].material.hex()}\n"
                                     f"{old.keys[0].material.hex()}\n")
        time.sleep(3)
        assert answered(new) == 200 and answered(old) == 200
        data = os.urandom(1 << 20)
        with gfsfs.connect(c.url, secret_file=str(c.secret_file), short_circuit=False) as fs:
            with fs.open("/rotated", "wb") as f:        # tokens of the new signing key
                f.write(data)
        write_private(c.secret_file, f"{new.keys[0].material.hex()}\n")
        time.sleep(3)
        assert answered(old) == 401 and answered(new) == 200
        time.sleep(2)                   # heartbeats signed with the new key still count
        report = msgpack.unpackb(post(c.url, "fsck", {}, signed(new, "fsck", {})).content)
        assert (report["chunkds_alive"], report["chunkds_dead"]) == (3, 0), report
        with gfsfs.connect(c.url, secret_file=str(c.secret_file), short_circuit=False) as fs:
            with fs.open("/rotated", "rb") as f:
                assert f.read() == data
    finally:
        c.stop()


# ------------------------------------------------- refused before the body is read

def raw_exchange(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send ``head`` and ``body`` (not the rest the head may announce) and read
    the reply until the server closes: within 5 s, or socket.timeout."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(head + body)
        reply = b""
        while piece := sock.recv(65536):
            reply += piece
            if b"\r\n\r\n" in reply and REFUSAL_BYTES in reply:
                break
        return reply


REFUSAL_BYTES = msgpack.packb(REFUSAL)


def rpc_head(name: str, length: int | None, auth: str | None = None) -> bytes:
    lines = [f"POST /rpc/{name} HTTP/1.1", "host: x", "content-type: application/msgpack"]
    lines.append(f"content-length: {length}" if length is not None
                 else "transfer-encoding: chunked")
    if auth:
        lines.append(f"authorization: {auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_an_unsigned_rpc_is_refused_before_its_body_is_read(secured: Cluster,
                                                            framing: str) -> None:
    length = 16_000_000 if framing == "length" else None    # the fast path, or ASGI's
    for url in (secured.url, secured.servers[0].url):
        start = b"\x82\xa3ino\x01" if length else b"f42400\r\n\x82\xa3ino\x01"   # 16 MB chunk
        reply = raw_exchange(url, rpc_head("lookup", length), start)
        status, _, rest = reply.partition(b"\r\n")
        assert status == b"HTTP/1.1 401 Unauthorized", reply[:200]
        head, _, body = rest.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower() and body == REFUSAL_BYTES


def test_a_signed_rpc_with_a_tampered_body_is_refused(secured: Cluster) -> None:
    auth = signed(secured.secret(), "statfs", {})["authorization"]
    tampered = msgpack.packb({"x": 1})
    reply = raw_exchange(secured.url, rpc_head("statfs", len(tampered), auth), tampered)
    assert reply.startswith(b"HTTP/1.1 401") and reply.endswith(REFUSAL_BYTES)
    # the same header with its own body is still good: a refused digest spends no nonce
    assert post(secured.url, "statfs", {}, {"authorization": auth}).status_code == 200


# ------------------------------------------------- replays across a restart

@pytest.fixture
def small_secured(tmp_path: Path) -> Iterator[Cluster]:
    c = make_cluster(tmp_path, chunkds=1, secure=True)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_a_request_signed_before_a_restart_is_refused_after_it(small_secured: Cluster) -> None:
    c = small_secured
    for restart, url in ((c.restart_master, lambda: c.url),
                         (lambda: c.restart_chunkd(0), lambda: c.servers[0].url)):
        name = "statfs" if restart == c.restart_master else "sync"
        captured = signed(c.secret(), name, {})
        first = post(url(), name, {}, captured)
        restart()
        replay = post(url(), name, {}, captured)
        assert (replay.status_code, msgpack.unpackb(replay.content)) == (401, REFUSAL)
        fresh = post(url(), name, {}, signed(c.secret(), name, {}))
        assert fresh.status_code == first.status_code != 401, fresh.content
    # a pooled client that talked to the old master talks to the new one
    trio.run(pooled_calls_across_a_restart, c)


async def pooled_calls_across_a_restart(c: Cluster) -> None:
    async with make_http(secret=c.secret()) as http:
        assert "chunk_size" in await call(http, c.url, "statfs", {})
        await trio.to_thread.run_sync(c.restart_master)
        assert "chunk_size" in await call(http, c.url, "statfs", {})
        async with httpx.AsyncClient(auth=Signing(Signer(c.secret()))) as streams:
            assert (await streams.get(f"{c.url}/metrics")).status_code == 200
def test_a_request_replayed_after_a_restart_is_refused(tmp_path: Path) -> None:
    """The nonces a daemon saw are not kept across its restart; a request
    signed before the new process started is refused instead."""
    c = make_cluster(tmp_path, chunkds=0, secure=True)
    try:
        c.start()
        secret = c.secret()
        assert secret is not None
        body: dict[str, Any] = {"ino": 1}
        captured = signed(secret, "getattr", body)
        assert post(c.url, "getattr", body, captured).status_code == 200
        assert post(c.url, "getattr", body, captured).status_code == 401    # a replay
        c.restart_master(kill=True)     # at once: no margin of seconds before start-up
        replayed = post(c.url, "getattr", body, captured)
        assert replayed.status_code == 401 and msgpack.unpackb(replayed.content) == REFUSAL
        assert post(c.url, "getattr", body, signed(secret, "getattr", body)).status_code == 200
    finally:
        c.stop()


def test_every_daemon_answers_an_unsigned_16_mb_announcement_at_once(secured: Cluster) -> None:
    """A caller without the secret cannot make a daemon read (and buffer) up
    to max_request_bytes: the 401 comes from the headers, at once, and the
    connection is closed; a signed request with a changed body is still
    refused once its body is read."""
    host, port = secured.url.split("//")[1].split(":")
    targets = [(host, int(port))] + [(d.url.split("//")[1].split(":")[0],
                                      int(d.url.rsplit(":", 1)[1])) for d in secured.servers]
    for addr in targets:
        with socket.create_connection(addr, timeout=5) as s:
            s.sendall(b"POST /rpc/lookup HTTP/1.1\r\nhost: x\r\ncontent-type: application/msgpack"
                      b"\r\ncontent-length: 16000000\r\n\r\n" + b"\x80" * 10)
            reply = b""
            while b"\r\n\r\n" not in reply:
                piece = s.recv(4096)            # the 5 s timeout: the body is not awaited
                if not piece:
                    break
                reply += piece
            assert reply.startswith(b"HTTP/1.1 401"), (addr, reply[:200])
            assert b"connection: close" in reply.lower(), reply[:300]
    secret = secured.secret()
    assert secret is not None
    body = {"parent": 1, "name": b"x"}
    headers = signed(secret, "lookup", body)
    r = post(secured.url, "lookup", {"parent": 1, "name": b"y"}, headers)   # another body
    assert r.status_code == 401 and msgpack.unpackb(r.content) == REFUSAL
