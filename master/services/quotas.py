"""Directory quotas for people and programs: set, remove, list (the RPCs, the
CLI, /metrics, the web page). The accounting is :mod:`master.state.quota`'s;
every change here is a logged record (``setquota``, ``rmquota``)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from master.state import quota, records
from master.state.quota import Quota

if TYPE_CHECKING:
    from master.core import Master
    from master.state.namespace import Namespace


def row(ns: Namespace, q: Quota, now: int | None = None) -> dict[str, Any]:
    """A quota's limits and usage, with its directory's path."""
    return {**q.row(time.time_ns() if now is None else now), "path": quota.dir_path(ns, q.ino)}


def rows(ns: Namespace, ino: int | None = None) -> list[dict[str, Any]]:
    """Every quota by path; with ``ino``, those that apply to it, nearest first."""
    now = time.time_ns()
    if ino is None:
        out = [row(ns, q, now) for q in ns.quotas.values()]
        return sorted(out, key=lambda r: r["path"] or "")
    inode = ns.get(ino)
    if inode.dir is not None:
        dirs = quota.quota_dirs(ns, ino)
    else:
        found = quota.inode_quotas(ns, inode)
        dirs = [d for d in quota.quota_dirs(ns, inode.parent)] if inode.parent else []
        dirs += sorted(found - set(dirs))
    return [row(ns, ns.quotas[d], now) for d in dirs]


async def set_quota(master: Master, ino: int, limits: dict[str, int],
                    grace_ns: int) -> dict[str, Any]:
    await master.mutate(records.setquota(ino, grace_ns=grace_ns, **limits))
    return row(master.ns, master.ns.quotas[ino])


async def remove_quota(master: Master, ino: int) -> None:
    await master.mutate(records.rmquota(ino))
