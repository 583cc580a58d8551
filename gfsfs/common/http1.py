"""HTTP/1.1 framing for our server and RPC client: httptools parses, we write.

Why httptools (MagicStack's binding of llhttp, the parser of Node.js; what
uvicorn uses): parsing one small request and framing its reply costs ~8 us
with it against ~150-400 us with h11 on this machine (docs/benchmarks.md),
and h11 on both ends was over half of every RPC's
round trip (issue 12). llhttp is strict by default: bad methods, bad or
duplicate framing headers (Content-Length with Transfer-Encoding, a negative
length) are errors.

The parser turns bytes into the events the server and client consume one at
a time, as h11 does: :class:`Head` (the request or response line and
headers), :class:`Data` pieces of the body, :class:`End`. Bytes of a second,
pipelined message wait in the queue until the first is done.

Writing is ours and small: a head, then a body framed by Content-Length,
chunked, or (HTTP/1.0 without a length) the connection's close.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus

import httptools

MAX_HEAD = 64 << 10             # request or status line + headers


class BadMessage(Exception):
    """The peer's bytes are not HTTP/1.x we accept; ``status`` for a reply."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Head:
    method: bytes = b""           # requests
    target: bytes = b""           # requests
    status: int = 0               # responses
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)   # names lower-cased
    http_version: bytes = b"1.1"
    keep_alive: bool = True
    upgrade: bool = False

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return default


@dataclass
class Data:
    data: bytes


@dataclass
class End:
    pass


Event = Head | Data | End


class Parser:
    """Incremental parser of requests (``response=False``) or responses."""

    def __init__(self, response: bool = False, max_head: int = MAX_HEAD) -> None:
        self.response = response
        self.max_head = max_head
        self.events: deque[Event] = deque()
        self.impl = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(self)
        self.in_head = False       # between the first byte of a message and its headers' end
        self.in_body = False       # between the end of the headers and the end of the message
        self.head_bytes = 0        # bytes fed since the message began (while in its head)
        self.head_size = 0         # bytes of line and headers parsed so far
        self.head = Head()
        self.upgraded = False      # the rest of the stream is another protocol: stop

    # --------------------------------------------------------- feeding

    def feed(self, data: bytes) -> None:
        """Parse ``data`` (more events in :attr:`events`); b"" is the peer's EOF,
        which ends nothing here -- see :attr:`mid_message`."""
        if not data or self.upgraded:
            return
        if not self.in_body:
            self.head_bytes += len(data)
        try:
            self.impl.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.upgraded = True
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, BadMessage):
                raise cause from None
            raise BadMessage(f"bad HTTP message: {exc}") from None
        except httptools.HttpParserError as exc:
            raise BadMessage(f"bad HTTP message: {exc}") from None
        if self.in_head and self.head_bytes > self.max_head:
            raise BadMessage(f"message head over {self.max_head} bytes", 431)

    @property
    def mid_message(self) -> bool:
        return self.in_head or self.in_body

    def next_event(self) -> Event | None:
        return self.events.popleft() if self.events else None

    # --------------------------------------------------------- callbacks

    def on_message_begin(self) -> None:
        self.in_head = True
        self.head = Head()
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        self.head.target += url
        self._count(len(url))

    def on_status(self, status: bytes) -> None:
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.headers.append((name.lower(), value))
        self._count(len(name) + len(value) + 4)

    def _count(self, n: int) -> None:
        self.head_size += n
        if self.head_size > self.max_head:
            raise BadMessage(f"message head over {self.max_head} bytes", 431)

    def on_headers_complete(self) -> None:
        head, impl = self.head, self.impl
        head.http_version = impl.get_http_version().encode()
        head.keep_alive = impl.should_keep_alive()
        if self.response:
            head.status = impl.get_status_code()
        else:
            head.method = impl.get_method()
            head.upgrade = impl.should_upgrade() or _wants_upgrade(head)
            if head.http_version == b"1.1" and head.get(b"host") is None:
                raise BadMessage("an HTTP/1.1 request needs a Host header")
        self.in_head = False
        self.in_body = True
        self.events.append(head)

    def on_body(self, body: bytes) -> None:
        self.events.append(Data(bytes(body)))

    def on_message_complete(self) -> None:
        self.in_head = self.in_body = False
        self.head_bytes = 0
        self.events.append(End())


def _wants_upgrade(head: Head) -> bool:
    for name, value in head.headers:
        if name == b"upgrade" or (name == b"connection" and b"upgrade" in value.lower()):
            return True
    return False


# ------------------------------------------------------------- writing

def response_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1"]
    lines += [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class BodyFramer:
    """Frames one outgoing body: by its Content-Length (more or fewer bytes
    than declared is an error: :class:`ValueError`), chunked, or raw until the
    connection closes."""

    def __init__(self, length: int | None, chunked: bool, head_only: bool = False) -> None:
        self.length = length
        self.chunked = chunked and length is None
        self.head_only = head_only
        self.sent = 0

    def piece(self, data: bytes) -> bytes:
        if self.head_only or not data:
            return b""
        self.sent += len(data)
        if self.length is not None and self.sent > self.length:
            raise ValueError(f"body over its Content-Length of {self.length}")
        if self.chunked:
            return b"%x\r\n" % len(data) + data + b"\r\n"
        return data

    def end(self) -> bytes:
        if self.head_only:
            return b""
        if self.length is not None and self.sent != self.length:
            raise ValueError(f"body of {self.sent} bytes, Content-Length {self.length}")
        return b"0\r\n\r\n" if self.chunked else b""
