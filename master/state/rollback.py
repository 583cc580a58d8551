"""Undoing what the op log failed to make durable (ENOSPC, EIO on write/fsync).

:meth:`Master.mutate` applies a record in memory before its group commit; when
that commit's write or fsync fails, every record after ``durable_seq`` is lost
(:meth:`OpLog._fail` cuts the file back to its durable end). :func:`undo`
then rebuilds the namespace from what is on disk -- the newest checkpoint and
the records up to ``durable_seq`` -- and swaps it in *in place* (the same
:class:`Namespace` object, so nobody holds a stale reference), before any
waiter of the failed commit is answered. What the rest of the master derived
from the lost records is put right:

* chunks only the lost records created (allocations, copy-on-write copies)
  are garbage: their replicas are queued for deletion (handles and inode
  numbers are not reused: ``next_handle``/``next_ino`` keep their high-water
  marks);
* chunks whose version went back (a lost lease grant: the replicas already
  took the higher version) are remembered and the higher version is logged
  again once the log is writable (as a restarted master adopts it, GFS §4.5);
* chunk deletions wait for durability anyway (``OpLog.when_durable``), so a
  lost unlink or truncate never deleted a replica.

While the rebuild runs (in a thread) reads still see the undone records, as
they see any record between its apply and its fsync; mutations are refused.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from master.state import image, records
from master.state.logread import load
from master.state.namespace import Namespace

if TYPE_CHECKING:
    from master.core import Master

log = logging.getLogger(__name__)


def rebuild(data_dir: Path, upto: int, chunk_size: int, goal: int) -> Namespace:
    """The namespace after record ``upto``, from the files in ``data_dir``."""
    loaded = load(data_dir, upto)
    if loaded.last_seq != upto:
        raise RuntimeError(f"the op log on disk ends at record {loaded.last_seq}, "
                           f"not at the durable {upto}")
    ns = (image.from_state(loaded.state, goal) if loaded.state is not None
          else Namespace(chunk_size, goal))
    for entry in loaded.entries:
        ns.apply(entry.rec)
    ns.take_garbage()
    return ns


async def undo(master: Master) -> None:
    """Bring ``master.ns`` back to the durable state; raises if it cannot."""
    oplog = master.oplog
    fresh = await trio.to_thread.run_sync(rebuild, oplog.dir, oplog.durable_seq,
                                          master.ns.chunk_size, master.cfg.replication_factor)
    swap(master, fresh)


def swap(master: Master, fresh: Namespace) -> None:
    """Replace the contents of ``master.ns`` with ``fresh`` and fix the registry."""
    old, reg = master.ns, master.registry
    fresh.next_ino = max(fresh.next_ino, old.next_ino)
    fresh.next_handle = max(fresh.next_handle, old.next_handle)
    # chunks only undone records made (also when a later undone record freed them)
    orphans = sorted({h for h in (*old.chunks, *reg.locations) if h not in fresh.chunks})
    for handle, (version, _refs) in old.chunks.items():
        entry = fresh.chunks.get(handle)
        if entry is not None and entry[0] < version:
            master.readopt[handle] = max(version, master.readopt.get(handle, 0))
    old.__dict__.clear()
    old.__dict__.update(fresh.__dict__)
    reg.collect_garbage(orphans)
    log.warning("op log failure: namespace rebuilt from the durable records (%d inodes); "
                "%d chunks of undone records queued for deletion, %d versions to re-log",
                len(old.inodes), len(orphans), len(master.readopt))


async def readopt(master: Master) -> None:
    """Log again the chunk versions replicas took under undone records."""
    todo, master.readopt = master.readopt, {}
    for handle, version in sorted(todo.items()):
        current = master.ns.version(handle)
        if current is None or current >= version:
            continue
        try:
            await master.mutate(records.set_version(handle, version))
        except Exception as exc:
            log.warning("re-logging version %d of chunk %d failed: %s", version, handle, exc)
            master.readopt[handle] = version
