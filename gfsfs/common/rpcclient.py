"""The client side of msgpack RPCs: a small pool of HTTP/1.1 connections.

Every metadata operation is a chain of small ``POST /rpc/<name>`` calls, so the
cost of one call matters more than any other number in the client (issue 12).
httpcore's pool (what httpx uses) spends most of a loopback round trip in its
own machinery: an async lock and a cancel scope per step, request and response
models, pool bookkeeping. Here one call is: take an idle connection for the
address (or open one), one ``send_all`` of the request, read until the
parser (:mod:`gfsfs.common.http1`, httptools) has the whole response, put the
connection back. One deadline
covers the whole call.

A pooled connection is reused only while it has been idle for less than
:data:`KEEPALIVE` seconds (below the server's keep-alive, so the server does not
close it under us) and only if nothing is readable on it (a server that closed
it or sent garbage): the checks httpcore makes too. A request that fails is
never sent again here -- RPCs are not idempotent; the callers' retry policy
(:mod:`gfsfs.common.retry`) decides.

An ``https://`` address gets a :class:`trio.SSLStream` over the TCP stream,
its handshake within the connect timeout, verified with the pool's
``ssl_context`` (:func:`gfsfs.common.tls.client_context`; without one, the
system's CAs). A handshake that fails (a cert we do not trust, a server
that wants ours) is :class:`NotSent`: the request never left.
"""
from __future__ import annotations

import select
import ssl
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from typing import Any

import trio

from gfsfs.common.auth.hmac import Signer
from gfsfs.common.http1 import BadMessage, Data, End, Head, Parser, request_head

KEEPALIVE = 20.0        # seconds an idle connection is reused (the server keeps them 30 s)
RECV = 64 << 10
CONNECT_TIMEOUT = 5.0


class TransportError(Exception):
    """The call could not be made or its reply not read: no reply to decode."""


class NotSent(TransportError):
    """No connection could be made: the request was never sent."""


@dataclass
class _Conn:
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
    idle_since: float = 0.0
    sock: Any = None            # the TCP socket (under TLS too); None: the stream's

    def __post_init__(self) -> None:
        if self.sock is None:
            self.sock = self.stream.socket

    def reusable(self, now: float) -> bool:
        if now - self.idle_since >= KEEPALIVE:
            return False
        try:                         # poll, not select: descriptors past 1024 are common
            poller = select.poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            ready = poller.poll(0)
        except (OSError, ValueError):
            return False
        return not ready             # EOF, an error or unexpected bytes: not for another request


