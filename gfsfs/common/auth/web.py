"""Who may use the web page and the admin RPCs without the cluster secret
(docs/security.md, "Web page and admin login").

- **Users file** (``[web] users_file``): one account a line,
  ``NAME:ROLE:HASH``; ROLE is ``admin`` or ``viewer``; HASH is
  ``scrypt$N$r$p$SALT$KEY`` (hex salt and key; :func:`hash_password`), made
  by ``gfs web passwd``. Blank lines and ``#`` comments are ignored. It holds
  hashes only, but is kept mode 0600 all the same (it is written so).
- **Admin tokens** (``[web] admin_token_file``): one random token a line
  (``gfs web token FILE``; mode 0600 or 0400, as the cluster secret). Every
  token listed is accepted as ``Authorization: Bearer <token>``, so a token is
  rotated as a secret key is: add the new line, move clients over, delete the
  old line (the master reads the file at start: restart it in between).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from gfsfs.common.auth.private import read_private, write_private

ROLES = ("admin", "viewer")
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1      # 16 MiB and ~50 ms a hash
SALT_BYTES = 16
KEY_BYTES = 32
MAX_PASSWORD = 1024         # bytes; longer is refused before hashing
TOKEN_BYTES = 32
BEARER = "Bearer "


class WebAuthError(ValueError):
    """A users or token file that cannot be used; the message names the file."""


# ---------------------------------------------------------------- passwords

def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES,
                          maxmem=256 * n * r + (1 << 20))


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$SALT$KEY`` of ``password`` under a fresh random salt."""
    pw = password.encode()
    if not pw or len(pw) > MAX_PASSWORD:
        raise ValueError(f"a password needs 1..{MAX_PASSWORD} bytes")
    salt = os.urandom(SALT_BYTES)
    key = _scrypt(pw, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${key.hex()}"


def _parse_hash(stored: str) -> tuple[bytes, int, int, int, bytes] | None:
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, key = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return None
    if n < 2 or n & (n - 1) or n > 1 << 20 or not 1 <= r <= 32 or not 1 <= p <= 16 \
            or len(salt) < 8 or len(key) != KEY_BYTES:
        return None
    return salt, n, r, p, key


DUMMY = "scrypt$16384$8$1$" + "00" * SALT_BYTES + "$" + "00" * KEY_BYTES


def check_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` is the one ``stored`` hashes (constant-time
    compare). ``stored`` None (no such user): a hash is computed all the same,
    so an unknown name costs as long as a wrong password."""
    parsed = _parse_hash(stored or DUMMY) or _parse_hash(DUMMY)
    assert parsed is not None
    salt, n, r, p, key = parsed
    pw = password.encode("utf-8", "surrogateescape")[:MAX_PASSWORD + 1]
    if len(pw) > MAX_PASSWORD:
        pw = b""
    got = _scrypt(pw, salt, n, r, p)
    return hmac.compare_digest(got, key) and stored is not None and len(pw) > 0


# ---------------------------------------------------------------- users file

@dataclass(frozen=True)
class User:
    name: str
    role: str
    hash: str


def parse_users(text: str, where: str = "users file") -> dict[str, User]:
    users: dict[str, User] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, role, hashed = (line.split(":", 2) + ["", ""])[:3]
        if not NAME.fullmatch(name):
            raise WebAuthError(f"{where}: line {n}: bad user name {name[:40]!r}")
        if role not in ROLES:
            raise WebAuthError(f"{where}: line {n}: role must be admin or viewer, got {role!r}")
        if _parse_hash(hashed) is None:
            raise WebAuthError(f"{where}: line {n}: the password hash is not "
                               "scrypt$N$r$p$SALT$KEY (make it with `gfs web passwd`)")
        if name in users:
            raise WebAuthError(f"{where}: line {n}: user {name!r} listed twice")
        users[name] = User(name, role, hashed)
    return users


def load_users(path: str | os.PathLike[str]) -> dict[str, User]:
    """The accounts in ``path`` (none if it does not exist yet)."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise WebAuthError(f"users file {p}: cannot read it: {exc}") from None
    return parse_users(text, str(p))


def set_user(path: str | os.PathLike[str], name: str, role: str, password: str) -> bool:
    """Add ``name`` or change its role and password; True if it is new."""
    if not NAME.fullmatch(name):
        raise WebAuthError(f"bad user name {name[:40]!r}: letters, digits, _ . @ - "
                           "(not first), at most 64")
    if role not in ROLES:
        raise WebAuthError(f"role must be admin or viewer, got {role!r}")
    p = Path(path)
    users = load_users(p)
    new = name not in users
    users[name] = User(name, role, hash_password(password))
    _write_users(p, users)
    return new


def remove_user(path: str | os.PathLike[str], name: str) -> bool:
    p = Path(path)
    users = load_users(p)
    if users.pop(name, None) is None:
        return False
    _write_users(p, users)
    return True


def _write_users(p: Path, users: dict[str, User]) -> None:
    lines = ["# gfsfs web page accounts: NAME:ROLE:scrypt$N$r$p$SALT$KEY (gfs web passwd)"]
    lines += [f"{u.name}:{u.role}:{u.hash}" for u in users.values()]
    write_private(p, "\n".join(lines) + "\n")


# ---------------------------------------------------------------- admin tokens

def load_tokens(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The tokens in ``path``; :class:`WebAuthError` if it is missing, empty
    or readable by others."""
    p = Path(path)
    text = read_private(p, "admin token file", f"make one with `gfs web token {p}`",
                        WebAuthError)
    tokens = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) < 32 or not line.isascii() or any(c.isspace() for c in line):
            raise WebAuthError(f"{p}: line {n}: a token needs 32 or more printable characters")
        tokens.append(line)
    if not tokens:
        raise WebAuthError(f"admin token file {p}: no token in it")
    return tuple(tokens)


def generate_token(path: str | os.PathLike[str], *, overwrite: bool = False) -> str:
    """Write a new random token to ``path`` (mode 0600); the token. The file
    holds the token alone, so that Prometheus's ``credentials_file`` and
    ``curl -H "Authorization: Bearer $(cat FILE)"`` can use it as it is."""
    p = Path(path)
    if p.exists() and not overwrite:
        raise WebAuthError(f"admin token file {p} exists already (keep it, or --force)")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    write_private(p, token + "\n")
    return token


def ensure_token(path: str | os.PathLike[str]) -> str:
    """The first token in ``path``, made first if there is none (``make run``)."""
    if not Path(path).exists():
        return generate_token(path)
    return load_tokens(path)[0]


def token_matches(tokens: tuple[str, ...], given: str) -> bool:
    """Whether ``given`` is one of ``tokens`` (constant-time, every one compared)."""
    g = given.encode("utf-8", "surrogateescape")
    ok = False
    for t in tokens:
        ok |= hmac.compare_digest(t.encode(), g)
    return ok


class BearerSigner:
    """The ``authorization`` header of a client that holds an admin token
    instead of the cluster secret (the ``gfs`` CLI with $GFS_ADMIN_TOKEN_FILE):
    the same interface as :class:`gfsfs.common.auth.hmac.Signer`."""

    def __init__(self, token: str) -> None:
        self.token = token

    def header(self, method: str, target: str, body: bytes | None) -> str:
        return BEARER + self.token
