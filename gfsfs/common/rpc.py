"""msgpack-over-HTTP plumbing shared by the master and chunkd (server side) and
the client library (client side).

Server side: :class:`App` is a small ASGI application (served by
:mod:`gfsfs.common.httpserver`, h11 on trio). Control messages are ``POST /rpc/<name>`` with a msgpack map body and a
msgpack map reply; handlers are plain ``async def handler(req: dict) -> dict``.
Other routes (chunk data, the web page, /metrics) are registered with
:meth:`App.route` and get a :class:`Request` they can stream from.

Every failure becomes ``{"error": {"code", "message"}}`` with the status from
:mod:`gfsfs.common.errors`; an unexpected exception is logged and answered with 500
INTERNAL, and the daemon keeps serving.
"""
from __future__ import annotations

import contextvars
import logging
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgpack
import trio

from gfsfs.common.auth import hmac as auth_hmac
from gfsfs.common.auth import tokens as auth_tokens
from gfsfs.common.auth.secret import Secret
from gfsfs.common.auth.session import PREFIX as SESSION_PREFIX
from gfsfs.common.errors import Code, GFSError, code_for_status
# MIN_BODY_RATE: bytes/s a request body must average (beyond body_timeout)
from gfsfs.common.httpserver import MIN_BODY_RATE, AbortResponse, Limits, serve
from gfsfs.common.retry import TRANSPORT_ERRORS, unavailable
from gfsfs.common.rpcclient import RpcPool, TransportError

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"
MSGPACK_BYTES = MSGPACK.encode()
OCTETS = "application/octet-stream"
# seconds an idle pooled connection is reused: below the server's keep-alive
# (httpserver.Limits.keep_alive), so a client never sends on one the server is closing
KEEPALIVE = 20.0

RpcHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# Who may call a route or RPC (App.rpc, App.route; docs/security.md). With no
# cluster secret configured (App.verifier None) every request is let in.
CLUSTER = "cluster"     # signed with the cluster secret (daemons, mounts, the CLI)
SESSION = "session"     # signed with the secret, or by a mount's export session (App.session_key)
SESSION_ADMIN = "session+admin"     # SESSION, or the admin token (a gfs CLI RPC a mount makes too)
CHUNK = "chunk"         # signed, or holding a chunk token the handler checks (require_chunk)
WEB = "web"             # signed, or a web session (App.web_session), or the admin token
ADMIN = "admin"         # signed, or the admin token (App.bearer): the gfs CLI's RPCs, /metrics
OPEN = "open"           # anyone (the login page)


@dataclass(frozen=True)
class Caller:
    """How the request being served proved itself: ``signed`` with the
    cluster secret, or only ``token`` (a chunk token, not yet checked against
    a chunk), or a web ``session`` (its role; ``bearer``: proven by the admin
    token in an ``Authorization: Bearer`` header, not by a cookie), or a
    mount's export session (``mount``: its ticket, the key id it signed
    with; master.exports applies the export's rules)."""
    signed: bool = False
    token: str | None = None
    session: str | None = None
    bearer: bool = False
    mount: str | None = None
    peer: str = ""              # the client's address (set for OPEN routes)


TRUSTED = Caller(signed=True)
CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("gfsfs_caller", default=TRUSTED)


def caller() -> Caller:
    """The credentials of the request this task is serving."""
    return CALLER.get()


def require_chunk(keys: auth_tokens.TokenKeys | None, handle: int, access: str,
                  version: int | None = None) -> None:
    """A CHUNK handler's check: a signed caller may do anything; anyone else
    needs a token for ``handle`` with ``access`` (UNAUTHORIZED, or STALE when
    it expired). A server with no secret treats every caller as signed."""
    who = CALLER.get()
    if who.signed:          # also every caller of a server with no secret (App.admit)
        return
    if keys is None:        # a token, but nothing to check it with: never let it in
        raise GFSError(Code.UNAUTHORIZED, "authentication required")
    keys.check(who.token, handle, access, version)


def require_writer(keys: auth_tokens.TokenKeys | None) -> None:
    """A push's or a sync's check, which name no one chunk: a signed caller,
    or one with an unexpired write token for some chunk."""
    who = CALLER.get()
    if who.signed:
        return
    if keys is None:
        raise GFSError(Code.UNAUTHORIZED, "authentication required")
    keys.check_any(who.token, auth_tokens.WRITE)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# ---------------------------------------------------------------- validation