def _split(base_url: str) -> tuple[str, int, bytes, bool]:
    """(host, port, Host header, whether TLS) of ``http(s)://host:port``."""
    u = urllib.parse.urlsplit(base_url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise TransportError(f"not an http(s)://host:port URL: {base_url!r}")
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    return u.hostname, port, (u.netloc or f"{u.hostname}:{port}").encode(), tls


class RpcPool:
    """Idle connections per address, at most ``connections`` kept per address."""

    def __init__(self, connections: int = 64, local_address: str | None = None,
                 signer: Signer | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connections = connections
        self.local_address = local_address
        self.signer = signer
        self.ssl_context = ssl_context
        self.idle: dict[str, deque[_Conn]] = {}
        self.hosts: dict[str, tuple[str, int, bytes, bool]] = {}
        self.closed = False

    async def post(self, base_url: str, path: str, body: bytes, content_type: bytes,
                   timeout: float, token: str | None = None) -> tuple[int, bytes]:
        """``POST base_url + path``: (status, reply body). Raises
        :class:`TransportError` when no complete reply came within ``timeout``.
        Signed if the pool has a signer, unless it shows a chunk ``token``."""
        if self.closed:
            raise NotSent("the RPC pool is closed")
        with trio.move_on_after(timeout) as scope:
            conn = await self._take(base_url, min(CONNECT_TIMEOUT, timeout))
            try:
                status, reply, keep = await self._exchange(conn, base_url, path, body,
                                                           content_type, token)
            except BaseException:
                await _close(conn)
                raise
            if keep and not self.closed:
                self._give_back(base_url, conn)
            else:
                await _close(conn)
            return status, reply
        assert scope.cancelled_caught
        raise TransportError(f"no reply from {base_url}{path} within {timeout:g} s")

    async def _take(self, base_url: str, connect_timeout: float) -> _Conn:
        idle = self.idle.get(base_url)
        now = time.monotonic()
        while idle:
            conn = idle.pop()                   # the most recently used: warmest
            if conn.reusable(now):
                return conn
            await _close(conn)
        host, port, _, tls = self._host(base_url)
        try:
            with trio.fail_after(connect_timeout):
                tcp = await trio.open_tcp_stream(host, port, local_address=self.local_address)
                if not tls:
                    return _Conn(tcp)
                try:
                    stream = trio.SSLStream(tcp, self._ssl(), server_hostname=host,
                                            https_compatible=True)
                    await stream.do_handshake()
                except BaseException:
                    await _close(_Conn(tcp))
                    raise
                return _Conn(stream, sock=tcp.socket)
        except trio.BrokenResourceError as exc:        # the TLS handshake failed
            why = exc.__cause__ or "the server closed the connection"
            raise NotSent(f"TLS handshake with {base_url}: {why}") from None
        except (OSError, trio.TooSlowError) as exc:
            raise NotSent(f"connect to {base_url}: {type(exc).__name__}: {exc}") from None

    def _ssl(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context()
        return self.ssl_context

    def _host(self, base_url: str) -> tuple[str, int, bytes, bool]:
        host = self.hosts.get(base_url)
        if host is None:
            host = self.hosts[base_url] = _split(base_url)
        return host

    async def _exchange(self, conn: _Conn, base_url: str, path: str, body: bytes,
                        content_type: bytes, token: str | None) -> tuple[int, bytes, bool]:
        headers = [(b"host", self._host(base_url)[2]), (b"content-type", content_type),
                   (b"content-length", str(len(body)).encode())]
        if token:
            headers.append((b"x-gfs-token", token.encode("latin-1")))
        elif self.signer is not None:     # signed on its connection: never older than
            # the process that will read it (a daemon refuses what predates its start)
            headers.append((b"authorization",
                            self.signer.header("POST", path, body).encode("latin-1")))
        head = request_head(b"POST", path.encode(), headers)
        try:
            await conn.stream.send_all(head + body)
            status, reply, keep = await _read_reply(conn)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                BadMessage) as exc:
            raise TransportError(f"{base_url}{path}: {type(exc).__name__}: {exc}") from None
        if keep:
            conn.idle_since = time.monotonic()
        return status, reply, keep

    def _give_back(self, base_url: str, conn: _Conn) -> None:
        idle = self.idle.setdefault(base_url, deque())
        if len(idle) >= self.connections:
            idle.popleft().sock.close()
        idle.append(conn)

    async def aclose(self) -> None:
        self.closed = True
        conns = [c for idle in self.idle.values() for c in idle]
        self.idle.clear()
        for conn in conns:
            await _close(conn)


async def _read_reply(conn: _Conn) -> tuple[int, bytes, bool]:
    """(status, body, whether the connection may carry another request)."""
    parser = Parser(response=True)
    head: Head | None = None
    parts: list[bytes] = []
    while True:
        event = parser.next_event()
        if event is None:
            data = await conn.stream.receive_some(RECV)
            if not data:
                raise trio.BrokenResourceError("connection closed before the whole reply")
            parser.feed(data)
        elif isinstance(event, Head):
            if 100 <= event.status < 200:
                raise BadMessage(f"unexpected informational reply {event.status}")
            head = event
        elif isinstance(event, Data):
            parts.append(event.data)
        elif isinstance(event, End):
            assert head is not None
            keep = head.keep_alive and not parser.events and not parser.mid_message
            return head.status, b"".join(parts), keep


async def _close(conn: _Conn) -> None:
    with trio.CancelScope(shield=True):
        await conn.stream.aclose()
