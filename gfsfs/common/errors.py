"""The one table of error codes: wire code <-> HTTP status <-> errno.

Every error that crosses the wire is ``{"error": {"code": CODE, "message": M}}``
with the HTTP status of its :class:`Code`. Code on both sides raises and catches
:class:`GFSError`; the FUSE layer turns it into ``FUSEError(err.errno)`` in one
place (``gfsfs.fuse.operations``). Never match on message text.

Exception tree::

    GFSError            any failure with a wire code
    ├── (code ENOENT, EEXIST, ...)   POSIX failures, errno of the same name
    ├── BADREQ          malformed request: bad msgpack, missing or mistyped field
    ├── NOROUTE         unknown route
    ├── TOOBIG          request body over the limit
    ├── TIMEOUT         request body not received within its deadline
    ├── CORRUPT         a checksum mismatch; never served (EIO at the FUSE edge)
    ├── STALE           replica or version out of date; retry elsewhere (ESTALE)
    ├── UNAVAILABLE     a server could not be reached or timed out (EIO)
    ├── NOCHUNK         chunk handle unknown to this chunkd (ENOENT)
    ├── PROTOCOL        the peer speaks another PROTOCOL_VERSION (EPROTO)
    ├── UNAUTHORIZED    no valid credential: the request's signature, or the
    │                   chunk token it needs, is missing or wrong (EACCES)
    ├── QUOTA           a directory quota (bytes or inodes) would be exceeded
    │                   (EDQUOT; HTTP 403)
    ├── NOTPRIMARY      a shadow master (or a fenced old primary) refused a
    │                   mutation; ``primary`` names the primary if known (EROFS)
    └── INTERNAL        bug or unexpected failure; logged with a traceback (EIO)
"""
from __future__ import annotations

import errno as _errno
from enum import StrEnum


class Code(StrEnum):
    """A wire code, with the HTTP status it is answered with and the errno the
    FUSE edge reports for it. A ``str`` (``Code.ENOENT == "ENOENT"``), so code
    that still compares with strings keeps working; use the members, so a
    typo fails at import time instead of becoming INTERNAL at run time."""

    status: int
    errno: int

    def __new__(cls, value: str, status: int, err: int) -> Code:
        member = str.__new__(cls, value)
        member._value_ = value
        member.status = status
        member.errno = err
        return member

    ENOENT = "ENOENT", 404, _errno.ENOENT
    EEXIST = "EEXIST", 409, _errno.EEXIST
    ENOTEMPTY = "ENOTEMPTY", 409, _errno.ENOTEMPTY
    EISDIR = "EISDIR", 409, _errno.EISDIR
    ENOTDIR = "ENOTDIR", 409, _errno.ENOTDIR
    ENAMETOOLONG = "ENAMETOOLONG", 400, _errno.ENAMETOOLONG
    EACCES = "EACCES", 403, _errno.EACCES
    EPERM = "EPERM", 403, _errno.EPERM
    EINVAL = "EINVAL", 400, _errno.EINVAL
    EXDEV = "EXDEV", 409, _errno.EXDEV
    EMLINK = "EMLINK", 409, _errno.EMLINK
    EFBIG = "EFBIG", 400, _errno.EFBIG
    ENOSPC = "ENOSPC", 507, _errno.ENOSPC
    EROFS = "EROFS", 403, _errno.EROFS
    ENODATA = "ENODATA", 404, _errno.ENODATA
    ERANGE = "ERANGE", 400, _errno.ERANGE
    ENOTSUP = "ENOTSUP", 400, _errno.ENOTSUP
    EAGAIN = "EAGAIN", 503, _errno.EAGAIN
    EIO = "EIO", 500, _errno.EIO
    BADREQ = "BADREQ", 400, _errno.EINVAL
    NOROUTE = "NOROUTE", 404, _errno.ENOSYS
    TOOBIG = "TOOBIG", 413, _errno.EFBIG
    TIMEOUT = "TIMEOUT", 408, _errno.ETIMEDOUT
    CORRUPT = "CORRUPT", 500, _errno.EIO
    STALE = "STALE", 409, _errno.ESTALE
    UNAVAILABLE = "UNAVAILABLE", 503, _errno.EIO
    PROTOCOL = "PROTOCOL", 400, _errno.EPROTO
    NOCHUNK = "NOCHUNK", 404, _errno.ENOENT
    NOTPRIMARY = "NOTPRIMARY", 421, _errno.EROFS
    UNAUTHORIZED = "UNAUTHORIZED", 401, _errno.EACCES
    QUOTA = "QUOTA", 403, _errno.EDQUOT
    INTERNAL = "INTERNAL", 500, _errno.EIO


# code -> (HTTP status, errno), for code that wants the plain table
CODES: dict[str, tuple[int, int]] = {c.value: (c.status, c.errno) for c in Code}


def as_code(code: Code | str) -> Code | None:
    """``code`` as a :class:`Code`; None when it names none."""
    if isinstance(code, Code):
        return code
    try:
        return Code(code)
    except ValueError:
        return None


class GFSError(Exception):
    """A failure with a wire :class:`Code`. A code given as a string (from the
    wire, or master/ code not yet converted) is checked against the enum: an
    unknown one becomes INTERNAL, its name kept in the message."""

    def __init__(self, code: Code | str, message: str = "", primary: str | None = None) -> None:
        known = as_code(code)
        if known is None:
            message = f"{code}: {message}"
            known = Code.INTERNAL
        super().__init__(f"{known}: {message}" if message else str(known))
        self.code: Code = known
        self.message = message
        # the server this process could not reach (set by gfsfs.common.retry.unavailable
        # for transport errors only; never sent on the wire)
        self.addr: str | None = None
        # with ``addr``: the request never left this process (the connection
        # was not made), so sending it again anywhere cannot apply it twice
        self.unsent = False
        # NOTPRIMARY: the URL of the primary master, when the refusing one knows it
        self.primary = primary

    @property
    def status(self) -> int:
        return self.code.status

    @property
    def errno(self) -> int:
        return self.code.errno

    def to_wire(self) -> dict[str, object]:
        err: dict[str, object] = {"code": self.code.value, "message": self.message}
        if self.primary:
            err["primary"] = self.primary
        return {"error": err}

    @classmethod
    def from_wire(cls, body: object, status: int) -> GFSError:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            primary = err.get("primary")
            return cls(str(err.get("code", Code.INTERNAL)), str(err.get("message", "")),
                       primary if isinstance(primary, str) else None)
        return cls(code_for_status(status), f"HTTP {status} without an error body")


def code_for_status(status: int) -> Code:
    """The code for a peer's error reply that carries none of ours (a proxy,
    a server that is not gfsfs): the client-error statuses we use keep their
    meaning; anything else means the peer did not serve us (UNAVAILABLE)."""
    return {400: Code.BADREQ, 401: Code.UNAUTHORIZED, 404: Code.NOROUTE, 408: Code.TIMEOUT,
            413: Code.TOOBIG}.get(status, Code.UNAVAILABLE)


def from_oserror(exc: OSError) -> GFSError:
    """An OSError from a local file operation as a wire error."""
    name = _errno.errorcode.get(exc.errno or 0, "EIO")
    return GFSError(as_code(name) or Code.EIO, str(exc))


def errno_of(exc: BaseException) -> int:
    """The errno the FUSE edge reports for any exception."""
    if isinstance(exc, GFSError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return _errno.EIO
