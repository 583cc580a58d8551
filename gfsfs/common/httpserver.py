"""A lean HTTP/1.1 server on h11 and trio for the daemons' ASGI app (:class:`gfsfs.common.rpc.App`).

Why not hypercorn: hostile connections made its trio worker raise out of its
connection handler -- a websocket upgrade refused by the app, a body shorter
than its Content-Length followed by a half-close -- and one such exception
ended ``serve()`` and with it the whole master (issue 10). Here each
connection is one task whose failures end that connection only.

One connection, one task: requests are read with h11 and handed to the app
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
"""
from __future__ import annotations

import functools
import logging
import urllib.parse
from dataclasses import dataclass
from typing import Any

import h11
import msgpack
import trio

from gfsfs.common.errors import Code, GFSError

log = logging.getLogger(__name__)

RECV = 1 << 20                  # bytes per socket read
MAX_HEAD = 64 << 10             # request line + headers
DRAIN_BYTES = 256 << 10         # an unread request body dropped to keep the connection
DRAIN_SECONDS = 0.5
LINGER = 1.0                    # seconds to read and drop what a client still sends after an error


@dataclass(frozen=True)
class Limits:
    keep_alive: float = 30.0    # seconds for an idle connection's next request head
    graceful: float = 2.0       # seconds open requests get to finish at shutdown


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
                 server: Server | None = None) -> None:
        self.stream = stream
        self.app = app
        self.limits = limits
        self.owner = server if server is not None else Server()
        self.idle: trio.CancelScope | None = None     # while waiting for a request head
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        sock = stream.socket
        self.client = _addr(sock.getpeername())
        self.server = _addr(sock.getsockname())

    async def run(self) -> None:
        """Serve requests until the client leaves, misbehaves or idles."""
        self.owner.connections.add(self)
        try:
            while await self._one_request():
                self.h11.start_next_cycle()
        except (_Abort, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("connection from %s ended: %r", self.client, exc)
        except h11.ProtocolError as exc:
            log.debug("connection from %s: HTTP error %s", self.client, exc)
        except Exception:
            log.exception("connection from %s failed", self.client)
        finally:
            self.owner.connections.discard(self)
            with trio.CancelScope(shield=True):
                await self.stream.aclose()

    # ------------------------------------------------------------ requests

    async def _one_request(self) -> bool:
        """Read one request and answer it; whether the connection goes on."""
        try:
            if self.owner.closing:
                return False
            with trio.move_on_after(self.limits.keep_alive) as scope:
                self.idle = scope
                event = await self._next_event()
            self.idle = None
            if scope.cancelled_caught:
                return False
        except h11.RemoteProtocolError as exc:
            await self._refuse(exc.error_status_hint, Code.BADREQ, f"bad request: {exc}")
            return False
        if not isinstance(event, h11.Request):
            return False                    # ConnectionClosed
        if _wants_upgrade(event):
            await self._refuse(400, Code.NOROUTE, "protocol upgrades are not served")
            return False
        exchange = Exchange(self, event)
        await exchange.run()
        ok = self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
        if not ok:
            await self._linger()
        return ok

    async def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            self.h11.receive_data(await self.stream.receive_some(RECV))

    async def _refuse(self, status: int, code: Code, message: str) -> None:
        """A short error reply to a request the app never sees, then close."""
        if self.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):   # IDLE: a bad head
            return
        body = msgpack.packb(GFSError(code, message).to_wire(), use_bin_type=True)
        head = h11.Response(status_code=status, headers=[
            (b"content-type", b"application/msgpack"),
            (b"content-length", str(len(body)).encode()), (b"connection", b"close")])
        await self.stream.send_all(self.h11.send(head) + self.h11.send(h11.Data(data=body))
                                   + self.h11.send(h11.EndOfMessage()))
        await self._linger()

    async def _linger(self) -> None:
        """Half-close and drop what the client still sends for a moment, so our
        reply is read before the connection goes (not lost to a reset)."""
        try:
            await self.stream.send_eof()
            with trio.move_on_after(LINGER):
                while await self.stream.receive_some(RECV):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


