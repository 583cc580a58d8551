"""Checks for request fields that :func:`gfsfs.common.rpc.need` cannot express with a
type alone: peer addresses, finite floats, POSIX ids, sizes the wire can carry.

Each raises ``GFSError(Code.BADREQ | Code.EINVAL)`` naming the field, so a hostile or
broken request gets a 4xx with a code and never reaches code that would fail
with a ValueError or OverflowError (a 500).
"""
from __future__ import annotations

import ipaddress
import math
import re
from typing import Any

from gfsfs.common.errors import Code, GFSError

# the kernel's "no id" ((uid_t)-1) and anything above it cannot be an owner
NO_ID = (1 << 32) - 1
# msgpack carries unsigned integers up to 2**64-1; sums of per-chunkd figures
# are clamped below that, and each figure is at most MAX_BYTES (1 EiB)
WIRE_MAX = (1 << 63) - 1
MAX_BYTES = 1 << 60

_HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*")
_ADDR = re.compile(r"(https?)://(\[[0-9A-Fa-f:.]+\]|[^/:\[\]@?#,\s]+)(?::([0-9]{1,5}))?")


def check_addr(addr: object, name: str = "address") -> str:
    """A peer's address: ``http(s)://host[:port]`` -- a host name or IP literal
    (IPv6 in brackets), a port 1..65535, nothing else (no path, no user info,
    no list). The one validator for every field or header that names a peer."""
    m = _ADDR.fullmatch(addr) if isinstance(addr, str) else None
    if m is None:
        raise GFSError(Code.BADREQ, f"{name} {addr!r}: expected http://host:port")
    host, port = m.group(2), int(m.group(3) or 80)
    if not 1 <= port <= 65535:
        raise GFSError(Code.BADREQ, f"{name} {addr!r}: port must be 1..65535")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise GFSError(Code.BADREQ, f"{name} {addr!r}: bad IPv6 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise GFSError(Code.BADREQ, f"{name} {addr!r}: bad host name")
    return addr


SERVER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_server_id(value: Any, name: str = "id") -> str:
    """A chunkd id: 1-64 of letters, digits, '.', '_', '-'."""
    if not isinstance(value, str) or not SERVER_ID.fullmatch(value):
        raise GFSError(Code.BADREQ, f"{name} {value!r}: 1-64 of letters, digits, '.', '_', '-'")
    return value


def check_float(name: str, value: Any, lo: float, hi: float) -> float:
    """An int or float field that is finite and within ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GFSError(Code.BADREQ, f"field {name!r} must be a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise GFSError(Code.BADREQ, f"field {name!r} must be finite, got {value}")
    if not lo <= value <= hi:
        raise GFSError(Code.EINVAL, f"field {name!r} must be within {lo}..{hi}, got {value}")
    return float(value)


def opt_float(req: dict[str, Any], name: str, lo: float, hi: float,
              default: float | None = None) -> float | None:
    value = req.get(name)
    return default if value is None else check_float(name, value, lo, hi)


def check_id(name: str, value: Any) -> int:
    """A uid or gid: 0 .. 2**32-2 (2**32-1 is the kernel's "no id")."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise GFSError(Code.BADREQ, f"field {name!r} must be an integer")
    if not 0 <= value < NO_ID:
        raise GFSError(Code.EINVAL, f"field {name!r}: {value} is not a valid id (0..{NO_ID - 1})")
    return value


def check_bytes(name: str, value: Any) -> int:
    """A byte count a chunkd reports (capacity, used, free): 0 .. MAX_BYTES."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise GFSError(Code.BADREQ, f"field {name!r} must be an integer")
    if not 0 <= value <= MAX_BYTES:
        raise GFSError(Code.EINVAL, f"field {name!r}: {value} is outside 0..{MAX_BYTES}")
    return value


def wire_sum(values: Any) -> int:
    """A sum the wire can carry (clamped at :data:`WIRE_MAX`)."""
    return min(sum(values), WIRE_MAX)
