"""A lean HTTP/1.1 server on trio for the daemons' ASGI app
(:class:`gfsfs.common.rpc.App`); requests parsed by httptools
(:mod:`gfsfs.common.http1`), which replaced h11 here for speed (issue 12).

Why not hypercorn: hostile connections made its trio worker raise out of its
connection handler -- a websocket upgrade refused by the app, a body shorter
than its Content-Length followed by a half-close -- and one such exception
ended ``serve()`` and with it the whole master (issue 10). Here each
connection is one task whose failures end that connection only.

One connection, one task: requests are parsed and handed to the app
one at a time (HTTP/1.1 keep-alive, no pipelining of app calls); the app's
``receive`` and ``send`` read and write the socket directly, in that task.

Bounds:
- the request head (line + headers, at most ``MAX_HEAD`` bytes) must arrive
  within ``keep_alive`` seconds of the previous response (or of the accept):
  idle and slow-header connections are closed;
- the body's deadlines are the app's (:meth:`gfsfs.common.rpc.Request._next`);
- a response body that fails midway aborts the connection, so the client sees
  an error rather than a short body that looks whole;
- ``Upgrade`` requests (WebSocket, h2c) get 400 NOROUTE: nothing here speaks
  another protocol.

TLS (``serve(..., tls=context)``, docs/security.md#tls): each accepted socket
is wrapped in a :class:`trio.SSLStream` and its handshake must end within
``Limits.handshake`` seconds. A handshake that fails (garbage, a client cert
the context refuses, a client that verifies us and gives up) ends that
connection only, logged at DEBUG. A client that speaks plain HTTP to a TLS
port gets a plain 400 BADREQ saying to use https:// (its first byte is a
letter, never a TLS record's 0x16), then the connection is closed.
"""
from __future__ import annotations

import functools
import logging
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

import msgpack
import trio

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.http1 import (MAX_HEAD, BadMessage, BodyFramer, Data, End, Event, Head, Parser,
                                response_head)

log = logging.getLogger(__name__)

RECV = 1 << 20                  # bytes per socket read
MIN_BODY_RATE = 256 << 10       # bytes/s a request body must average (beyond its timeout)
DRAIN_BYTES = 256 << 10         # an unread request body dropped to keep the connection
DRAIN_SECONDS = 0.5
LINGER = 1.0                    # seconds to read and drop what a client still sends after an error


@dataclass(frozen=True)
class Limits:
    keep_alive: float = 30.0    # seconds for an idle connection's next request head
    graceful: float = 2.0       # seconds open requests get to finish at shutdown
    handshake: float = 10.0     # seconds a TLS handshake may take


class _Abort(Exception):
    """End the connection now (no clean end of the response)."""


class ListenError(Exception):
    """The server cannot listen where it was told (port taken, address not ours)."""


def run_reporting(run: Any) -> ListenError | None:
    """``run()``; the :class:`ListenError` it ended with (out of trio's
    exception groups), so a daemon can say why it cannot start, not dump a
    traceback."""
    failure: list[ListenError] = []
    try:
        run()
    except* ListenError as group:
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup):     # nurseries nest groups
            exc = exc.exceptions[0]
        failure.append(exc)                             # type: ignore[arg-type]
    return failure[0] if failure else None


class AbortResponse(Exception):
    """Raised by an app whose response cannot be finished (a streamed body
    whose source failed): the connection is reset, quietly -- the app logged why."""


class Server:
    """The open connections of one :func:`serve`, so that shutdown closes the
    idle ones at once and gives only requests in progress ``graceful`` seconds."""

    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self.closing = False

    def close_idle(self) -> None:
        self.closing = True
        for conn in list(self.connections):
            if conn.idle is not None:
                conn.idle.cancel()


