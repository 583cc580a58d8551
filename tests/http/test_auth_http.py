"""Authentication at the HTTP edge, in process: every route of the master and
of a chunkd refuses a request without credentials with the same short 401;
the chunkd's data plane takes a chunk token instead of a signature, for its
chunk and its access only; chunkds forward pushes down the chain signed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from chunkd.api.server import ChunkServer
from chunkd.storage.store import MemoryChunkStore
from gfsfs.common.auth.hmac import Signer, Verifier
from gfsfs.common.auth.secret import Secret
from gfsfs.common.auth.tokens import READ, WRITE, TokenKeys
from gfsfs.common.config import ChunkServerConfig
from gfsfs.common.rpc import OPEN, Signing, pack, unpack
from test_protocol import served_apps

SECRET = Secret.of(b"s" * 32)
OTHER = Secret.of(b"o" * 32)
REFUSAL = {"error": {"code": "UNAUTHORIZED", "message": "authentication required"}}
ADDRS = ["http://cs1", "http://cs2", "http://cs3"]


def requests_for(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every RPC and route ``app`` serves but to anyone,
    plus one it does not. Open to anyone: an export session's open, the
    login, the logout, "who am I",
    and the page's shell and static files (no data in them); any other path
    under ``/`` is checked by the page's handler."""
    open_rpcs = {name for name in app.rpcs if app.rpc_access[name] == OPEN}
    assert open_rpcs <= {"session_open"}, open_rpcs      # its own checks: test_exports
    out = [("POST", f"/rpc/{name}") for name in sorted(app.rpcs) if name not in open_rpcs]
    open_routes = {prefix for method, prefix, _, access in app.routes if access == OPEN}
    assert open_routes <= {"/web/login", "/web/logout", "/web/api/session", "/web/static/",
                           "/"}, open_routes
    for method, prefix, _, access in app.routes:
        if access == OPEN and prefix != "/":
            continue
        path = prefix + ("1" if prefix.endswith("/") else "")
        out.append((method, path))
    return out + [("GET", "/no/such/route"), ("POST", "/rpc/no_such_rpc")]


@pytest.mark.parametrize("server", ["master", "chunkd"])
def test_every_route_without_credentials_is_401_and_nothing_else(server: str,
                                                                 tmp_path: Path) -> None:
    app = served_apps(tmp_path)[server]
    app.verifier = Verifier(SECRET)
    wrong = Signer(OTHER)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://x") as http:
            for method, path in requests_for(app):
                body = pack({"ino": 1, "handle": 1, "version": 1, "path": "/"})
                for headers in ({}, {"authorization": wrong.header(method, path, body)},
                                {"authorization": "Bearer nothing"},
                                {"x-gfs-token": "T1.forged"}, {"cookie": "gfs_session=x"},
                                {"authorization": "Bearer not-the-admin-token"}):
                    resp = await http.request(method, path, content=body, headers=headers)
                    assert resp.status_code == 401, (method, path, headers, resp.content)
                    if "x-gfs-token" in headers:    # refused by the handler's own check
                        assert unpack(resp.content)["error"]["code"] == "UNAUTHORIZED"
                        continue
                    assert unpack(resp.content) == REFUSAL, (method, path, headers)
                    assert set(resp.headers) <= {"content-type", "content-length", "connection"}
    trio.run(go)


def test_a_signed_request_is_served_and_a_replayed_one_refused(tmp_path: Path) -> None:
    app = served_apps(tmp_path)["master"]
    app.verifier = Verifier(SECRET)
    signer = Signer(SECRET)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://x") as http:
            body = pack({})
            headers = {"authorization": signer.header("POST", "/rpc/statfs", body)}
            first = await http.post("/rpc/statfs", content=body, headers=headers)
            assert first.status_code == 200 and "chunk_size" in unpack(first.content)
            again = await http.post("/rpc/statfs", content=body, headers=headers)
            assert again.status_code == 401
            changed = await http.post("/rpc/statfs", content=pack({"x": 1}),
                                      headers={"authorization": signer.header(
                                          "POST", "/rpc/statfs", body)})
            assert changed.status_code == 401
    trio.run(go)


class Chunkds:
    """Three secured chunkds on memory stores; they talk to each other signed,
    ``http`` (the test's client) signs nothing."""

    def __init__(self) -> None:
        cfg = ChunkServerConfig(push_buffer_ttl=30.0)
        self.keys = TokenKeys(SECRET)
        self.servers = [ChunkServer(MemoryChunkStore(), cfg, None, f"cs{i + 1}", addr)  # type: ignore[arg-type]
                        for i, addr in enumerate(ADDRS)]
        mounts: dict[str, httpx.AsyncBaseTransport] = {
            addr: httpx.ASGITransport(app=s.app) for addr, s in zip(ADDRS, self.servers)}
        self.peers = httpx.AsyncClient(mounts=mounts, timeout=5.0, auth=Signing(Signer(SECRET)))
        self.http = httpx.AsyncClient(mounts=mounts, timeout=5.0)
        for s in self.servers:
            s.http = self.peers
            s.app.verifier = Verifier(SECRET)
            s.tokens = TokenKeys(SECRET)

    async def rpc(self, addr: str, name: str, body: dict[str, Any], token: str | None = None,
                  signed: bool = False) -> tuple[int, Any]:
        http = self.peers if signed else self.http
        headers = {"x-gfs-token": token} if token else {}
        resp = await http.post(f"{addr}/rpc/{name}", content=pack(body), headers=headers)
        return resp.status_code, unpack(resp.content)


