"""The master's ``/metrics``: state read at scrape time, plus op-log fsync latency.

Everything but the request metrics (see :mod:`gfsfs.common.metrics`) and the fsync
histogram is computed from the live namespace and chunk registry when
Prometheus scrapes, so there is no second copy of any count to drift. The
under-replicated / lost counts walk every inode once (as ``gfs status`` does).
"""
from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import Histogram
from prometheus_client.core import Metric

from gfsfs.common.metrics import FSYNC_BUCKETS, DaemonMetrics, counter, gauge, labelled_gauge
from gfsfs.common.rpc import ADMIN, App

from master.chunks.registry import ChunkRegistry
from master.core import Master
from master.services import queries, quotas
from master.state.namespace import Namespace
from master.state.oplog import OpLog


def install(master: Master, app: App) -> DaemonMetrics:
    """Serve ``GET /metrics`` for ``master`` on ``app``."""
    metrics = DaemonMetrics(app, "master", access=ADMIN)     # signed, or the admin token
    fsync = Histogram("gfs_master_oplog_fsync_seconds",
                      "op log group commit: one write + fsync of every record waiting",
                      buckets=FSYNC_BUCKETS, registry=metrics.registry)
    master.oplog.fsync_observers.append(fsync.observe)
    metrics.add(lambda: collect(master))
    return metrics


def collect(master: Master) -> Iterator[Metric]:
    """Every metric of the master's state, read now: namespace, chunks and
    their replication state, chunk servers, op log, masters (in that order)."""
    yield from namespace_metrics(master.ns)
    yield from quota_metrics(master.ns)
    yield from chunk_metrics(master)
    yield from chunkd_metrics(master.registry)
    yield from oplog_metrics(master.oplog)
    yield from ha_metrics(master)


def namespace_metrics(ns: Namespace) -> Iterator[Metric]:
    """Inodes, and files by kind."""
    counts = queries.inode_counts(ns)
    yield gauge("gfs_master_inodes", "inodes in the namespace (files, dirs, symlinks, trash)",
                len(ns.inodes))
    yield labelled_gauge("gfs_master_files",
                         "inodes by kind: file (regular, not in trash), dir, other "
                         "(symlinks), trash (unlinked files awaiting purge)",
                         ["kind"], [(["file"], counts.files), (["dir"], counts.dirs),
                                    (["other"], counts.other), (["trash"], counts.trash)])


def quota_metrics(ns: Namespace) -> Iterator[Metric]:
    """Per quota directory (label ``path``): usage, and the limits set (docs/quotas.md)."""
    rows = quotas.rows(ns)
    for res in ("bytes", "inodes"):
        yield labelled_gauge(f"gfs_master_quota_used_{res}",
                             f"{res} below a quota directory", ["path"],
                             [([r["path"] or f"ino:{r['ino']}"], r[f"used_{res}"]) for r in rows])
        yield labelled_gauge(f"gfs_master_quota_limit_{res}",
                             f"a quota directory's limit on {res} (kind: hard, soft); "
                             "absent: none", ["path", "kind"],
                             [([r["path"] or f"ino:{r['ino']}", kind], r[key])
                              for r in rows for kind, key in (("hard", res),
                                                              ("soft", "soft_" + res))
                              if r[key]])
        yield labelled_gauge(f"gfs_master_quota_soft_{res}_exceeded_seconds",
                             f"how long a quota directory has been over its soft {res} "
                             "limit (0: it is not)", ["path"],
                             [([r["path"] or f"ino:{r['ino']}"],
                               max(0.0, time.time() - r[f"since_{res}"] / 1e9)
                               if r[f"since_{res}"] else 0.0) for r in rows])


def chunk_metrics(master: Master) -> Iterator[Metric]:
    """Chunks, replicas, replication state, deletes and leases."""
    ns, reg = master.ns, master.registry
    under, lost, over = queries.replication_counts(ns, reg)
    yield gauge("gfs_master_chunks", "chunks the namespace references", len(ns.chunks))
    yield gauge("gfs_master_replicas", "known replicas of current chunk versions",
                sum(len(locs) for locs in reg.locations.values()))
    yield gauge("gfs_master_under_replicated_chunks",
                "chunks with fewer live replicas than the goal of their files", under)
    yield gauge("gfs_master_lost_chunks", "chunks with no live replica at all", lost)
    yield gauge("gfs_master_over_replicated_chunks",
                "chunks with more live replicas than their goal", over)
    yield gauge("gfs_master_pending_chunk_deletes",
                "garbage replicas queued for deletion on their chunkds",
                queries.pending_deletes(reg))
    now_ns = time.time_ns()
    yield gauge("gfs_master_leases", "chunk leases currently held by a primary",
                sum(1 for h in list(reg.leases) if reg.valid_lease(h, now_ns) is not None))
    yield counter("gfs_master_refused_versions",
                  "chunk reports claiming a version no grant of this master explains",
                  master.leases.refused_versions)
    shares = master.shares
    if shares is not None:
        yield counter("gfs_master_export_sessions_opened",
                      "mounts let in by an export rule (session_open)", shares.opened)
        yield counter("gfs_master_export_opens_refused",
                      "session_open refusals (no rule, wrong password)", shares.refused)


