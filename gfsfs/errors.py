"""The one table of error codes: wire code <-> HTTP status <-> errno.

Every error that crosses the wire is ``{"error": {"code": CODE, "message": M}}``
with the HTTP status from ``CODES``. Code on both sides raises and catches
:class:`GFSError`; the FUSE layer turns it into ``FUSEError(err.errno)`` in one
place (``gfsfs.fuse_ops``). Never match on message text.

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
    └── INTERNAL        bug or unexpected failure; logged with a traceback (EIO)
"""
from __future__ import annotations

import errno as _errno

# code -> (HTTP status, errno)
CODES: dict[str, tuple[int, int]] = {
    "ENOENT": (404, _errno.ENOENT),
    "EEXIST": (409, _errno.EEXIST),
    "ENOTEMPTY": (409, _errno.ENOTEMPTY),
    "EISDIR": (409, _errno.EISDIR),
    "ENOTDIR": (409, _errno.ENOTDIR),
    "ENAMETOOLONG": (400, _errno.ENAMETOOLONG),
    "EACCES": (403, _errno.EACCES),
    "EPERM": (403, _errno.EPERM),
    "EINVAL": (400, _errno.EINVAL),
    "EXDEV": (409, _errno.EXDEV),
    "EMLINK": (409, _errno.EMLINK),
    "EFBIG": (400, _errno.EFBIG),
    "ENOSPC": (507, _errno.ENOSPC),
    "EROFS": (403, _errno.EROFS),
    "ENODATA": (404, _errno.ENODATA),
    "ERANGE": (400, _errno.ERANGE),
    "ENOTSUP": (400, _errno.ENOTSUP),
    "EAGAIN": (503, _errno.EAGAIN),
    "EIO": (500, _errno.EIO),
    "BADREQ": (400, _errno.EINVAL),
    "NOROUTE": (404, _errno.ENOSYS),
    "TOOBIG": (413, _errno.EFBIG),
    "TIMEOUT": (408, _errno.ETIMEDOUT),
    "CORRUPT": (500, _errno.EIO),
    "STALE": (409, _errno.ESTALE),
    "UNAVAILABLE": (503, _errno.EIO),
    "NOCHUNK": (404, _errno.ENOENT),
    "INTERNAL": (500, _errno.EIO),
}


class GFSError(Exception):
    """A failure with a wire code from ``CODES``."""

    def __init__(self, code: str, message: str = "") -> None:
        if code not in CODES:
            message = f"{code}: {message}"
            code = "INTERNAL"
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message

    @property
    def status(self) -> int:
        return CODES[self.code][0]

    @property
    def errno(self) -> int:
        return CODES[self.code][1]

    def to_wire(self) -> dict[str, object]:
        return {"error": {"code": self.code, "message": self.message}}

    @classmethod
    def from_wire(cls, body: object, status: int) -> GFSError:
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            return cls(str(err.get("code", "INTERNAL")), str(err.get("message", "")))
        return cls(code_for_status(status), f"HTTP {status} without an error body")


def code_for_status(status: int) -> str:
    """The code for a peer's error reply that carries none of ours (a proxy,
    a server that is not gfsfs): the client-error statuses we use keep their
    meaning; anything else means the peer did not serve us (UNAVAILABLE)."""
    return {400: "BADREQ", 404: "NOROUTE", 408: "TIMEOUT", 413: "TOOBIG"}.get(
        status, "UNAVAILABLE")


def from_oserror(exc: OSError) -> GFSError:
    """An OSError from a local file operation as a wire error."""
    name = _errno.errorcode.get(exc.errno or 0, "EIO")
    return GFSError(name if name in CODES else "EIO", str(exc))


def errno_of(exc: BaseException) -> int:
    """The errno the FUSE edge reports for any exception."""
    if isinstance(exc, GFSError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return _errno.EIO