class Connection:
    def __init__(self, stream: trio.SocketStream, app: Any, limits: Limits,
                 server: Server | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.stream: trio.abc.HalfCloseableStream | trio.SSLStream[Any] = stream
        self.app = app
        self.limits = limits
        self.tls = tls
        self.scheme = "http" if tls is None else "https"
        self.owner = server if server is not None else Server()
        self.idle: trio.CancelScope | None = None     # while waiting for a request head
        self.parser = Parser(max_head=MAX_HEAD)
        self.eof = False
        sock = stream.socket
        self.client = _addr(sock.getpeername())
        self.server = _addr(sock.getsockname())

    async def run(self) -> None:
        """Serve requests until the client leaves, misbehaves or idles."""
        self.owner.connections.add(self)
        try:
            if self.tls is not None and not await self._start_tls(self.tls):
                return
            while await self._one_request():
                pass
        except (_Abort, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("connection from %s ended: %r", self.client, exc.__cause__ or exc)
        except BadMessage as exc:
            log.debug("connection from %s: HTTP error %s", self.client, exc)
        except Exception:
            log.exception("connection from %s failed", self.client)
        finally:
            self.owner.connections.discard(self)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    # ------------------------------------------------------------ TLS

    async def _start_tls(self, ctx: ssl.SSLContext) -> bool:
        """Wrap the socket in TLS and shake hands (within ``handshake``
        seconds, cancelled at shutdown); whether to go on serving."""
        raw = self.stream
        assert isinstance(raw, trio.SocketStream)
        with trio.move_on_after(self.limits.handshake) as scope:
            self.idle = scope
            first = await raw.receive_some(RECV)
            if not first:                           # gone before a word
                return False
            if first[:1].isalpha():                 # "GET ...": plain HTTP
                self.idle = None
                await self._refuse(400, Code.BADREQ,
                                   "this server speaks TLS: use an https:// URL")
                return False
            self.stream = trio.SSLStream(_Replay(raw, first), ctx, server_side=True,
                                         https_compatible=True)
            await self.stream.do_handshake()
        self.idle = None
        if scope.cancelled_caught:
            log.debug("connection from %s: no TLS handshake within %g s", self.client,
                      self.limits.handshake)
            return False
        return True

    # ------------------------------------------------------------ requests

    async def _one_request(self) -> bool:
        """Read one request and answer it; whether the connection goes on."""
        try:
            if self.owner.closing:
                return False
            with trio.move_on_after(self.limits.keep_alive) as scope:
                self.idle = scope
                event = await self.next_event()
            self.idle = None
            if scope.cancelled_caught:
                return False
        except BadMessage as exc:
            await self._refuse(exc.status, Code.BADREQ, f"bad request: {exc}")
            return False
        if not isinstance(event, Head):
            return False                    # the client closed the connection
        if event.upgrade:
            await self._refuse(400, Code.NOROUTE, "protocol upgrades are not served")
            return False
        exchange = Exchange(self, event)
        await exchange.run()
        ok = exchange.ended and exchange.body_done and exchange.keep_alive
        if not ok:
            await self._linger()
        return ok

    async def next_event(self) -> Event | None:
        """The next parsed event; None at the client's EOF (mid-message or not:
        :attr:`Parser.mid_message` tells). Raises :class:`BadMessage`."""
        while True:
            event = self.parser.next_event()
            if event is not None:
                return event
            if self.eof or self.parser.upgraded:
                return None
            data = await self.stream.receive_some(RECV)
            if not data:
                self.eof = True
            self.parser.feed(data)

    async def _refuse(self, status: int, code: Code, message: str) -> None:
        """A short error reply to a request the app never sees (or that failed
        before its response began), then close."""
        body = msgpack.packb(GFSError(code, message).to_wire(), use_bin_type=True)
        head = response_head(status, [(b"content-type", b"application/msgpack"),
                                      (b"content-length", str(len(body)).encode()),
                                      (b"connection", b"close")])
        await self.stream.send_all(head + body)
        await self._linger()

    async def _linger(self) -> None:
        """Half-close and drop what the client still sends for a moment, so our
        reply is read before the connection goes (not lost to a reset). TLS
        cannot half-close: there the client's close ends the wait."""
        try:
            if not isinstance(self.stream, trio.SSLStream):
                await self.stream.send_eof()
            with trio.move_on_after(LINGER):
                while await self.stream.receive_some(RECV):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


class Exchange:
    """One request and its response: the ASGI ``receive``/``send`` pair."""

    def __init__(self, conn: Connection, req: Head) -> None:
        self.conn = conn
        self.req = req
        self.head = req.method == b"HEAD"
        self.keep_alive = req.keep_alive
        self.started = False
        self.ended = False
        self.pending = b""          # the response head, sent with the first body piece
        self.body_done = False
        self.framer: BodyFramer | None = None

    def scope(self) -> dict[str, Any]:
        target = self.req.target
        raw_path, _, query = target.partition(b"?")
        return {"type": "http", "asgi": {"version": "3.0"},
                "http_version": self.req.http_version.decode("ascii", "replace"),
                "method": self.req.method.decode("ascii", "replace"), "scheme": self.conn.scheme,
                "path": urllib.parse.unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
                "query_string": query, "root_path": "",
                "headers": self.req.headers,
                "client": self.conn.client, "server": self.conn.server}

    async def run(self) -> None:
        try:
            length = self._small_rpc()
            if length is not None:
                await self._fast_rpc(length)
            else:
                await self.conn.app(self.scope(), self.receive, self.send)
        except _Abort:
            raise
        except AbortResponse as exc:
            raise _Abort(str(exc)) from None
        except Exception:
            log.exception("%s %r failed in the app", self.req.method, self.req.target)
            if self.started:
                raise _Abort("the app failed during its response") from None
            await self.conn._refuse(500, Code.INTERNAL, "the app failed")
            self.keep_alive = False
            return
        if not self.ended:
            raise _Abort("the app ended without finishing its response")

    # ------------------------------------------------- small RPCs, no ASGI

    def _small_rpc(self) -> int | None:
        """The body length of a ``POST /rpc/<name>`` the app answers on its
        fast path (:meth:`gfsfs.common.rpc.App.answer_rpc`); None for any
        other request (chunked, too big, another route, another app)."""
        req, app = self.req, self.conn.app
        if req.method != b"POST" or not req.target.startswith(b"/rpc/") \
                or not hasattr(app, "answer_rpc"):
            return None
        raw = req.get(b"content-length")
        if raw is None or not raw.isdigit() or int(raw) > app.max_rpc_body:
            return None
        return int(raw)

    async def _fast_rpc(self, length: int) -> None:
        app = self.conn.app
        path = urllib.parse.unquote(self.req.target.partition(b"?")[0].decode("latin-1"))
        early = app.refuse_early(path, self.req.target.decode("latin-1"),
                                 _header(self.req, b"authorization"),
                                 _header(self.req, b"x-gfs-token"), peer=self.conn.client[0]) \
            if hasattr(app, "refuse_early") else None
        if early is not None:           # refused from its headers: its body is never read
            self.keep_alive = False
            resp = early
        else:
            try:
                raw = await self._small_body(length, app.body_timeout)
            except GFSError as exc:     # stalled or cut short: answer and close
                self.keep_alive = False
                resp = app.answer_error("POST", path, exc)
            else:
                resp = await app.answer_rpc(path, raw, self.req.target.decode("latin-1"),
                                            _header(self.req, b"authorization"),
                                            _header(self.req, b"x-gfs-token"),
                                            peer=self.conn.client[0])
        await self._send_fast(resp)

    async def _send_fast(self, resp: Any) -> None:
        headers = [(b"content-type", resp.content_type.encode()),
                   (b"content-length", str(len(resp.body)).encode())]
        headers += [(k.encode(), v.encode()) for k, v in resp.headers.items()]
        self.started = True
        head = await self._start(resp.status, headers)
        self.ended = True
        await self.conn.stream.send_all(head + resp.body)

    async def _small_body(self, length: int, timeout: float) -> bytes:
        """The whole body, within ``timeout`` per piece and ``timeout`` plus
        its length at MIN_BODY_RATE in all (as :meth:`Request._next`)."""
        conn, parts = self.conn, []
        deadline = trio.current_time() + timeout + length / MIN_BODY_RATE
        while True:
            event = conn.parser.next_event()
            if event is None:
                with trio.move_on_at(min(deadline, trio.current_time() + timeout)) as scope:
                    try:
                        event = await conn.next_event()
                    except (BadMessage, trio.BrokenResourceError, OSError):
                        event = None
                if scope.cancelled_caught:
                    self.body_done = True
                    raise GFSError(Code.TIMEOUT, f"request body stalled ({timeout:g} s for a "
                                                 f"piece, {MIN_BODY_RATE >> 10} KiB/s at least)")
                if event is None:
                    break
            if isinstance(event, Data):
                parts.append(event.data)
            elif isinstance(event, End):
                self.body_done = True
                return b"".join(parts)
            else:
                break
        self.body_done = True
        raise GFSError(Code.BADREQ, "request body incomplete: the client closed the connection")

    async def receive(self) -> dict[str, Any]:
        if self.body_done:
            return {"type": "http.disconnect"}
        try:
            event = await self.conn.next_event()
        except (BadMessage, trio.BrokenResourceError, OSError):
            event = None
        if isinstance(event, Data):
            return {"type": "http.request", "body": event.data, "more_body": True}
        self.body_done = True
        if isinstance(event, End):
            return {"type": "http.request", "body": b"", "more_body": False}
        self.keep_alive = False
        return {"type": "http.disconnect"}

    async def _drain(self) -> bool:
        """Read and drop the rest of a request body the app answered without
        reading (a little of it, briefly); whether the request is complete."""
        seen = 0
        with trio.move_on_after(DRAIN_SECONDS):
            while not self.body_done and seen <= DRAIN_BYTES:
                msg = await self.receive()
                seen += len(msg.get("body", b""))
        return self.body_done and self.keep_alive

    async def send(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "http.response.start":
            if self.started:
                raise _Abort("response started twice")
            self.started = True
            self.pending = await self._start(msg["status"], msg.get("headers", []))
            return
        if msg["type"] != "http.response.body" or not self.started or self.ended:
            raise _Abort(f"unexpected ASGI message {msg['type']!r}")
        assert self.framer is not None
        try:
            out = self.pending + self.framer.piece(msg.get("body", b""))
            if not msg.get("more_body", False):
                out += self.framer.end()
                self.ended = True
        except ValueError as exc:       # more or less than Content-Length
            raise _Abort(f"response body does not match its head: {exc}") from None
        self.pending = b""
        if out:
            await self.conn.stream.send_all(out)

    async def _start(self, status: int, raw: list[tuple[bytes, bytes]]) -> bytes:
        """The response head; how its body will be framed."""
        headers = [(bytes(k).lower(), bytes(v)) for k, v in raw]
        if not self.body_done and not await self._drain():   # the client may not reuse it
            self.keep_alive = False
        length = None
        for k, v in headers:
            if k == b"connection" and b"close" in v.lower():
                self.keep_alive = False
            elif k == b"content-length":
                length = int(v)
        chunked = length is None and self.req.http_version == b"1.1"
        if length is None and not chunked:
            self.keep_alive = False         # HTTP/1.0: the body ends with the connection
        if chunked and not self.head:
            headers.append((b"transfer-encoding", b"chunked"))
        if not self.keep_alive and all(k != b"connection" for k, _ in headers):
            headers.append((b"connection", b"close"))
        self.framer = BodyFramer(length, chunked, head_only=self.head or status in (204, 304))
        return response_head(status, headers)


class _Replay(trio.abc.HalfCloseableStream):
    """``stream`` whose first ``receive_some`` gives back ``first``: the bytes
    read to tell a TLS handshake from plain HTTP."""

    def __init__(self, stream: trio.SocketStream, first: bytes) -> None:
        self.stream = stream
        self.first = first
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.first:
            data, self.first = self.first, b""
            await trio.lowlevel.checkpoint()
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.stream.send_eof()

    async def aclose(self) -> None:
        await self.stream.aclose()


def _header(req: Head, name: bytes) -> str | None:
    value = req.get(name)
    return None if value is None else value.decode("latin-1")


def _addr(sockaddr: Any) -> tuple[str, int]:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return str(sockaddr), 0


async def serve(app: Any, host: str, port: int, shutdown: trio.Event, limits: Limits = Limits(),
                *, tls: ssl.SSLContext | None = None,
                task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown`` is set; ``task_status``
    gets the bound port. Open requests get ``limits.graceful`` seconds to end.
    ``tls``: serve HTTPS with this server context (:mod:`gfsfs.common.tls`)."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
    except OSError as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if port == 0:                   # several addresses would get several ports
        for extra in listeners[1:]:
            await extra.aclose()
        listeners = listeners[:1]
    bound = listeners[0].socket.getsockname()[1]

    state = Server()

    async def handler(stream: trio.SocketStream) -> None:
        try:
            conn = Connection(stream, app, limits, state, tls)
        except OSError as exc:          # gone before we looked (getpeername: ENOTCONN)
            log.debug("connection gone at accept: %s", exc)
            with trio.CancelScope(shield=True):
                await stream.aclose()
            return
        await conn.run()

    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accept:
            accept.start_soon(functools.partial(trio.serve_listeners, handler, listeners,
                                                handler_nursery=connections))
            task_status.started(bound)
            await shutdown.wait()
            accept.cancel_scope.cancel()
        state.close_idle()
        connections.cancel_scope.deadline = trio.current_time() + limits.graceful
