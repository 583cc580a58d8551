"""Read-only queries over the master's state that the web page, the CLI's
RPCs and ``/metrics`` share: each written once, here.

- paths: :func:`paths_of`;
- the trash: :class:`TrashEntry` (:func:`trash_items`, :func:`trash_dirs`,
  :func:`trash_entries`), :func:`trash_bytes`, and the ``trash_list`` reply.

Nothing here speaks HTTP or changes the master's state. Every function is
synchronous: no await between reading the state and answering.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from master.state.namespace import ROOT_INO, Namespace

if TYPE_CHECKING:
    from master.core import Master

TrashItem = tuple[int, list[Any]]       # (ino, [deleted_ns, parent, name]) of Namespace.trash


def text(name: bytes) -> str:
    """A name as text (bytes that are not UTF-8 as backslash escapes)."""
    return name.decode("utf-8", "backslashreplace")


def paths_of(ns: Namespace, inos: set[int]) -> dict[int, str]:
    """A path for each of ``inos`` that has a name (one walk from the root)."""
    out: dict[int, str] = {}
    if not inos:
        return out
    stack: list[tuple[int, str]] = [(ROOT_INO, "")]
    while stack and len(out) < len(inos):
        ino, path = stack.pop()
        inode = ns.inodes.get(ino)
        if inode is None or inode.dir is None:
            continue
        for name, (child, _cookie) in inode.dir.entries.items():
            cpath = f"{path}/{text(name)}"
            if child in inos and child not in out:
                out[child] = cpath
            if ns.inodes.get(child) is not None and ns.inodes[child].dir is not None:
                stack.append((child, cpath))
    return out


# ---------------------------------------------------------------- trash

@dataclass(frozen=True)
class TrashEntry:
    """One trashed file. ``dir_path``: its old directory's current path ("" for
    the root), None when that directory is gone."""
    ino: int
    parent: int
    name: bytes | None
    dir_path: str | None
    size: int
    chunks: int
    deleted_ns: int

    @property
    def path(self) -> str | None:
        """The path it had; None when its directory is gone or it has no name."""
        if self.dir_path is None or not self.name:
            return None
        return f"{self.dir_path}/{text(self.name)}"


def trash_items(ns: Namespace, newest_first: bool = False,
                limit: int | None = None) -> list[TrashItem]:
    """The trash, oldest deletion first (newest first with ``newest_first``;
    equal times keep the trash's order), at most ``limit`` of it."""
    if newest_first:
        items = sorted(ns.trash.items(), key=lambda kv: -kv[1][0])
    else:
        items = sorted(ns.trash.items(), key=lambda kv: kv[1][0])
    return items if limit is None else items[:limit]


def trash_dirs(ns: Namespace, items: list[TrashItem]) -> dict[int, str]:
    """The current path of each old directory of ``items`` that still has one."""
    dirs = paths_of(ns, {parent for _ino, (_when, parent, _name) in items})
    dirs[ROOT_INO] = ""
    return dirs


def trash_entries(ns: Namespace, items: list[TrashItem],
                  dirs: dict[int, str]) -> list[TrashEntry]:
    """``items`` with their sizes, chunk counts and old directories' paths."""
    out = []
    for ino, (deleted_ns, parent, name) in items:
        inode = ns.inodes.get(ino)
        out.append(TrashEntry(ino, parent, name, dirs.get(parent),
                              inode.size if inode is not None else 0,
                              len(inode.chunks or ()) if inode is not None else 0,
                              deleted_ns))
    return out


def trash_bytes(ns: Namespace) -> int:
    """The size of every file in the trash."""
    return sum(ns.inodes[ino].size for ino in ns.trash if ino in ns.inodes)


def purge_ns(entry: TrashEntry, trash_time: float) -> int:
    """When the purger takes ``entry`` (ns since the epoch)."""
    return entry.deleted_ns + int(trash_time * 1e9)


def trash_list(master: Master) -> dict[str, Any]:
    """The ``trash_list`` reply: every trashed file, oldest deletion first, with
    the path it had (:attr:`TrashEntry.path`), size, deletion time and when the
    purger will take it."""
    ns, ttl = master.ns, master.cfg.trash_time
    items = trash_items(ns)
    entries = [{"ino": e.ino, "parent": e.parent, "name": e.name, "path": e.path,
                "size": e.size, "chunks": e.chunks, "deleted_ns": e.deleted_ns,
                "purge_ns": purge_ns(e, ttl)}
               for e in trash_entries(ns, items, trash_dirs(ns, items))]
    return {"trash_time": ttl, "entries": entries}
