"""master.services.queries: the trash, replication and chunkd views that the
web page, the CLI's RPCs and /metrics share, over a real Master (namespace
changed through records, chunkds registered with the registry, no sockets),
and the callers agreeing with each other."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from gfsfs.common.config import MasterConfig
from gfsfs.common.rpc import App
from master.api import metrics, web
from master.core import Master
from master.services import queries
from master.state import records
from master.state.namespace import ROOT_INO

CS = 1 << 20
GB = 1 << 30
T0 = 1_700_000_000 * 10**9          # ns: when the test's records happen


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def no_chunkd(addr: str, name: str, body: dict[str, Any]) -> Any:
    raise AssertionError("no chunkd calls expected")


class World:
    """A Master whose namespace is driven by records applied in memory."""

    def __init__(self, tmp: Path, **cfg: Any) -> None:
        self.clock = Clock()
        self.m = Master.open(MasterConfig(chunk_size=CS, data_dir=str(tmp), **cfg),
                             no_chunkd, clock=self.clock)
        self.ns, self.reg = self.m.ns, self.m.registry

    def do(self, rec: dict[str, Any]) -> Any:
        return self.ns.apply(rec)

    def mkdir(self, parent: int, name: bytes) -> int:
        return self.do(records.mkdir(parent, name, 0o755, 0, 0, self.ns.next_ino, now=T0))

    def file(self, parent: int, name: bytes, chunks: int = 0, size: int = 0) -> int:
        ino = self.do(records.create(parent, name, stat.S_IFREG | 0o644, 0, 0, 0,
                                     self.ns.next_ino, now=T0))
        for index in range(chunks):
            self.do(records.add_chunk(ino, index, self.ns.next_handle, 1))
        if size:
            self.do(records.extend(ino, size, T0, now=T0))
        return ino

    def handles(self, ino: int) -> list[int]:
        return [h for _i, h in sorted((self.ns.get(ino).chunks or {}).items())]

    def chunkd(self, cid: str, handles: list[int], rack: str = "r1",
               free: int = 50 * GB) -> None:
        self.reg.register(cid, f"http://{cid}", rack, 100 * GB, 100 * GB - free, free,
                          [(h, self.ns.chunks[h][0]) for h in handles], self.ns.chunks)

    def kill(self, cid: str) -> None:
        """Everyone but ``cid`` heartbeats; ``cid`` goes silent until it is dead."""
        self.clock.t += self.reg.heartbeat_interval * (self.reg.dead_after + 1)
        for other in self.reg.servers.values():
            if other.id != cid:
                other.last_heartbeat = self.clock.t
        assert self.reg.check_liveness() == [cid]


@pytest.fixture
def w(tmp_path: Path) -> Any:
    world = World(tmp_path)
    yield world
    world.m.close()


# ---------------------------------------------------------------- paths, trash

def test_paths_of_names_every_reachable_inode(w: World) -> None:
    d = w.mkdir(ROOT_INO, b"d")
    e = w.mkdir(d, b"e")
    f = w.file(e, b"caf\xc3\xa9")
    g = w.file(ROOT_INO, b"bad\xff")
    assert queries.paths_of(w.ns, {d, e, f, g, 999}) == {
        d: "/d", e: "/d/e", f: "/d/e/caf\u00e9", g: "/bad\\xff"}
    assert queries.paths_of(w.ns, set()) == {}


def trash_world(w: World) -> dict[str, int]:
    """t1 in the root, t2 in /d, t3 in /d/e (then removed): deleted in that order."""
    d = w.mkdir(ROOT_INO, b"d")
    e = w.mkdir(d, b"e")
    inos = {"t1": w.file(ROOT_INO, b"t1", 2, 2 * CS - 1), "t2": w.file(d, b"t2", 1, 10),
            "t3": w.file(e, b"t3", 1, 20), "keep": w.file(ROOT_INO, b"keep", 1, 99)}
    for n, (parent, name) in enumerate([(ROOT_INO, b"t1"), (d, b"t2"), (e, b"t3")]):
        w.do(records.unlink(parent, name, now=T0 + (n + 1) * 10**9))
    w.do(records.rmdir(d, b"e", now=T0 + 5 * 10**9))
    return inos


def test_trash_entries_paths_sizes_and_order(w: World) -> None:
    inos = trash_world(w)
    items = queries.trash_items(w.ns)
    assert [ino for ino, _ in items] == [inos["t1"], inos["t2"], inos["t3"]]
    newest = queries.trash_items(w.ns, newest_first=True, limit=2)
    assert [ino for ino, _ in newest] == [inos["t3"], inos["t2"]]
    dirs = queries.trash_dirs(w.ns, items)
    assert dirs[ROOT_INO] == "" and "/d" in dirs.values()
    entries = queries.trash_entries(w.ns, items, dirs)
    assert [(e.path, e.dir_path, e.size, e.chunks) for e in entries] == [
        ("/t1", "", 2 * CS - 1, 2), ("/d/t2", "/d", 10, 1), (None, None, 20, 1)]
    assert [e.deleted_ns for e in entries] == [T0 + 10**9, T0 + 2 * 10**9, T0 + 3 * 10**9]
    assert queries.trash_bytes(w.ns) == 2 * CS - 1 + 30          # "keep" is not trash
    assert queries.TrashEntry(1, 1, b"", "/d", 0, 0, 0).path is None      # no name


def test_trash_list_and_the_web_panel_show_the_same_trash(w: World) -> None:
    inos = trash_world(w)
    ttl = w.m.cfg.trash_time
    listing = queries.trash_list(w.m)
    assert listing["trash_time"] == ttl
    assert [(e["ino"], e["name"], e["path"], e["size"], e["chunks"]) for e in listing["entries"]] \
        == [(inos["t1"], b"t1", "/t1", 2 * CS - 1, 2), (inos["t2"], b"t2", "/d/t2", 10, 1),
            (inos["t3"], b"t3", None, 20, 1)]
    assert all(e["purge_ns"] == e["deleted_ns"] + int(ttl * 1e9) for e in listing["entries"])
    panel = web.WebUI(w.m, App("master"))._trash()
    assert (panel["count"], panel["bytes"]) == (3, queries.trash_bytes(w.ns))
    by_ino = {e["ino"]: e for e in listing["entries"]}
    for e in panel["entries"]:                    # newest first, same paths and sizes
        assert (e["path"], e["size"], e["deleted"]) == (
            by_ino[e["ino"]]["path"], by_ino[e["ino"]]["size"],
            by_ino[e["ino"]]["deleted_ns"] / 1e9)
    assert [e["ino"] for e in panel["entries"]] == [inos["t3"], inos["t2"], inos["t1"]]


# ---------------------------------------------------------------- replication state

def replication_world(w: World) -> dict[str, int]:
    """f (goal 3, 2 chunks), its snapshot s (goal 4, sharing them), g (goal 2,
    1 chunk), a trashed file t (goal 1); chunkds c1..c3, then c1 dies."""
    f = w.file(ROOT_INO, b"f", 2, 2 * CS)
    w.do(records.setgoal(f, 3, False, now=T0))
    w.do(records.snapshot(f, ROOT_INO, b"s", w.ns.next_ino, 1, now=T0))
    s = w.ns.lookup(ROOT_INO, b"s").ino
    w.do(records.setgoal(s, 4, False, now=T0))
    g = w.file(ROOT_INO, b"g", 1, 5)
    w.do(records.setgoal(g, 2, False, now=T0))
    t = w.file(ROOT_INO, b"t", 1, 7)
    w.do(records.setgoal(t, 1, False, now=T0))
    w.do(records.unlink(ROOT_INO, b"t", now=T0))
    fh, gh, th = w.handles(f), w.handles(g), w.handles(t)
    w.chunkd("c1", fh + gh, rack="a")
    w.chunkd("c2", fh + th, rack="a")
    w.chunkd("c3", fh[:1] + th, rack="b")
    w.kill("c1")
    return {"f": f, "s": s, "g": g, "t": t, "f0": fh[0], "f1": fh[1], "g0": gh[0],
            "t0": th[0]}


def test_scan_takes_the_largest_goal_and_live_replicas(w: World) -> None:
    x = replication_world(w)
    needs = queries.scan(w.m)
    assert set(needs) == {x["f0"], x["f1"], x["g0"], x["t0"]}
    f0 = needs[x["f0"]]
    assert f0.goal == 4 and sorted(s.id for s in f0.live) == ["c2", "c3"]
    assert sorted(f0.refs) == [(x["f"], 0), (x["s"], 0)] and not f0.trash_only
    assert needs[x["g0"]].live == [] and needs[x["t0"]].trash_only
    assert queries.chunk_goals(w.ns) == {x["f0"]: 4, x["f1"]: 4, x["g0"]: 2, x["t0"]: 1}


def test_counts_fsck_and_metrics_agree(w: World) -> None:
    x = replication_world(w)
    # f0: 2 live of 4, f1: 1 of 4, g0: lost, t0: 2 of 1 (over)
    assert queries.replication_counts(w.ns, w.reg) == (3, 1, 1)     # lost is under too
    w.reg.note_corrupt(x["f1"], "c1")
    report = queries.fsck(w.m)
    assert (report["chunks"], report["healthy"], report["lost"], report["under_goal"],
            report["over_goal"], report["corrupt"], report["stale"]) == (4, 0, 1, 2, 1, 1, 0)
    assert (report["chunkds_alive"], report["chunkds_dead"]) == (2, 1)
    states = {p["handle"]: p["states"] for p in report["problems"]}
    assert states == {x["f0"]: ["under_goal"], x["f1"]: ["under_goal", "corrupt"],
                      x["g0"]: ["lost"], x["t0"]: ["over_goal"]}
    files = {p["handle"]: p["files"] for p in report["problems"]}
    assert {f["path"] for f in files[x["f0"]]} == {"/f", "/s"}
    assert files[x["t0"]] == [{"ino": x["t"], "index": 0, "path": None, "in_trash": True}]
    st = queries.cluster_status(w.m)
    assert (st["under_goal"], st["lost"], st["over_goal"]) == (3, 1, 1)
    got = {m.name: m.samples[0].value for m in metrics.collect(w.m) if len(m.samples) == 1}
    assert (got["gfs_master_under_replicated_chunks"], got["gfs_master_lost_chunks"],
            got["gfs_master_over_replicated_chunks"]) == (3, 1, 1)


def test_per_file_summaries(w: World) -> None:
    x = replication_world(w)
    rep = {name: queries.file_replication(w.reg, w.ns.get(x[name])) for name in "fsgt"}
    assert rep["f"] == {"chunks": 2, "under": 2, "lost": 0, "state": "under"}
    assert rep["g"] == {"chunks": 1, "under": 1, "lost": 1, "state": "lost"}
    assert rep["t"] == {"chunks": 1, "under": 0, "lost": 0, "state": "healthy"}
    empty = w.file(ROOT_INO, b"empty")
    assert queries.file_replication(w.reg, w.ns.get(empty))["state"] == "empty"
    info = queries.fileinfo(w.m, x["f"])
    assert info["chunk_size"] == CS and not info["in_trash"]
    assert [(c["index"], c["refcount"], [r["id"] for r in c["replicas"]], c["primary"])
            for c in info["chunks"]] == [(0, 2, ["c2", "c3"], None), (1, 2, ["c2"], None)]
    assert queries.fileinfo(w.m, x["t"])["in_trash"]
    assert queries.live_replicas(w.reg, x["g0"]) == 0


# ---------------------------------------------------------------- chunkd state, reports

def test_chunkd_state(w: World) -> None:
    x = replication_world(w)
    assert [s.id for s in queries.chunkds_by_id(w.reg)] == ["c1", "c2", "c3"]
    assert queries.chunkd_counts(w.reg) == (2, 1)
    w.clock.t += 1.23456
    c2 = w.reg.servers["c2"]
    assert queries.heartbeat_age(w.reg, c2) == pytest.approx(1.23456)
    rows = queries.chunkd_status(w.reg)
    assert [(r["id"], r["alive"], r["chunks"]) for r in rows] == [
        ("c1", False, 0), ("c2", True, 3), ("c3", True, 2)]
    assert rows[1]["last_heartbeat_age"] == 1.235
    assert queries.pending_deletes(w.reg) == 0
    w.reg.collect_garbage([x["t0"]])                    # two replicas to delete
    assert queries.pending_deletes(w.reg) == 2
    assert queries.drain_remaining(w.m, "c2") == 2 and queries.drain_remaining(w.m, "c9") == 0
    assert queries.drain_status(w.m, c2) == {"id": "c2", "draining": False, "alive": True,
                                             "remaining": 2, "chunks": 2}


def test_cluster_status_status_and_metrics_count_the_same(w: World) -> None:
    replication_world(w)
    w.mkdir(ROOT_INO, b"dir")
    w.do(records.symlink(ROOT_INO, b"ln", b"f", 0, 0, w.ns.next_ino, now=T0))
    counts = queries.inode_counts(w.ns)
    assert counts == queries.InodeCounts(files=3, dirs=2, other=1, trash=1)
    st = queries.cluster_status(w.m)
    assert (st["files"], st["dirs"], st["trash_files"], st["inodes"]) == (3, 2, 1, 7)
    assert (st["chunkds_alive"], st["chunkds_dead"]) == (2, 1)
    assert st["servers"] == queries.chunkd_status(w.reg)
    status = queries.status(w.m)
    assert status["servers"] == st["servers"] and status["pending_deletes"] == 0
    assert status["chunks_without_replicas"] == 1           # g's chunk: c1 is dead
    by_kind = {s.labels["kind"]: s.value for m in metrics.collect(w.m)
               if m.name == "gfs_master_files" for s in m.samples}
    assert by_kind == {"file": 3, "dir": 2, "other": 1, "trash": 1}
    by_state = {s.labels["state"]: s.value for m in metrics.collect(w.m)
                if m.name == "gfs_master_chunkds" for s in m.samples}
    assert by_state == {"alive": 2, "dead": 1}
