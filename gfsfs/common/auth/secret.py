"""The cluster secret: a file of keys only the cluster's own processes can read.

Format: one key per line, 64 hex digits (32 random bytes); blank lines and
lines starting with ``#`` are ignored. The first key signs; every key listed
verifies. To rotate: add the new key as the last line on every host, then move
it first on every host, then delete the old line (docs/security.md).

The file must be a regular file that no one but its owner can read or write
(mode 0600 or 0400): a daemon refuses to start with a looser one, as ssh does
with a private key.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gfsfs.common.auth.private import read_private, write_private

KEY_BYTES = 32


class SecretError(ValueError):
    """The secret file is missing, unreadable, malformed or too open; the
    message says which and names the file."""


@dataclass(frozen=True)
class Key:
    kid: str            # 8 hex digits naming the key on the wire (not secret)
    material: bytes

    @classmethod
    def of(cls, material: bytes) -> Key:
        return cls(hashlib.sha256(b"gfsfs key id\0" + material).hexdigest()[:8], material)

    def derive(self, purpose: str) -> bytes:
        """A sub-key for one purpose (chunk tokens, web sessions), so no two
        uses ever share a key."""
        import hmac
        return hmac.new(self.material, b"gfsfs derive\0" + purpose.encode(), "sha256").digest()


@dataclass(frozen=True)
class Secret:
    keys: tuple[Key, ...]
    path: str = ""

    @property
    def signing(self) -> Key:
        return self.keys[0]

    def key(self, kid: str) -> Key | None:
        for k in self.keys:
            if k.kid == kid:
                return k
        return None

    @classmethod
    def of(cls, *materials: bytes) -> Secret:
        return cls(tuple(Key.of(m) for m in materials))


def parse(text: str, where: str = "secret") -> Secret:
    keys: list[Key] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            material = bytes.fromhex(line)
        except ValueError:
            raise SecretError(f"{where}: line {n} is not hex") from None
        if len(material) < 16:
            raise SecretError(f"{where}: line {n}: a key needs at least 16 bytes "
                              f"(32 hex digits), got {len(material)}")
        keys.append(Key.of(material))
    if not keys:
        raise SecretError(f"{where}: no key in it (make one with `gfs secret init {where}`)")
    return Secret(tuple(keys), where)


def load(path: str | os.PathLike[str]) -> Secret:
    """The secret in ``path``; :class:`SecretError` if it cannot be used."""
    p = Path(path)
    text = read_private(p, "secret file", f"make one with `gfs secret init {p}`", SecretError)
    return parse(text, str(p))


def generate(path: str | os.PathLike[str], *, overwrite: bool = False) -> Secret:
    """Write a new secret of one random key to ``path`` (mode 0600, created
    with that mode so it is never readable by others, not even briefly)."""
    p = Path(path)
    text = "# gfsfs cluster secret: every master, chunkd and mount of the cluster needs it\n" \
           + secrets.token_hex(KEY_BYTES) + "\n"
    try:
        write_private(p, text, exclusive=not overwrite)
    except FileExistsError:
        raise SecretError(f"secret file {p} exists already (keep it, or remove it first)") from None
    return parse(text, str(p))


def ensure(path: str | os.PathLike[str]) -> Secret:
    """The secret in ``path``, made first if there is none (``make run``)."""
    if not Path(path).exists():
        try:
            return generate(path)
        except SecretError:
            pass                    # made meanwhile by another process
    return load(path)


def from_config(secret_file: str) -> Secret | None:
    """The secret ``[cluster] secret_file`` names; None when it names none."""
    return load(secret_file) if secret_file else None