def chunkd_metrics(reg: ChunkRegistry) -> Iterator[Metric]:
    """Chunk servers: by state, each one's space and heartbeat age, the totals."""
    servers = queries.chunkds_by_id(reg)
    alive, dead = queries.chunkd_counts(reg)
    yield labelled_gauge("gfs_master_chunkds", "registered chunk servers by state", ["state"],
                         [(["alive"], alive), (["dead"], dead)])
    rows = [[s.id, s.rack] for s in servers]
    yield labelled_gauge("gfs_master_chunkd_up", "1 if the chunkd is alive (heartbeating)",
                         ["chunkd", "rack"], [(r, int(s.alive)) for r, s in zip(rows, servers)])
    yield labelled_gauge("gfs_master_chunkd_capacity_bytes", "capacity a chunkd reports",
                         ["chunkd", "rack"], [(r, s.capacity_bytes) for r, s in zip(rows, servers)])
    yield labelled_gauge("gfs_master_chunkd_used_bytes", "bytes of chunks a chunkd holds",
                         ["chunkd", "rack"], [(r, s.used_bytes) for r, s in zip(rows, servers)])
    yield labelled_gauge("gfs_master_chunkd_free_bytes", "bytes a chunkd can still take",
                         ["chunkd", "rack"], [(r, s.free_bytes) for r, s in zip(rows, servers)])
    yield labelled_gauge("gfs_master_chunkd_chunks", "current replicas the master places there",
                         ["chunkd", "rack"], [(r, len(s.handles)) for r, s in zip(rows, servers)])
    mono = reg.clock()
    yield labelled_gauge("gfs_master_chunkd_heartbeat_age_seconds",
                         "seconds since the chunkd's last heartbeat", ["chunkd", "rack"],
                         [(r, max(0.0, queries.heartbeat_age(reg, s, mono)))
                          for r, s in zip(rows, servers)])
    totals = reg.totals()
    yield gauge("gfs_master_capacity_bytes", "capacity of all live chunkds",
                totals.get("total_bytes", 0))
    yield gauge("gfs_master_used_bytes", "bytes used on all live chunkds",
                totals.get("used_bytes", 0))
    yield gauge("gfs_master_free_bytes", "bytes free on all live chunkds",
                totals.get("free_bytes", 0))


def oplog_metrics(oplog: OpLog) -> Iterator[Metric]:
    """Sequence numbers, fsyncs and failures of the op log."""
    yield gauge("gfs_master_oplog_last_seq", "sequence number of the last logged record",
                oplog.last_seq)
    yield gauge("gfs_master_oplog_durable_seq", "last record known to be fsync'd",
                oplog.durable_seq)
    yield gauge("gfs_master_oplog_checkpoint_seq", "record the newest checkpoint covers",
                oplog.checkpoint_seq)
    yield gauge("gfs_master_oplog_records_since_checkpoint",
                "records a restart would replay", oplog.since_checkpoint)
    yield counter("gfs_master_oplog_fsyncs", "op log fsyncs (group commits) since start",
                  oplog.fsyncs)
    yield gauge("gfs_master_oplog_failed",
                "1 while the op log cannot be written (ENOSPC, EIO): mutations are refused",
                int(oplog.failed is not None))
    yield counter("gfs_master_oplog_failures",
                  "op log write/fsync failures since start (each undid its records)",
                  oplog.failures)


def ha_metrics(master: Master) -> Iterator[Metric]:
    """This master's role and epoch; its shadows' lag, or its own."""
    role, shipper = master.role, master.shipper
    yield gauge("gfs_master_primary", "1 while this master is the primary (may mutate)",
                int(role.rules()))
    yield gauge("gfs_master_epoch", "the master epoch (raised by each promotion)", role.epoch)
    shadows = shipper.status()
    yield labelled_gauge("gfs_master_shadow_records_behind",
                         "op log records a following shadow has yet to acknowledge",
                         ["shadow"], [([s["url"]], s["behind"]) for s in shadows])
    yield labelled_gauge("gfs_master_shadow_synchronous",
                         "1 if the shadow is in the synchronous set (mutations wait for it)",
                         ["shadow"], [([s["url"]], int(s["synchronous"])) for s in shadows])
    yield counter("gfs_master_shadow_drops",
                  "times a shadow left the synchronous set for not acknowledging in time",
                  shipper.drops)
    yield counter("gfs_master_shadow_waits", "mutations whose reply waited for a shadow",
                  shipper.waits)
    lag = master.follower_lag() if master.follower_lag is not None and not role.primary else None
    yield gauge("gfs_master_records_behind_primary",
                "on a shadow: records the primary has that this master has not applied",
                (lag["records_behind"] or 0) if lag else 0)
    yield gauge("gfs_master_seconds_since_primary",
                "on a shadow: seconds since it last heard from its primary",
                (lag["seconds_behind"] or 0.0) if lag else 0.0)