class Exchange:
    """One request and its response: the ASGI ``receive``/``send`` pair."""

    def __init__(self, conn: Connection, req: h11.Request) -> None:
        self.conn = conn
        self.req = req
        self.head = req.method == b"HEAD"
        self.started = False
        self.ended = False
        self.pending = b""          # the response head, sent with the first body piece
        self.body_done = False

    def scope(self) -> dict[str, Any]:
        target = self.req.target
        raw_path, _, query = target.partition(b"?")
        return {"type": "http", "asgi": {"version": "3.0"},
                "http_version": self.req.http_version.decode("ascii", "replace"),
                "method": self.req.method.decode("ascii", "replace"), "scheme": "http",
                "path": urllib.parse.unquote(raw_path.decode("latin-1")), "raw_path": raw_path,
                "query_string": query, "root_path": "",
                "headers": [(k.lower(), v) for k, v in self.req.headers],
                "client": self.conn.client, "server": self.conn.server}

    async def run(self) -> None:
        try:
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
            return
        if not self.ended:
            raise _Abort("the app ended without finishing its response")

    async def receive(self) -> dict[str, Any]:
        if self.body_done:
            return {"type": "http.disconnect"}
        try:
            event = await self.conn._next_event()
        except (h11.RemoteProtocolError, trio.BrokenResourceError, OSError):
            self.body_done = True
            return {"type": "http.disconnect"}
        if isinstance(event, h11.Data):
            return {"type": "http.request", "body": bytes(event.data), "more_body": True}
        self.body_done = True
        if isinstance(event, h11.EndOfMessage):
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def _drain(self) -> bool:
        """Read and drop the rest of a request body the app answered without
        reading (a little of it, briefly); whether the request is complete."""
        seen = 0
        with trio.move_on_after(DRAIN_SECONDS):
            while not self.body_done and seen <= DRAIN_BYTES:
                msg = await self.receive()
                seen += len(msg.get("body", b""))
        return self.body_done and self.conn.h11.their_state is h11.DONE

    async def send(self, msg: dict[str, Any]) -> None:
        h = self.conn.h11
        if msg["type"] == "http.response.start":
            if self.started:
                raise _Abort("response started twice")
            self.started = True
            headers = [(bytes(k), bytes(v)) for k, v in msg.get("headers", [])]
            if not await self._drain():         # the client may not reuse the connection
                headers.append((b"connection", b"close"))
            self.pending = h.send(h11.Response(status_code=msg["status"], headers=headers))
            return
        if msg["type"] != "http.response.body" or not self.started or self.ended:
            raise _Abort(f"unexpected ASGI message {msg['type']!r}")
        body = b"" if self.head else msg.get("body", b"")
        try:
            out = self.pending + (h.send(h11.Data(data=body)) if body else b"")
            if not msg.get("more_body", False):
                out += h.send(h11.EndOfMessage())
                self.ended = True
        except h11.LocalProtocolError as exc:       # more or less than Content-Length
            raise _Abort(f"response body does not match its head: {exc}") from None
        self.pending = b""
        if out:
            await self.conn.stream.send_all(out)


def _wants_upgrade(req: h11.Request) -> bool:
    for name, value in req.headers:
        if name == b"upgrade" or (name == b"connection" and b"upgrade" in value.lower()):
            return True
    return False


def _addr(sockaddr: Any) -> tuple[str, int]:
    if isinstance(sockaddr, tuple) and len(sockaddr) >= 2:
        return str(sockaddr[0]), int(sockaddr[1])
    return str(sockaddr), 0


async def serve(app: Any, host: str, port: int, shutdown: trio.Event, limits: Limits = Limits(),
                *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``host:port`` until ``shutdown`` is set; ``task_status``
    gets the bound port. Open requests get ``limits.graceful`` seconds to end."""
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
            conn = Connection(stream, app, limits, state)
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