def run_chunkds(test: Any) -> None:
    async def main() -> None:
        c = Chunkds()
        async with c.http, c.peers:
            for addr in ADDRS:      # the master's order, signed
                assert await c.rpc(addr, "set_version", {"handle": 7, "version": 2,
                                                         "create": True}, signed=True) == (200, {})
            await test(c)
    trio.run(main)


def code(reply: Any) -> str:
    return str(reply["error"]["code"])


def test_a_write_token_pushes_and_commits_down_the_chain() -> None:
    async def go(c: Chunkds) -> None:
        write = c.keys.issue(7, 2, WRITE)
        data = b"0123456789" * 20000
        resp = await c.http.put(f"{ADDRS[0]}/data/ab12", content=data,
                                headers={"x-gfs-chain": ",".join(ADDRS[1:]), "x-gfs-token": write})
        assert resp.status_code == 200, resp.content        # forwarded by cs1, signed
        body = {"handle": 7, "version": 2, "offset": 0, "data_id": "ab12",
                "secondaries": ADDRS[1:], "sync": True}
        assert await c.rpc(ADDRS[0], "commit", body, token=write) == (200, {"length": len(data)})
        read = c.keys.issue(7, 2, READ)
        for addr in ADDRS:
            got = await c.http.get(f"{addr}/chunk/7", params={"offset": 0, "length": 10},
                                   headers={"x-gfs-token": read})
            assert got.status_code == 200 and got.content == data[:10]
        assert await c.rpc(ADDRS[0], "sync", {"handles": [7]}, token=write) == (200, {})
    run_chunkds(go)


def test_the_data_plane_refuses_a_missing_wrong_or_weak_token() -> None:
    async def go(c: Chunkds) -> None:
        read, other = c.keys.issue(7, 2, READ), c.keys.issue(8, 2, WRITE)
        foreign = TokenKeys(OTHER).issue(7, 2, WRITE)
        for token in (None, other, foreign, "T1.garbage"):
            got = await c.http.get(f"{ADDRS[0]}/chunk/7", params={"offset": 0, "length": 1},
                                   headers={"x-gfs-token": token} if token else {})
            assert got.status_code == 401, token
        # a read token neither pushes nor commits nor truncates nor syncs
        resp = await c.http.put(f"{ADDRS[0]}/data/ab", content=b"x", headers={"x-gfs-token": read})
        assert resp.status_code == 401
        body = {"handle": 7, "version": 2, "offset": 0, "data": b"x", "secondaries": []}
        for name, req in (("commit", body), ("append", {**body, "chunk_size": 1 << 20}),
                          ("truncate", {"handle": 7, "version": 2, "length": 0}),
                          ("sync", {"handles": [7]})):
            for token in (read, other if name != "sync" else read, foreign, None):
                status, reply = await c.rpc(ADDRS[0], name, req, token=token)
                assert (status, code(reply)) == (401, "UNAUTHORIZED"), (name, token)
        # apply (primary -> secondary) and the master's orders take no token at all
        write = c.keys.issue(7, 2, WRITE)
        for name in ("apply", "set_version", "delete", "replicate", "copy", "set_versions"):
            status, reply = await c.rpc(ADDRS[1], name, {"handle": 7, "version": 9}, token=write)
            assert status == 401, name
        assert c.servers[0].store.length(7) == 0 and c.servers[1].store.version(7) == 2
    run_chunkds(go)


def test_a_write_token_of_an_older_version_is_fenced() -> None:
    async def go(c: Chunkds) -> None:
        old = c.keys.issue(7, 1, WRITE)         # before the lease that made version 2
        status, reply = await c.rpc(ADDRS[0], "commit", {
            "handle": 7, "version": 2, "offset": 0, "data": b"late", "secondaries": []},
            token=old)
        assert (status, code(reply)) == (409, "STALE")
        assert c.servers[0].store.length(7) == 0
    run_chunkds(go)


def test_an_open_route_runs_as_no_one_and_a_signed_one_as_the_cluster() -> None:
    from gfsfs.common.rpc import App, Request, Response, caller

    app = App("t")
    app.verifier = Verifier(SECRET)

    async def who(req: Request) -> Response:
        c = caller()
        return Response.msgpack({"signed": c.signed, "session": c.session})
    app.route("GET", "/open", who, access=OPEN)
    app.route("GET", "/closed", who)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://x") as http:
            # a signed request first, on the same client: nothing carries over
            signed = await http.get("/closed", headers={
                "authorization": Signer(SECRET).header("GET", "/closed", b"")})
            assert unpack(signed.content) == {"signed": True, "session": None}
            opened = await http.get("/open")
            assert unpack(opened.content) == {"signed": False, "session": None}
    trio.run(go)
