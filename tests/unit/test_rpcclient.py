"""The RPC client's pool (gfsfs/common/rpcclient.py) on real loopback sockets:
an idle connection is reused only while nothing is readable on it, also when
its descriptor number is past select()'s 1024 (a daemon with many chunk
files open), and a reply cut short is a TransportError, never a reply."""
from __future__ import annotations

import os
import time

import pytest
import trio

from gfsfs.common.rpcclient import RpcPool, TransportError, _Conn


async def _pair() -> tuple[trio.SocketListener, trio.SocketStream, trio.SocketStream]:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    return listener, client, await listener.accept()


@pytest.mark.parametrize("high_fd", [False, True])
def test_an_idle_connection_is_reusable_until_something_is_readable(high_fd: bool) -> None:
    async def main() -> None:
        held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100 if high_fd else 0)]
        try:
            listener, client, server = await _pair()
            assert (client.socket.fileno() > 1024) == high_fd
            conn = _Conn(client, idle_since=time.monotonic())
            assert conn.reusable(time.monotonic())
            await server.send_all(b"HTTP/1.1 200 OK\r\n")     # bytes nobody asked for
            await trio.sleep(0.05)
            assert not conn.reusable(time.monotonic())
            assert not _Conn(client, idle_since=time.monotonic() - 60).reusable(time.monotonic())
            for s in (client, server, listener):
                await s.aclose()
        finally:
            for fd in held:
                os.close(fd)
    trio.run(main)


def test_a_reply_cut_short_is_a_transport_error() -> None:
    async def main() -> None:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]

        async def half_reply() -> None:
            stream = await listener.accept()
            await stream.receive_some(65536)
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
            await stream.aclose()

        pool = RpcPool()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(half_reply)
            with pytest.raises(TransportError):
                await pool.post(f"http://127.0.0.1:{port}", "/rpc/x", b"\x80",
                                b"application/msgpack", 5.0)
        await pool.aclose()
        await listener.aclose()
    trio.run(main)
