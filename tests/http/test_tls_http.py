"""TLS on the daemons' HTTP server (gfsfs/common/httpserver.py) and clients
(the RPC pool, httpx), in-process on loopback with throwaway certs: RPCs and
streams work over https, peers are verified against [tls] ca, a plain-HTTP
client gets a plain 400, and no bad handshake (garbage, a stranger's cert, a
client that never finishes) hurts the server."""
from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import trio

from gfsfs.common import rpc, tls
from gfsfs.common.config import TLSConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.httpserver import Limits, serve
from gfsfs.common.rpc import App, Request, Response
from tlskit import PKI, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _cfg(pki: PKI, mutual: bool = False) -> TLSConfig:
    return TLSConfig(cert=str(pki.cert), key=str(pki.key), ca=str(pki.ca),
                     require_client_cert=mutual)


def _app() -> App:
    app = App("test")

    async def echo(req: dict[str, object]) -> dict[str, object]:
        return {"echo": req}

    async def chunk(req: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(4):
                yield b"x" * 300_000
        return Response(200, body(), rpc.OCTETS)

    app.rpc("echo", echo)
    app.route("GET", "/data", chunk)
    return app


Test = Callable[[str], Awaitable[None]]


def _served(server_ctx: ssl.SSLContext | None, test: Test,
            limits: Limits = Limits()) -> None:
    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(lambda task_status: serve(
                _app(), "127.0.0.1", 0, shutdown, limits, tls=server_ctx,
                task_status=task_status))
            try:
                with trio.fail_after(20):
                    await test(f"https://127.0.0.1:{port}")
            finally:
                shutdown.set()
    trio.run(main)


async def _echo(url: str, ctx: ssl.SSLContext | None) -> object:
    async with rpc.make_http(timeout=5.0, tls=ctx) as http:
        return await rpc.call(http, url, "echo", {"n": 1})


def test_rpcs_and_streams_over_tls(pki: PKI) -> None:
    cfg = _cfg(pki)

    async def test(url: str) -> None:
        async with rpc.make_http(timeout=5.0, tls=tls.client_context(cfg)) as http:
            seen = set()
            for i in range(3):           # one pooled connection, reused
                assert await rpc.call(http, url, "echo", {"i": i}) == {"echo": {"i": i}}
                seen |= {id(c) for idle in http.rpc_pool.idle.values() for c in idle}
            assert len(seen) == 1 and sum(len(c) for c in http.rpc_pool.idle.values()) == 1
            resp = await http.get(f"{url}/data")
            assert resp.status_code == 200 and resp.content == b"x" * 1_200_000
    _served(tls.server_context(cfg), test)


def test_a_plain_http_client_gets_a_plain_400(pki: PKI) -> None:
    async def test(url: str) -> None:
        plain = url.replace("https://", "http://")
        with pytest.raises(GFSError) as e:
            await _echo(plain, None)
        assert e.value.code == Code.BADREQ and "https://" in e.value.message
        assert await _echo(url, tls.client_context(_cfg(pki))) == {"echo": {"n": 1}}
    _served(tls.server_context(_cfg(pki)), test)


def test_a_server_from_another_ca_is_not_trusted(pki: PKI) -> None:
    stranger = TLSConfig(cert=str(pki.other_cert), key=str(pki.other_key), ca=str(pki.other_ca))

    async def test(url: str) -> None:
        for ctx in (tls.client_context(_cfg(pki)), None):     # our CA; the system's
            with pytest.raises(GFSError) as e:
                await _echo(url, ctx)
            assert e.value.code == Code.UNAVAILABLE and e.value.unsent
            assert "certificate verify failed" in e.value.message
        async with httpx.AsyncClient(verify=tls.client_context(_cfg(pki))) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"{url}/data")
    _served(tls.server_context(stranger), test)


def test_mutual_tls_refuses_clients_without_a_cert_of_the_ca(pki: PKI) -> None:
    cfg = _cfg(pki, mutual=True)
    no_cert = TLSConfig(ca=str(pki.ca))
    stranger = dataclasses.replace(no_cert, cert=str(pki.other_cert), key=str(pki.other_key))

    async def test(url: str) -> None:
        for bad in (no_cert, stranger):
            with pytest.raises(GFSError) as e:
                await _echo(url, tls.client_context(bad))
            assert e.value.code == Code.UNAVAILABLE
        assert await _echo(url, tls.client_context(cfg)) == {"echo": {"n": 1}}
    _served(tls.server_context(cfg), test)


def test_garbage_and_stalled_handshakes_end_only_their_connection(pki: PKI) -> None:
    cfg = _cfg(pki)

    async def test(url: str) -> None:
        port = int(url.rsplit(":", 1)[1])
        ctx = tls.client_context(cfg)
        garbage = [b"\x16\x03\x01\x00\x05hello", b"\x16\x03\x03\xff\xff" + b"\0" * 5000,
                   b"\x00\x01\x02\x03", b"\x80" * 100]
        for data in garbage:
            s = await trio.open_tcp_stream("127.0.0.1", port)
            await s.send_all(data)
            with trio.fail_after(5):     # the server ends it
                while await s.receive_some(65536):
                    pass
            await s.aclose()
        stalled = await trio.open_tcp_stream("127.0.0.1", port)      # never says a word
        half = await trio.open_tcp_stream("127.0.0.1", port)
        await half.send_all(b"\x16\x03\x01")                         # a third of a record
        assert await _echo(url, ctx) == {"echo": {"n": 1}}
        for s in (stalled, half):         # closed at the handshake limit
            with trio.fail_after(5):
                assert await s.receive_some(100) == b""
            await s.aclose()
        assert await _echo(url, ctx) == {"echo": {"n": 1}}
    _served(tls.server_context(cfg), test, Limits(handshake=0.5))


def test_https_with_the_config_empty_means_the_system_cas(pki: PKI) -> None:
    assert tls.client_context(TLSConfig()) is None
    assert tls.server_context(TLSConfig()) is None
    assert tls.scheme(TLSConfig()) == "http" and tls.scheme(_cfg(pki)) == "https"


def test_broken_pem_files_are_config_errors_naming_the_key(pki: PKI, tmp_path: Path) -> None:
    from gfsfs.common.config import ConfigError
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"\[tls\] cert"):
        tls.server_context(TLSConfig(cert=str(junk), key=str(pki.key)))
    with pytest.raises(ConfigError, match=r"\[tls\] cert"):    # a key that is not cert's
        tls.server_context(TLSConfig(cert=str(pki.cert), key=str(pki.other_key)))
    with pytest.raises(ConfigError, match=r"\[tls\] ca"):
        tls.client_context(TLSConfig(ca=str(junk)))
