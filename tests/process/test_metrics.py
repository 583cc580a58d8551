"""/metrics on the master and every chunkd of a real cluster, after real work
through a mount, parsed with prometheus_client's own parser."""
from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gfsfs.common import rpc
from gfsfs.common.protocol import INLINE_MAX
from gfsfs.tools.localcluster import Cluster

from conftest import TEST_CHUNK_SIZE, needs_fuse

pytestmark = [needs_fuse, pytest.mark.mount]

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(url: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, sample name -> [(labels, value)])."""
    resp = httpx.get(f"{url}/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    types: dict[str, str] = {}
    samples: Samples = {}
    for fam in text_string_to_metric_families(resp.text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return types, samples


def rpc_call(url: str, name: str, body: dict[str, object]) -> dict[str, object]:
    resp = httpx.post(f"{url}/rpc/{name}", content=rpc.pack(body), timeout=10)
    return rpc.decode_reply(resp.status_code, resp.content)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    assert name in samples, f"{name} missing; have {sorted(samples)}"
    return sum(v for lab, v in samples[name] if all(lab.get(k) == x for k, x in labels.items()))


def test_metrics_after_real_work(cluster: Cluster, mounted: Path) -> None:
    data = os.urandom(2 * TEST_CHUNK_SIZE + 12345)      # three chunks
    (mounted / "f").write_bytes(data)
    fd = os.open(mounted / "f", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)    # read from the chunkds
        got = b""
        while chunk := os.read(fd, 1 << 20):
            got += chunk
    finally:
        os.close(fd)
    assert got == data
    # the mount shares the chunkds' host, so it read their files (short-circuit);
    # read every chunk once more over HTTP, as a remote client would
    reply = rpc_call(cluster.url, "chunks", {"ino": os.stat(mounted / "f").st_ino,
                                             "first": 0, "count": 3})
    for c in reply["chunks"]:
        for rep in c["replicas"]:
            resp = httpx.get(f"{rep['addr']}/chunk/{c['handle']}", timeout=10, params={
                "offset": 0, "length": TEST_CHUNK_SIZE, "version": c["version"]})
            assert resp.status_code == 200
            assert resp.content == data[c["index"] * TEST_CHUNK_SIZE:][:TEST_CHUNK_SIZE]

    types, m = scrape(cluster.url)
    for fam, typ in [("gfs_requests", "counter"), ("gfs_request_seconds", "histogram"),
                     ("gfs_master_chunks", "gauge"), ("gfs_master_replicas", "gauge"),
                     ("gfs_master_under_replicated_chunks", "gauge"),
                     ("gfs_master_lost_chunks", "gauge"), ("gfs_master_files", "gauge"),
                     ("gfs_master_inodes", "gauge"), ("gfs_master_chunkds", "gauge"),
                     ("gfs_master_chunkd_capacity_bytes", "gauge"),
                     ("gfs_master_chunkd_used_bytes", "gauge"),
                     ("gfs_master_chunkd_free_bytes", "gauge"),
                     ("gfs_master_oplog_fsync_seconds", "histogram"),
                     ("gfs_master_leases", "gauge"), ("process_cpu_seconds", "counter")]:
        assert types.get(fam) == typ, (fam, types.get(fam))
    assert value(m, "gfs_master_chunks") == 3
    assert value(m, "gfs_master_replicas") == 9            # goal 3 on 3 chunkds
    assert value(m, "gfs_master_under_replicated_chunks") == 0
    assert value(m, "gfs_master_lost_chunks") == 0
    assert value(m, "gfs_master_files", kind="file") == 1
    assert value(m, "gfs_master_inodes") >= 2               # the root and f
    assert value(m, "gfs_master_chunkds", state="alive") == 3
    assert value(m, "gfs_master_chunkds", state="dead") == 0
    assert len(m["gfs_master_chunkd_capacity_bytes"]) == 3
    assert all(v > 0 for _, v in m["gfs_master_chunkd_capacity_bytes"])
    assert value(m, "gfs_master_leases") >= 1               # the chunks just written
    assert value(m, "gfs_master_oplog_fsync_seconds_count") >= 1
    assert value(m, "gfs_master_oplog_fsyncs_total") >= value(
        m, "gfs_master_oplog_fsync_seconds_count")
    assert value(m, "gfs_requests_total", route="/rpc/create", status="200") >= 1
    assert value(m, "gfs_requests_total", route="/rpc/lease", status="200") >= 3
    assert value(m, "gfs_requests_total", route="/rpc/register", status="200") >= 3
    assert value(m, "gfs_request_seconds_count", route="/rpc/create") >= 1
    assert value(m, "gfs_daemon_info", daemon="master") == 1

    # an unknown rpc name is one bounded label, not a new series per name
    httpx.post(f"{cluster.url}/rpc/no-such-thing-{os.getpid()}", content=b"")
    _, m = scrape(cluster.url)
    assert value(m, "gfs_requests_total", route="/rpc/unknown", status="404") >= 1 or \
        value(m, "gfs_requests_total", route="/rpc/unknown") >= 1
    assert not any(lab.get("route", "").startswith("/rpc/no-such")
                   for lab, _ in m["gfs_requests_total"])

    read_total = pushed_total = local_opens = 0.0
    for d in cluster.servers:
        types, c = scrape(d.url)
        for fam in ("gfs_chunkd_read_bytes", "gfs_chunkd_written_bytes", "gfs_chunkd_chunks",
                    "gfs_chunkd_used_bytes", "gfs_chunkd_capacity_bytes",
                    "gfs_chunkd_corrupt_blocks", "gfs_chunkd_push_received_bytes",
                    "gfs_requests", "gfs_request_seconds"):
            assert fam in types, (d.name, fam)
        assert value(c, "gfs_chunkd_written_bytes_total") >= len(data), d.name
        assert value(c, "gfs_chunkd_chunks") == 3, d.name
        assert value(c, "gfs_chunkd_used_bytes") == len(data), d.name
        assert value(c, "gfs_chunkd_capacity_bytes") >= value(c, "gfs_chunkd_used_bytes")
        assert value(c, "gfs_chunkd_corrupt_blocks_total") == 0
        assert value(c, "gfs_chunkd_info", chunkd=d.name) == 1
        assert value(c, "gfs_requests_total", route="/rpc/set_version", status="200") >= 3
        read_total += value(c, "gfs_chunkd_read_bytes_total")
        local_opens += value(c, "gfs_chunkd_local_opens_total")
        pushed_total += value(c, "gfs_chunkd_push_received_bytes_total")
    assert read_total >= 3 * len(data)        # the HTTP reads of every replica
    assert local_opens >= 3                   # the mount's reads: one open per chunk
    # every replica got every byte pushed, except pieces small enough to travel
    # inside the commit (INLINE_MAX: here the file's last, partial chunk piece)
    inline = len(data) % TEST_CHUNK_SIZE if len(data) % TEST_CHUNK_SIZE <= INLINE_MAX else 0
    assert pushed_total >= 3 * (len(data) - inline)
