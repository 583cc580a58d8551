"""Directory quotas at the master, in process (fake chunkds): the RPCs, QUOTA
as HTTP 403, the refusal before a chunk is allocated (lease, first write,
record append), statfs, /metrics, the web page's JSON, a shadow refusing
quota_set, and the usage after a restart (replay) and after a checkpoint."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from master.core import Master
from master.state.namespace import ROOT_INO
from test_master_http import CS, Harness, pack, run


async def mkdir(h: Harness, parent: int, name: bytes) -> int:
    return (await h.call("mkdir", parent=parent, name=name, mode=0o755, uid=0, gid=0))["ino"]


async def create(h: Harness, parent: int, name: bytes) -> int:
    return (await h.call("create", parent=parent, name=name, mode=0o644, uid=0, gid=0))["ino"]


def usage(m: Master, ino: int) -> tuple[int, int]:
    q = m.ns.quotas[ino]
    return q.used_bytes, q.used_inodes


def test_quota_rpcs_enforcement_and_reports(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for cid in ("c1", "c2", "c3"):
            await h.register(cid, rack=cid)
        q = await mkdir(h, ROOT_INO, b"q")
        f = await create(h, q, b"f")
        row = await h.call("quota_set", ino=q, bytes=CS + 100, inodes=3, soft_inodes=2,
                           grace=3600.0)
        assert row["path"] == "/q" and (row["used_bytes"], row["used_inodes"]) == (0, 1)
        assert row["grace"] == 3600.0 and not row["soft_inodes_expired"]
        await h.fails("EINVAL", "quota_set", ino=q)                 # no limit
        await h.fails("EINVAL", "quota_set", ino=q, inodes=2, soft_inodes=3)
        await h.fails("ENOTDIR", "quota_set", ino=f, inodes=3)
        await h.fails("EINVAL", "quota_set", ino=q, bytes=-1)
        # inodes: the third is over soft (in grace), the fourth over hard: 403
        await mkdir(h, q, b"d")
        await create(h, q, b"g")
        status, reply = await h.raw("/rpc/create", pack({"parent": q, "name": b"h",
                                                         "mode": 0o644, "uid": 0, "gid": 0}))
        assert status == 403 and reply["error"]["code"] == "QUOTA"
        assert h.master.ns.child(q, b"h") is None
        # bytes: the first chunk fits, a second chunk beyond the limit is not allocated
        await h.call("lease", ino=f, index=0)
        await h.call("extend", ino=f, size=CS, mtime_ns=time.time_ns())
        chunks = dict(h.master.ns.chunks)
        await h.fails("QUOTA", "lease", ino=f, index=2)     # at least 2 * CS + 1 bytes
        await h.fails("QUOTA", "lease", ino=f, index=1, offset=0, data=b"x" * 101,
                      size=CS + 101, mtime_ns=1)
        assert h.master.ns.chunks == chunks and set(h.master.ns.inodes[f].chunks) == {0}
        await h.fails("QUOTA", "extend", ino=f, size=CS + 101, mtime_ns=1)
        await h.fails("QUOTA", "setattr", ino=f, size=CS + 101)
        await h.call("extend", ino=f, size=CS + 100, mtime_ns=1)       # exactly the limit
        g = h.master.ns.lookup(q, b"g").ino
        await h.fails("QUOTA", "lease", ino=g, index=0)        # the tree is full
        await h.fails("QUOTA", "append_lease", ino=g)          # record appends too
        assert usage(h.master, q) == (CS + 100, 3)
        # hard link and snapshot into the full tree
        out = await create(h, ROOT_INO, b"out")
        await h.fails("QUOTA", "link", ino=out, parent=q, name=b"o")
        await h.fails("QUOTA", "snapshot", src=out, parent=q, name=b"s")
        # reports
        listed = (await h.call("quota_list"))["quotas"]
        assert [r["path"] for r in listed] == ["/q"]
        mine = (await h.call("quota_list", ino=f))["quotas"]
        assert [r["ino"] for r in mine] == [q]
        assert (await h.call("statfs", ino=f))["quota"]["ino"] == q
        assert "quota" not in await h.call("statfs")         # the root has none
        await h.call("quota_set", ino=ROOT_INO, inodes=1000)
        root = (await h.call("statfs"))["quota"]
        assert root["ino"] == ROOT_INO and root["used_inodes"] == 5
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families((await h.http.get("/metrics")).text)
                   for s in fam.samples if s.name.startswith("gfs_master_quota_")}
        assert samples[("gfs_master_quota_used_bytes", (("path", "/q"),))] == CS + 100
        assert samples[("gfs_master_quota_limit_bytes", (("kind", "hard"), ("path", "/q")))] \
            == CS + 100
        assert samples[("gfs_master_quota_limit_inodes", (("kind", "soft"), ("path", "/q")))] == 2
        assert samples[("gfs_master_quota_used_inodes", (("path", "/"),))] == 5
        assert samples[("gfs_master_quota_soft_inodes_exceeded_seconds", (("path", "/q"),))] > 0
        assert ("gfs_master_quota_limit_bytes", (("kind", "soft"), ("path", "/q"))) not in samples
        cluster = (await h.http.get("/web/api/cluster")).json()
        assert {r["path"] for r in cluster["quotas"]} == {"/", "/q"}
        # removal frees it
        await h.call("quota_rm", ino=q)
        await h.fails("ENOENT", "quota_rm", ino=q)
        await create(h, q, b"h")
        await h.call("quota_set", ino=q, inodes=10, bytes=10 * CS)
        assert usage(h.master, q) == (CS + 100, 4)
    run(tmp_path, body)


def test_usage_after_restart_and_checkpoint(tmp_path: Path) -> None:
    state: dict[str, Any] = {}

    async def first(h: Harness) -> None:
        for cid in ("c1", "c2", "c3"):
            await h.register(cid, rack=cid)
        q = await mkdir(h, ROOT_INO, b"q")
        sub = await mkdir(h, q, b"sub")
        await h.call("quota_set", ino=q, bytes=20 * CS, inodes=100, soft_bytes=CS,
                     grace=3600.0)
        await h.call("quota_set", ino=sub, inodes=3)
        for i in range(3):
            f = await create(h, sub, b"f%d" % i)
            await h.call("extend", ino=f, size=(i + 1) * 1000 * 1000, mtime_ns=1)
        out = await mkdir(h, ROOT_INO, b"out")
        await create(h, out, b"x")
        await h.call("rename", parent=ROOT_INO, name=b"out", new_parent=q, new_name=b"out")
        await h.call("snapshot", src=sub, parent=q, name=b"snap")
        state["q"], state["sub"] = q, sub
        state["usage"] = {i: usage(h.master, i) for i in (q, sub)}
        state["since"] = h.master.ns.quotas[q].since_bytes
        assert state["since"] and state["usage"][q] == (12_000_000, 10)

    run(tmp_path, first)

    async def replayed(h: Harness) -> None:
        assert {i: usage(h.master, i) for i in state["usage"]} == state["usage"]
        assert h.master.ns.quotas[state["q"]].since_bytes == state["since"]
        await h.call("checkpoint")

    run(tmp_path, replayed)

    async def from_checkpoint(h: Harness) -> None:
        assert h.master.oplog.since_checkpoint <= 1
        assert {i: usage(h.master, i) for i in state["usage"]} == state["usage"]
        assert h.master.ns.quotas[state["q"]].since_bytes == state["since"]
        await h.fails("QUOTA", "create", parent=state["sub"], name=b"six", mode=0o644,
                      uid=0, gid=0)

    run(tmp_path, from_checkpoint)


def test_a_shadow_refuses_quota_changes(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        q = await mkdir(h, ROOT_INO, b"q")
        h.master.role.become_shadow("http://127.0.0.9:5000")
        for name, req in (("quota_set", {"ino": q, "inodes": 3}), ("quota_rm", {"ino": q})):
            status, reply = await h.raw(f"/rpc/{name}", pack(req))
            assert status == 421 and reply["error"]["code"] == "NOTPRIMARY"
        assert (await h.call("quota_list"))["quotas"] == []        # reads still served
    run(tmp_path, body)
