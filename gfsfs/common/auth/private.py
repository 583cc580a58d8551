"""Files only their owner may read: the cluster secret, the admin tokens, the
web accounts. One rule for reading them (a regular file, mode 0600 or 0400,
as ssh wants of a private key) and one way of writing them (mode 0600 from
the first byte, fsync'd)."""
from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


def read_private(p: Path, what: str, hint: str, error: type[Exception]) -> str:
    """The text of ``p``; ``error`` naming ``what`` and the file if it is
    missing (with ``hint``: how to make one), not a regular file, readable or
    writable by others, or unreadable."""
    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{what} {p} is not a regular file")
        if st.st_mode & 0o077:
            raise error(f"{what} {p} is readable or writable by others "
                        f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {p}")
        return p.read_text()
    except FileNotFoundError:
        raise error(f"{what} {p} does not exist ({hint})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {p}: cannot read it: {exc}") from None


def write_private(p: Path, text: str, *, exclusive: bool = False) -> None:
    """``text`` into ``p``, mode 0600, fsync'd: atomically (a temporary file
    renamed over it), or with ``exclusive`` created in place and never over an
    existing file (FileExistsError: another process made it first)."""
    p.parent.mkdir(parents=True, exist_ok=True)
    target = p if exclusive else p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(target, p)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
