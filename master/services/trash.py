"""Lazy deletion (GFS §4.4): files whose last name is gone wait in trash for
``[master] trash_time`` seconds -- still readable and writable by whoever has
them open -- and are then purged; their chunks become garbage that the chunkds
delete when heartbeat replies tell them to.

:class:`TrashPurger` is the background loop; ``trash_restore`` and
``trash_purge`` are the ``gfs trash`` admin operations that change it (their
RPCs are in :mod:`master.api.server`); the listing, ``trash_list``, is a shared
query (:mod:`master.services.queries`)."""
from __future__ import annotations

import logging
import time
from typing import Any

import trio

from gfsfs.common.errors import Code, GFSError

from master.state import records
from master.core import Master

log = logging.getLogger(__name__)


class TrashPurger:
    def __init__(self, master: Master, batch: int = 1000) -> None:
        self.master = master
        self.batch = batch

    @property
    def period(self) -> float:
        return max(0.5, min(60.0, self.master.cfg.trash_time / 4))

    async def run_once(self, now_ns: int | None = None) -> int:
        """Purge what has waited long enough; returns how many inodes went."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        cutoff = now_ns - int(self.master.cfg.trash_time * 1e9)
        expired = self.master.ns.expired_trash(cutoff)[: self.batch]
        if expired:
            await self.master.mutate(records.purge(expired))
            log.info("purged %d files from trash", len(expired))
        return len(expired)

    async def run_forever(self) -> None:
        while True:
            await trio.sleep(self.period)
            try:
                await self.run_once()
            except Exception:
                log.exception("trash purge failed")


# ---------------------------------------------------------------- gfs trash (admin)

async def trash_restore(master: Master, ino: int, parent: int | None = None,
                        name: bytes | None = None) -> dict[str, Any]:
    """Give trashed ``ino`` a name again: its old one unless ``parent``/``name``."""
    ns = master.ns
    entry = ns.trash.get(ino)
    if entry is None:
        raise GFSError(Code.ENOENT, f"inode {ino} is not in the trash")
    _when, old_parent, old_name = entry
    if parent is None:
        parent = old_parent
        if ns.inodes.get(parent) is None or ns.inodes[parent].dir is None:
            raise GFSError(Code.ENOENT, f"its directory (inode {parent}) no longer exists; "
                                     "restore it elsewhere (--to NEWPATH)")
    if name is None:
        name = old_name
    if not name:
        raise GFSError(Code.EINVAL, "no name recorded for it; restore it with --to NEWPATH")
    pdir = ns.get_dir(parent)
    assert pdir.dir is not None
    if name in pdir.dir.entries:
        raise GFSError(Code.EEXIST, f"{name.decode('utf-8', 'backslashreplace')!r} exists in "
                                 f"inode {parent}; restore it elsewhere (--to NEWPATH)")
    await master.mutate(records.restore(ino, parent, name))
    return {"ino": ino, "parent": parent, "name": name, "attr": ns.attr(ns.get(ino))}


async def trash_purge(master: Master, older_than: float | None = None,
                      inos: list[int] | None = None) -> dict[str, Any]:
    """Purge trashed files now: those deleted more than ``older_than`` seconds
    ago (all when None), or only ``inos``. Their chunks that no other file
    references become garbage, deleted by the chunkds on their next heartbeat."""
    ns = master.ns
    cutoff = time.time_ns() - int((older_than or 0) * 1e9)
    chosen = [ino for ino, (when, _p, _n) in ns.trash.items()
              if (inos is None or ino in inos) and (older_than is None or when <= cutoff)]
    refs: dict[int, int] = {}
    size = 0
    for ino in chosen:
        inode = ns.inodes[ino]
        size += inode.size
        for handle in (inode.chunks or {}).values():
            refs[handle] = refs.get(handle, 0) + 1
    freed = sum(1 for h, n in refs.items() if ns.chunks.get(h, [0, 0])[1] <= n)
    if chosen:
        await master.mutate(records.purge(chosen))
        log.info("trash purge: %d files, %d chunks freed", len(chosen), freed)
    return {"purged": len(chosen), "bytes": size, "chunks_freed": freed,
            "chunks_shared": len(refs) - freed}