def need(req: dict[str, Any], name: str, typ: type | tuple[type, ...]) -> Any:
    """``req[name]``, which must exist and be of ``typ`` (BADREQ otherwise)."""
    if name not in req:
        raise GFSError(Code.BADREQ, f"missing field {name!r}")
    return check(name, req[name], typ)


def opt(req: dict[str, Any], name: str, typ: type | tuple[type, ...],
        default: Any = None) -> Any:
    """``req.get(name, default)``, type-checked when present and not None."""
    value = req.get(name)
    if value is None:
        return default
    return check(name, value, typ)


def check(name: str, value: Any, typ: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and typ in (int, (int,)):
        raise GFSError(Code.BADREQ, f"field {name!r} must be an integer")
    if not isinstance(value, typ):
        tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise GFSError(Code.BADREQ, f"field {name!r} must be {tname}, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------- server side

@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    client: str
    _receive: Callable[[], Awaitable[dict[str, Any]]]
    max_body: int
    body_timeout: float = 30.0
    target: str = ""            # as sent: the raw path and query (what a signature covers)
    scheme: str = "http"        # "https" under TLS
    _done: bool = False
    _deadline: float = 0.0

    async def _next(self) -> dict[str, Any]:
        """The next ASGI message of the body, within the body's deadlines:
        ``body_timeout`` for any one piece, and for the whole body that plus
        its declared length at :data:`MIN_BODY_RATE` -- a client that sends
        slowly, or less than it announced, costs one connection for a bounded
        time (TIMEOUT, 408, and the connection is closed)."""
        now = trio.current_time()
        if not self._deadline:
            length = self.headers.get("content-length", "")
            size = int(length) if length.isdigit() else self.max_body
            self._deadline = now + self.body_timeout + min(size, self.max_body) / MIN_BODY_RATE
        with trio.move_on_at(min(self._deadline, now + self.body_timeout)):
            return await self._receive()
        raise GFSError(Code.TIMEOUT, f"request body stalled ({self.body_timeout:g} s for a piece, "
                                  f"{MIN_BODY_RATE >> 10} KiB/s at least)")

    async def stream(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives, at most ``max_body`` bytes."""
        seen = 0
        while not self._done:
            msg = await self._next()
            if msg["type"] == "http.disconnect":
                raise GFSError(Code.BADREQ,
                               "request body incomplete: the client closed the connection")
            body = msg.get("body", b"")
            self._done = not msg.get("more_body", False)
            seen += len(body)
            if seen > self.max_body:
                raise GFSError(Code.TOOBIG, f"body over {self.max_body} bytes")
            if body:
                yield body

    async def drain(self, limit: int) -> None:
        """Read and drop up to ``limit`` more body bytes, so that an error reply
        reaches a client that is still sending (instead of a reset)."""
        seen = 0
        while not self._done and seen < limit:
            msg = await self._next()
            if msg["type"] == "http.disconnect":
                return
            seen += len(msg.get("body", b""))
            self._done = not msg.get("more_body", False)

    async def body(self) -> bytes:
        parts = [p async for p in self.stream()]
        return b"".join(parts)

    def content_length(self) -> int | None:
        """The declared body length (None without one; BADREQ if malformed)."""
        raw = self.headers.get("content-length")
        if raw is None:
            return None
        if not raw.isdigit() or not raw.isascii():
            raise GFSError(Code.BADREQ, f"bad content-length {raw[:40]!r}")
        return int(raw)

    def query_int(self, name: str, default: int | None = None) -> int:
        raw = self.query.get(name)
        if raw is None:
            if default is None:
                raise GFSError(Code.BADREQ, f"missing query parameter {name!r}")
            return default
        try:
            return int(raw)
        except ValueError:
            raise GFSError(Code.BADREQ, f"query parameter {name!r} must be an integer") from None


@dataclass
class Response:
    status: int = 200
    body: bytes | AsyncIterator[bytes] = b""
    content_type: str = MSGPACK
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def msgpack(cls, obj: object, status: int = 200) -> Response:
        return cls(status, pack(obj), MSGPACK)


RouteHandler = Callable[[Request], Awaitable[Response]]


class App:
    """An ASGI app: ``/rpc/<name>`` msgpack handlers plus raw routes."""

    def __init__(self, name: str, max_rpc_body: int = 16 << 20,
                 max_raw_body: int = 80 << 20, body_timeout: float = 30.0) -> None:
        self.name = name
        self.body_timeout = body_timeout
        self.rpcs: dict[str, RpcHandler] = {}
        self.rpc_access: dict[str, str] = {}
        self.routes: list[tuple[str, str, RouteHandler, str]] = []
        # the cluster secret's checks (None: no secret configured, all let in)
        self.verifier: auth_hmac.Verifier | None = None
        # a WEB route's caller without a signature: the session's role, or None
        self.web_session: Callable[[Request], str | None] | None = None
        # requests let in with a secret configured, by how they proved themselves (/metrics)
        self.admitted: dict[str, int] = {"signed": 0, "token": 0, "session": 0,
                                         "bearer": 0, "mount": 0}
        # an ``Authorization: Bearer`` token on a WEB or ADMIN route: its role, or None
        self.bearer: Callable[[str], str | None] | None = None
        # the key of an export session's ticket seen from a client address, or
        # None (SESSION routes: master.exports)
        self.session_key: Callable[[str, str], bytes | None] | None = None
        self.max_rpc_body = max_rpc_body
        self.max_raw_body = max_raw_body
        self.observers: list[Callable[[str, int, float], None]] = []

    def rpc(self, name: str, handler: RpcHandler, access: str = CLUSTER) -> None:
        self.rpcs[name] = handler
        self.rpc_access[name] = access

    def route(self, method: str, prefix: str, handler: RouteHandler,
              access: str = CLUSTER) -> None:
        """``handler`` serves ``method`` on every path starting with ``prefix``."""
        self.routes.append((method, prefix, handler, access))

    def admit(self, access: str, method: str, target: str, header: str | None,
              token: str | None, body: bytes | None, req: Request | None = None,
              peer: str = "") -> None:
        """Let the request in under ``access`` (setting :data:`CALLER` for its
        handler), or raise UNAUTHORIZED. ``body`` None: streamed, not covered.
        ``peer``: the client's address (an export session is good from one)."""
        verifier = self.verifier
        if verifier is None:
            CALLER.set(TRUSTED if access != OPEN else Caller(signed=True, peer=peer))
            return
        if access == OPEN:          # anyone, so no one in particular
            CALLER.set(Caller(peer=peer))
            return
        if header and header.startswith("Bearer ") and access in (WEB, ADMIN, SESSION_ADMIN):
            role = self.bearer(header[7:].strip()) if self.bearer is not None else None
            if role is not None:
                CALLER.set(Caller(session=role, bearer=True))
                self.admitted["bearer"] += 1
                return
            verifier.refused += 1
            raise GFSError(Code.UNAUTHORIZED, "authentication required")
        if header or access in (CLUSTER, SESSION, SESSION_ADMIN):
            lookup = self.session_key
            session = (lambda kid: lookup(kid, peer)) \
                if access in (SESSION, SESSION_ADMIN) and lookup is not None else None
            kid = verifier.check(method, target, header, body, session)
            if kid.startswith(SESSION_PREFIX):
                CALLER.set(Caller(mount=kid))
                self.admitted["mount"] += 1
                return
            CALLER.set(TRUSTED)
            self.admitted["signed"] += 1
            return
        if access == CHUNK and token:
            CALLER.set(Caller(token=token))
            self.admitted["token"] += 1
            return
        if access == WEB and req is not None and self.web_session is not None:
            role = self.web_session(req)
            if role is not None:
                CALLER.set(Caller(session=role))
                self.admitted["session"] += 1
                return
        verifier.refused += 1
        raise GFSError(Code.UNAUTHORIZED, "authentication required")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            await _refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        req = _make_request(scope, receive, self.max_raw_body, self.body_timeout)
        start = time.monotonic()
        route_name, resp = await self._dispatch(req)
        try:
            await _send_response(send, resp)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("%s: client went away while answering %s: %s", self.name, req.path, exc)
        except GFSError as exc:     # a streamed body's source failed after the 200
            log.warning("%s %s: response aborted midway: %s", req.method, req.path, exc)
            raise AbortResponse(str(exc)) from None
        for obs in self.observers:
            obs(route_name, resp.status, time.monotonic() - start)

    async def _dispatch(self, req: Request) -> tuple[str, Response]:
        route_name = "unknown"
        try:
            if req.path.startswith("/rpc/") and req.method == "POST":
                route_name = req.path
                req.max_body = self.max_rpc_body
                self._admit_headers(req.path, req.target, req.headers.get(auth_hmac.HEADER),
                                    req.headers.get(auth_tokens.HEADER), req.client)
                raw = await req.body()
                self.admit(self.rpc_access.get(req.path[5:], CLUSTER), "POST", req.target,
                           req.headers.get(auth_hmac.HEADER),
                           req.headers.get(auth_tokens.HEADER), raw, peer=req.client)
                return route_name, await self._rpc_reply(req.path[5:], raw)
            route = self._route(req.method, req.path)
            if route is not None:
                prefix, handler, access = route
                route_name = prefix
                self.admit(access, req.method, req.target, req.headers.get(auth_hmac.HEADER),
                           req.headers.get(auth_tokens.HEADER), None, req, peer=req.client)
                return route_name, await handler(req)
            self.admit(CLUSTER, req.method, req.target, req.headers.get(auth_hmac.HEADER),
                       None, None)     # no route: say so only to those who may know
            raise GFSError(Code.NOROUTE, f"no route {req.method} {req.path}")
        except GFSError as exc:
            if exc.code == Code.TOOBIG:
                with trio.move_on_after(10):
                    await req.drain(4 * req.max_body)
            resp = self._error_reply(req.method, req.path, exc)
            if not req._done:       # the rest of the body will not be read: close
                resp.headers["connection"] = "close"
            return route_name, resp
        except Exception as exc:  # the one catch-all: log, answer 500, keep serving
            return route_name, self._crash_reply(req.method, req.path, exc)

    def _route(self, method: str, path: str) -> tuple[str, RouteHandler, str] | None:
        """The route of the longest prefix of ``path`` for ``method``."""
        best: tuple[str, RouteHandler, str] | None = None
        for m, prefix, handler, access in self.routes:
            if m == method and path.startswith(prefix) and (best is None
                                                            or len(prefix) > len(best[0])):
                best = (prefix, handler, access)
        return best

    def refuse_early(self, path: str, target: str, header: str | None, token: str | None,
                     peer: str = "") -> Response | None:
        """The reply to ``POST /rpc/<name>`` that its headers alone already
        refuse (no credentials, a wrong signature, a stale clock), before
        its body is read; None to read the body and go on (:meth:`answer_rpc`
        checks everything again, with the body)."""
        try:
            self._admit_headers(path, target, header, token, peer)
        except GFSError as exc:
            return self.answer_error("POST", path, exc)
        return None

    def _admit_headers(self, path: str, target: str, header: str | None, token: str | None,
                       peer: str) -> None:
        """:meth:`admit` of an RPC from its headers alone (UNAUTHORIZED, or
        nothing: the full admit with the body follows and is what counts)."""
        counted = dict(self.admitted)
        self.admit(self.rpc_access.get(path[5:], CLUSTER), "POST", target or path,
                   header, token, auth_hmac.NOT_READ, peer=peer)
        self.admitted.update(counted)

    async def answer_rpc(self, path: str, raw: bytes, target: str = "",
                         header: str | None = None, token: str | None = None,
                         peer: str = "") -> Response:
        """``POST /rpc/<name>`` whose whole body the server already read: the
        server's fast path for small RPCs (:mod:`gfsfs.common.httpserver`),
        with the same replies, errors and observers as :meth:`__call__`.
        ``target``, ``header``, ``token``: as sent, and ``peer`` (the client's
        address), for :meth:`admit`."""
        start = time.monotonic()
        try:
            self.admit(self.rpc_access.get(path[5:], CLUSTER), "POST", target or path,
                       header, token, raw, peer=peer)
            resp = await self._rpc_reply(path[5:], raw)
        except GFSError as exc:
            resp = self._error_reply("POST", path, exc)
        except Exception as exc:  # as in _dispatch
            resp = self._crash_reply("POST", path, exc)
        for obs in self.observers:
            obs(path, resp.status, time.monotonic() - start)
        return resp

    def answer_error(self, method: str, path: str, exc: GFSError) -> Response:
        """The reply to a request that failed in the server's fast path."""
        resp = self._error_reply(method, path, exc)
        for obs in self.observers:
            obs(path, resp.status, 0.0)
        return resp

    async def _rpc_reply(self, name: str, raw: bytes) -> Response:
        handler = self.rpcs.get(name)
        if handler is None:
            raise GFSError(Code.NOROUTE, f"no rpc {name!r}")
        try:
            body = unpack(raw) if raw else {}
        except Exception as exc:
            raise GFSError(Code.BADREQ, f"body is not msgpack: {exc}") from None
        if not isinstance(body, dict):
            raise GFSError(Code.BADREQ, "body must be a msgpack map")
        return Response.msgpack(await handler(body))

    @staticmethod
    def _error_reply(method: str, path: str, exc: GFSError) -> Response:
        if exc.code == Code.INTERNAL:
            log.error("%s %s: %s", method, path, exc)
        return Response.msgpack(exc.to_wire(), exc.status)

    @staticmethod
    def _crash_reply(method: str, path: str, exc: Exception) -> Response:
        log.exception("%s %s failed", method, path)
        err = GFSError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")
        return Response.msgpack(err.to_wire(), err.status)


def _make_request(scope: dict[str, Any], receive: Any, max_body: int,
                  body_timeout: float) -> Request:
    query = dict(urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1")))
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    client = scope.get("client") or ("", 0)
    target = scope.get("raw_path", b"").decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    return Request(scope["method"], scope["path"], query, headers, str(client[0]),
                   receive, max_body, body_timeout, target=target,
                   scheme=str(scope.get("scheme") or "http"))


async def _refuse_websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Nothing here speaks WebSocket: answer the upgrade with 400 NOROUTE
    (ASGI's denial response where the server offers it, else a close before
    accepting, which the server answers with 403)."""
    await receive()                         # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = pack(GFSError(Code.NOROUTE, "WebSocket upgrades are not served").to_wire())
    await send({"type": "websocket.http.response.start", "status": 400,
                "headers": [(b"content-type", MSGPACK_BYTES),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "websocket.http.response.body", "body": body})


async def _send_response(send: Any, resp: Response) -> None:
    headers = [(b"content-type", resp.content_type.encode())]
    headers += [(k.encode(), v.encode()) for k, v in resp.headers.items()]
    if isinstance(resp.body, bytes):
        headers.append((b"content-length", str(len(resp.body)).encode()))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": resp.body})
        return
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    body = resp.body
    try:
        async for piece in body:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:          # a generator's finally runs now, not at GC
            await aclose()
    await send({"type": "http.response.body", "body": b""})


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def serve_forever(app: Any, host: str, port: int, shutdown: trio.Event, *,
                        tls: ssl.SSLContext | None = None,
                        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until ``shutdown`` is set; ``task_status`` gets the bound port
    (:mod:`gfsfs.common.httpserver`); HTTPS with ``tls``, a server context of
    :func:`gfsfs.common.tls.server_context`."""
    tune_io_sizes()
    await serve(app, host, port, shutdown, Limits(), tls=tls, task_status=task_status)


def tune_io_sizes(size: int = 1 << 20) -> None:
    """Read sockets in pieces of ``size`` instead of 64 KiB: httpcore keeps
    its read size in a class constant, and chunk data moves several times
    faster through Python in 1 MiB pieces than in 64 KiB ones (fewer h11
    events and trio checkpoints per byte). The server reads 1 MiB already."""
    import httpcore._async.http11 as http11

    if hasattr(http11.AsyncHTTP11Connection, "READ_NUM_BYTES"):
        http11.AsyncHTTP11Connection.READ_NUM_BYTES = size


# ---------------------------------------------------------------- client side

class Signing(httpx.Auth):
    """Signs each httpx request with the cluster secret
    (:mod:`gfsfs.common.auth.hmac`), except one that carries a chunk token:
    that one proves itself with the token alone. A body given as bytes is
    covered by the signature; a streamed one is sent UNSIGNED."""

    def __init__(self, signer: auth_hmac.Signer) -> None:
        self.signer = signer

    def auth_flow(self, request: httpx.Request) -> Any:
        if auth_tokens.HEADER not in request.headers and auth_hmac.HEADER not in request.headers:
            try:
                body: bytes | None = request.content
            except httpx.RequestNotRead:
                body = None
            request.headers[auth_hmac.HEADER] = self.signer.header(
                request.method, request.url.raw_path.decode("latin-1"), body)
        yield request


class RpcHTTP(httpx.AsyncClient):
    """The httpx client every component uses, plus a lean pool of its own for
    msgpack RPCs (:func:`call`, :class:`gfsfs.common.rpcclient.RpcPool`):
    metadata operations are chains of small calls, and httpcore's machinery
    was more than half of each round trip. Streams (chunk pushes and reads)
    keep using httpx. With a ``signer`` every request is signed."""

    def __init__(self, timeout: float, connections: int, local_address: str | None,
                 signer: auth_hmac.Signer | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        limits = httpx.Limits(max_connections=connections,
                              max_keepalive_connections=connections, keepalive_expiry=KEEPALIVE)
        verify: ssl.SSLContext | bool = tls if tls is not None else True
        transport = httpx.AsyncHTTPTransport(limits=limits, local_address=local_address,
                                             verify=verify)
        super().__init__(timeout=httpx.Timeout(timeout, connect=5.0), limits=limits,
                         transport=transport, verify=verify,
                         auth=Signing(signer) if signer else None)
        self.rpc_timeout = timeout
        self.rpc_pool = RpcPool(connections, local_address, signer, tls)

    def sign_with(self, signer: auth_hmac.Signer | None) -> None:
        """Sign from now on with ``signer`` (a mount's export session)."""
        self.auth = Signing(signer) if signer else None
        self.rpc_pool.signer = signer

    async def aclose(self) -> None:
        try:
            await self.rpc_pool.aclose()
        finally:
            await super().aclose()


def make_http(timeout: float = 30.0, connections: int = 64,
              local_address: str | None = None, secret: Secret | None = None,
              tls: ssl.SSLContext | None = None) -> RpcHTTP:
    """``local_address``: connect from this address (a daemon on a machine with
    several addresses is then seen as one host, e.g. by a firewall rule).
    ``secret``: sign every request with the cluster secret. ``tls``: how
    ``https://`` peers are verified and what cert we show them
    (:func:`gfsfs.common.tls.client_context`; None: the system's CAs)."""
    tune_io_sizes()
    return RpcHTTP(timeout, connections, local_address,
                   auth_hmac.Signer(secret) if secret is not None else None, tls)


def source_address_for(host: str) -> str | None:
    """``host`` when it is one specific IP address (not a name, not 0.0.0.0/::)."""
    import ipaddress
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return None if ip.is_unspecified else str(ip)


async def call(http: httpx.AsyncClient, base_url: str, name: str,
               body: dict[str, Any] | None = None, timeout: float | None = None,
               token: str | None = None) -> Any:
    """``POST base_url/rpc/name`` with a msgpack body; the decoded reply.
    ``token``: a chunk token to show (the call is then not signed).

    Raises :class:`GFSError` with the server's code, or UNAVAILABLE when the
    server cannot be reached or does not answer in time
    (:func:`gfsfs.common.retry.unavailable`, ``err.addr`` = ``base_url``).
    """
    pool = getattr(http, "rpc_pool", None)
    if pool is None:             # a plain httpx client (tests, tools)
        kwargs: dict[str, Any] = {}
        if timeout is not None:
            kwargs["timeout"] = timeout
        headers = {"content-type": MSGPACK}
        if token:
            headers[auth_tokens.HEADER] = token
        try:
            resp = await http.post(f"{base_url}/rpc/{name}", content=pack(body or {}),
                                   headers=headers, **kwargs)
        except TRANSPORT_ERRORS as exc:
            raise unavailable(base_url, exc) from None
        return decode_reply(resp.status_code, resp.content)
    t = timeout if timeout is not None else http.rpc_timeout
    try:
        status, content = await pool.post(base_url, f"/rpc/{name}", pack(body or {}),
                                          MSGPACK_BYTES, t, token)
    except TransportError as exc:
        raise unavailable(base_url, exc) from None
    return decode_reply(status, content)


def decode_error(status: int, content: bytes) -> GFSError:
    """The error an error reply (status >= 400) carries."""
    try:
        return GFSError.from_wire(unpack(content) if content else {}, status)
    except Exception:
        return GFSError(code_for_status(status), f"HTTP {status}: reply is not msgpack")


def decode_reply(status: int, content: bytes) -> Any:
    try:
        body = unpack(content) if content else {}
    except Exception:
        code = code_for_status(status) if status >= 400 else Code.UNAVAILABLE
        raise GFSError(code, f"HTTP {status}: reply is not msgpack") from None
    if status >= 400:
        raise GFSError.from_wire(body, status)
    return body
