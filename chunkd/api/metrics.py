"""The chunkd's ``/metrics``: read at scrape time from the store, the push
buffers, the pending reports, the epoch fence and the heartbeat loops (one
per master; the counters live there as plain ints), plus the request metrics
every daemon has (:mod:`gfsfs.common.metrics`)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import Metric

from gfsfs.common.metrics import DaemonMetrics, counter, gauge, labelled_gauge

if TYPE_CHECKING:
    from chunkd.api.server import ChunkServer


def install(server: ChunkServer) -> DaemonMetrics:
    """Serve ``GET /metrics`` for ``server`` on its App."""
    metrics = DaemonMetrics(server.app, "chunkd")
    metrics.add(lambda: collect(server))
    metrics.add(lambda: masters(server))
    return metrics


def collect(server: ChunkServer) -> Iterator[Metric]:
    store = server.store
    labels = {"chunkd": server.server_id, "rack": server.cfg.rack, "addr": server.addr}
    yield gauge("gfs_chunkd_info", "this chunkd's id, rack and address", 1, labels)
    yield counter("gfs_chunkd_read_bytes", "chunk bytes read (verified) from this chunkd's disk",
                  store.bytes_read)
    yield counter("gfs_chunkd_written_bytes", "chunk bytes written to this chunkd's disk",
                  store.bytes_written)
    yield counter("gfs_chunkd_fsyncs", "chunk fsyncs done on behalf of clients",
                  getattr(store, "fsyncs", 0))
    yield counter("gfs_chunkd_reads", "GET /chunk requests answered", server.reads)
    yield counter("gfs_chunkd_local_opens",
                  "chunks whose files were handed to a reader on this host (short-circuit)",
                  server.local_opens())
    yield counter("gfs_chunkd_corrupt_blocks",
                  "blocks found with a CRC32C mismatch (each drops and reports the replica)",
                  server.reports.corrupt_found)
    yield gauge("gfs_chunkd_chunks", "chunks (replicas) stored", store.count())
    cap, used, free = store.space()       # one statvfs: quick enough for a scrape
    yield gauge("gfs_chunkd_capacity_bytes", "capacity (capacity_bytes, else the disk's size)",
                cap)
    yield gauge("gfs_chunkd_used_bytes", "bytes of chunk data stored", used)
    yield gauge("gfs_chunkd_free_bytes", "bytes this chunkd can still take", free)
    buffers = server.buffers
    yield counter("gfs_chunkd_push_received_bytes",
                  "bytes pushed to this chunkd (by clients or the previous chunkd of a chain)",
                  buffers.received_bytes)
    yield gauge("gfs_chunkd_push_buffered_bytes",
                "pushed bytes held (waiting for their commit, or kept for a retried one)",
                buffers.bytes)
    yield gauge("gfs_chunkd_push_reserved_bytes", "room held for pushes still arriving",
                buffers.reserved)
    yield gauge("gfs_chunkd_push_buffer_limit_bytes", "push_buffer_bytes: the cap on the two above",
                buffers.max_bytes)
    yield counter("gfs_chunkd_push_expired_bytes",
                  "pushed bytes dropped unused after push_buffer_ttl", buffers.expired_bytes)
    yield counter("gfs_chunkd_push_evicted_bytes",
                  "pushed bytes dropped early to make room for newer pushes", buffers.evicted_bytes)
    yield counter("gfs_chunkd_push_waits", "pushes that waited for room in full push buffers",
                  buffers.waits)
    yield counter("gfs_chunkd_push_rejected",
                  "pushes answered EAGAIN: the buffers stayed full for push_buffer_wait",
                  buffers.rejected)
    yield gauge("gfs_chunkd_push_buffers", "pushed bodies waiting for their commit",
                len(buffers))


def masters(server: ChunkServer) -> Iterator[Metric]:
    """The epoch fence and each master of ``master_url``, by ``master`` (its URL)."""
    yield gauge("gfs_chunkd_epoch", "the highest master epoch this chunkd has seen",
                server.fence.epoch)
    yield counter("gfs_chunkd_stale_orders",
                  "master orders refused STALE: from an older epoch than the highest seen",
                  server.fence.refused)
    states = [h.state() for h in server.masters]
    for name, doc, key in (
            ("gfs_chunkd_master_up", "1 if the master answered this chunkd's last round",
             "reachable"),
            ("gfs_chunkd_master_primary",
             "1 for a primary of the highest epoch (its delete lists are obeyed)", "primary"),
            ("gfs_chunkd_master_epoch", "the epoch in the master's last reply", "epoch"),
            ("gfs_chunkd_master_last_heartbeat_timestamp_seconds",
             "when the master last answered a round (Unix time; 0: never)", "last_heartbeat")):
        yield labelled_gauge(name, doc, ["master"],
                             [([st["url"]], float(st[key])) for st in states])
