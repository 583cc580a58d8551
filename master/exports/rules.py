"""The export rules (``[master] exports_file``, e.g. configs/exports.toml): who
may mount what, as MooseFS's mfsexports.cfg and NFS's /etc/exports.

Each ``[[export]]`` table is one rule::

    [[export]]
    name = "team-a"                  # names its sessions (letters, digits, _ and -)
    from = ["127.0.0.5", "10.1.0.0/16"]   # client addresses or networks; "*" = any
    path = "/projects/a"             # the subtree it exposes ("/" = everything)
    access = "rw"                    # or "ro": every change answers EROFS
    maproot = "65534:65534"          # optional: root (uid 0) acts as this uid:gid
    password_file = "data/a.pass"    # optional: the mount must show this password
    subdirs = true                   # a mount may ask for a directory below path

A mount asks for a path; the first rule (in file order) whose ``from``
covers the mount's address, whose ``path`` is that path or (with
``subdirs``) above it, and whose password (if any) the mount proved, is its
export. No rule: the mount is refused. The file is read again when it
changes (:meth:`ExportTable.current`); a changed or removed rule ends its
sessions (:mod:`gfsfs.common.auth.session`).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gfsfs.common.auth import session as sessions
from gfsfs.common.auth.private import read_private
from gfsfs.common.config import ConfigError

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
KEYS = {"name", "from", "path", "access", "maproot", "password_file", "subdirs"}


@dataclass(frozen=True)
class Export:
    name: str
    networks: tuple[Network, ...]           # empty: any address
    path: str                               # normalised: "/" or "/a/b"
    readonly: bool = False
    maproot: tuple[int, int] | None = None
    password: bytes | None = field(default=None, repr=False)
    subdirs: bool = True
    fingerprint: str = ""

    def allows(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)

    def covers(self, path: str) -> bool:
        if path == self.path:
            return True
        return self.subdirs and (self.path == "/" or path.startswith(self.path + "/"))


def normpath(path: str, where: str = "path") -> str:
    """``path`` as ``/a/b``: absolute, no empty, ``.`` or ``..`` parts, no NUL."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path \
            or len(path) > 4096:
        raise ValueError(f"{where} must be an absolute path, got {path!r}")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"{where} may not contain . or .. ({path!r})")
    return "/" + "/".join(parts)


def _networks(value: Any, where: str) -> tuple[Network, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise ConfigError(f"{where}.from must be an address, a network or a list of them")
    if "*" in items:
        return ()
    try:
        return tuple(ipaddress.ip_network(i.strip(), strict=False) for i in items)
    except ValueError as exc:
        raise ConfigError(f"{where}.from: {exc}") from None


def _maproot(value: Any, where: str) -> tuple[int, int] | None:
    if value is None:
        return None
    uid, sep, gid = str(value).partition(":")
    if not uid.isdigit() or (sep and not gid.isdigit()):
        raise ConfigError(f"{where}.maproot must be UID or UID:GID, got {value!r}")
    ids = int(uid), int(gid) if sep else int(uid)
    if not all(0 <= i < (1 << 32) - 1 for i in ids):
        raise ConfigError(f"{where}.maproot: ids must be below 4294967295")
    return ids


def _password(value: Any, where: str, base: Path) -> bytes | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.password_file must be a path")
    p = Path(value) if os.path.isabs(value) else base / value
    text = read_private(p, f"{where}.password_file", "write the password into it, mode 0600",
                        ConfigError).strip()
    if len(text) < 8:
        raise ConfigError(f"{where}.password_file {p}: the password must have 8 characters "
                          f"or more")
    return text.encode()


def parse_export(raw: Any, index: int, base: Path) -> Export:
    where = f"export[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table ([[export]])")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    name = raw.get("name", f"export{index}")
    if not isinstance(name, str) or not sessions.NAME.match(name):
        raise ConfigError(f"{where}.name must be 1-32 letters, digits, _ or -, got {name!r}")
    access = raw.get("access", "rw")
    if access not in ("rw", "ro"):
        raise ConfigError(f"{where}.access must be \"rw\" or \"ro\", got {access!r}")
    subdirs = raw.get("subdirs", True)
    if not isinstance(subdirs, bool):
        raise ConfigError(f"{where}.subdirs must be true or false")
    try:
        path = normpath(raw.get("path", "/"), f"{where}.path")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    networks = _networks(raw.get("from", "*"), where)
    maproot = _maproot(raw.get("maproot"), where)
    password = _password(raw.get("password_file"), where, base)
    fp = sessions.fingerprint(name, [str(n) for n in networks], path, access, maproot,
                              password, subdirs)
    return Export(name, networks, path, access == "ro", maproot, password, subdirs, fp)


def parse(text: str, base: Path, where: str = "exports") -> list[Export]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    unknown = sorted(set(doc) - {"export"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (rules are [[export]] tables)")
    raw = doc.get("export", [])
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: export must be an array of tables ([[export]])")
    out = [parse_export(r, i, base) for i, r in enumerate(raw)]
    names = [e.name for e in out]
    for n in names:
        if names.count(n) > 1:
            raise ConfigError(f"{where}: two exports are named {n!r}")
    return out


class ExportTable:
    """The rules of one exports file, read again when the file changes (at
    most once a second); a file that became bad keeps the last good rules
    (and says why in the log)."""

    def __init__(self, path: str, base: Path | None = None) -> None:
        self.path = Path(path)
        self.base = base or self.path.parent
        self.exports: list[Export] = []
        self.by_name: dict[str, Export] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._load()                    # a bad file at start-up: ConfigError

    def _load(self) -> None:
        try:
            st = self.path.stat()
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigError(f"exports_file {self.path}: {exc.strerror or exc}") from None
        self.exports = parse(text, self.base, f"exports_file {self.path}")
        self.by_name = {e.name: e for e in self.exports}
        self._stamp = (st.st_mtime_ns, st.st_size)

    def current(self, now: float) -> ExportTable:
        if now - self._checked >= 1.0:
            self._checked = now
            try:
                st = self.path.stat()
                if (st.st_mtime_ns, st.st_size) != self._stamp:
                    self._load()
                    log.info("exports: read %s again: %d rules", self.path, len(self.exports))
            except (OSError, ConfigError) as exc:
                log.error("exports: keeping the last good rules: %s", exc)
        return self

    def match(self, address: str, path: str, proven: set[str] | None = None) -> Export | None:
        """The first export for ``path`` from ``address`` whose password
        ``proven`` holds (export names), or that has none."""
        for e in self.exports:
            if e.covers(path) and e.allows(address) and (
                    e.password is None or (proven is not None and e.name in proven)):
                return e
        return None
