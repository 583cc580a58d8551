"""master.services.replication in process (fake chunkds, no sockets): priority, throttle,
placement of copies, lease revocation before a copy, copies overtaken by a new
version, trimming over-goal replicas, and fsck's report."""
from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import trio

from gfsfs.common.errors import GFSError
from master.services.queries import fsck, scan
from master.services.replication import Replicator
from test_master_http import GB, Harness, run


async def setup(h: Harness, racks: dict[str, str], files: int = 2, chunks: int = 2) -> list[int]:
    for cid, rack in racks.items():
        await h.register(cid, rack=rack, free=(10 + int(cid[1:])) * GB)
    inos = []
    for i in range(files):
        ino = (await h.call("create", parent=1, name=f"f{i}".encode(),
                            mode=stat.S_IFREG | 0o644, uid=0, gid=0))["ino"]
        for index in range(chunks):
            await h.call("lease", ino=ino, index=index)
        inos.append(ino)
    return inos


def kill(h: Harness, cid: str) -> None:
    reg = h.master.registry
    srv = reg.servers[cid]
    srv.alive = False
    reg._forget_replicas(srv)


def replicate_ok(h: Harness) -> Any:
    async def caller(addr: str, name: str, body: dict[str, Any]) -> Any:
        h.chunkds.calls.append((addr, name, body))
        if name != "replicate":
            return {}
        return {"handle": body["handle"], "version": body["version"], "length": 1000}
    return caller


def test_priority_throttle_and_targets(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await setup(h, {"c1": "a", "c2": "a", "c3": "b", "c4": "c", "c5": "c"})
        reg = h.master.registry
        # every chunk sits on the three emptiest-by-rack servers; take two away
        first = next(iter(reg.locations))
        holders = sorted(reg.locations[first])
        kill(h, holders[0])
        rep = Replicator(h.master, caller=replicate_ok(h), grace=0)
        needs = scan(h.master)
        assert all(len(n.live) == 2 for n in needs.values())
        copies = rep.plan(needs)
        # replication_max 3, per chunkd 2: never more, each chunkd in <= 2 copies
        assert 0 < len(copies) <= 3
        for cid in reg.servers:
            assert sum((c.source.id == cid) + (c.target.id == cid) for c in copies) <= 2
        for c in copies:
            assert c.target.id not in reg.locations[c.handle] and c.target.alive
            assert c.source.id in reg.locations[c.handle]
        # a chunk down to one replica goes before all the others
        kill(h, holders[1])
        rep2 = Replicator(h.master, caller=replicate_ok(h), grace=0)
        needs = scan(h.master)
        lonely = sorted(n.handle for n in needs.values() if len(n.live) == 1)
        assert lonely
        assert rep2.plan(needs)[0].handle == lonely[0]
    run(tmp_path, body, replication_max=3, replication_per_chunkd=2)


def test_copy_revokes_lease_bumps_version_and_records(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        inos = await setup(h, {"c1": "a", "c2": "b", "c3": "c", "c4": "d"}, files=1, chunks=1)
        reg, ns = h.master.registry, h.master.ns
        handle = next(iter(ns.chunks))
        assert handle in reg.leases and ns.version(handle) == 1
        victim = sorted(reg.locations[handle])[0]
        kill(h, victim)
        rep = Replicator(h.master, caller=replicate_ok(h), grace=0)
        assert await rep.run_once() == 1
        assert ns.version(handle) == 2 and handle not in reg.leases
        calls = [(a, n, b) for a, n, b in h.chunkds.calls if b.get("handle") == handle]
        assert any(n == "set_version" and b["version"] == 2 for _a, n, b in calls)
        rep_calls = [(a, b) for a, n, b in calls if n == "replicate"]
        assert len(rep_calls) == 1 and rep_calls[0][1]["version"] == 2
        assert len(reg.replicas(handle)) == 3 and victim not in reg.locations[handle]
        assert rep.copies_done == 1 and not rep.inflight and not rep.load
        # nothing more to do; fsck agrees
        assert await rep.run_once() == 0
        report = fsck(h.master)
        assert report["under_goal"] == report["lost"] == 0 and report["chunks"] == 1
        # the dead chunkd comes back with v1: stale, deleted, and fsck saw it
        reply = await h.register(victim, rack="a", chunks=[[handle, 1]])
        assert reply["delete"] == [handle]
        report = fsck(h.master)
        assert report["stale"] == 1 and report["problems"][0]["stale"][0]["id"] == victim
        assert report["problems"][0]["files"][0]["path"] == "/f0"
        del inos
    run(tmp_path, body)


def test_copy_revokes_the_lease_of_a_primary_declared_dead(tmp_path: Path) -> None:
    """A primary cut off from the master is declared dead and its lease leaves
    the table, but clients that reach it can still commit through it until
    the lease expires. A copy made meanwhile must raise the version, or the
    new replica misses those writes at the same version (seen: a partition
    test read old bytes after the heal)."""
    async def body(h: Harness) -> None:
        await setup(h, {"c1": "a", "c2": "b", "c3": "c", "c4": "d"}, files=1, chunks=1)
        reg, ns = h.master.registry, h.master.ns
        handle = next(iter(ns.chunks))
        primary = reg.leases[handle].primary
        kill(h, primary)
        assert handle not in reg.leases          # dropped with its primary, not expired
        rep = Replicator(h.master, caller=replicate_ok(h), grace=0)
        assert await rep.run_once() == 1
        assert ns.version(handle) == 2
        rep_calls = [b for _a, n, b in h.chunkds.calls
                     if n == "replicate" and b.get("handle") == handle]
        assert len(rep_calls) == 1 and rep_calls[0]["version"] == 2
        reply = await h.register(primary, rack="a", chunks=[[handle, 1]])
        assert reply["delete"] == [handle]       # back with v1: stale
    run(tmp_path, body)


def test_copy_overtaken_by_a_new_version_is_not_recorded(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await setup(h, {"c1": "a", "c2": "b", "c3": "c", "c4": "d"}, files=1, chunks=1)
        reg, ns = h.master.registry, h.master.ns
        handle = next(iter(ns.chunks))
        kill(h, sorted(reg.locations[handle])[0])

        async def caller(addr: str, name: str, body: dict[str, Any]) -> Any:
            if name == "replicate":       # a new lease lands while the copy runs
                await h.master.mutate({"op": "set_version", "handle": handle,
                                       "version": body["version"] + 1})
                return {"handle": handle, "version": body["version"], "length": 5}
            return {}

        rep = Replicator(h.master, caller=caller, grace=0)
        await rep.run_once()
        assert len(reg.replicas(handle)) == 2
        target = [cid for cid, hs in reg.pending_delete.items() if handle in hs]
        assert len(target) == 1 and target[0] not in reg.locations[handle]
        assert rep.copies_done == 0
    run(tmp_path, body)


def test_failed_copy_releases_the_throttle(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await setup(h, {"c1": "a", "c2": "b", "c3": "c", "c4": "d"}, files=1, chunks=1)
        handle = next(iter(h.master.ns.chunks))
        kill(h, sorted(h.master.registry.locations[handle])[0])

        async def caller(addr: str, name: str, body: dict[str, Any]) -> Any:
            if name == "replicate":
                raise GFSError("UNAVAILABLE", "source went away")
            return {}

        rep = Replicator(h.master, caller=caller, grace=0)
        assert await rep.run_once() == 1
        assert rep.copies_failed == 1 and not rep.inflight and not rep.load
    run(tmp_path, body)


def test_trim_over_goal_fullest_first_and_not_under_lease(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await setup(h, {"c1": "a", "c2": "b", "c3": "c", "c4": "d"}, files=1, chunks=1)
        reg, ns = h.master.registry, h.master.ns
        handle = next(iter(ns.chunks))
        extra = next(cid for cid in reg.servers if cid not in reg.locations[handle])
        reg.add_replicas(reg.servers[extra], [(handle, ns.version(handle))], ns.chunks)
        assert len(reg.replicas(handle)) == 4
        rep = Replicator(h.master, caller=replicate_ok(h), grace=0)
        assert rep.trim(scan(h.master)) == 0          # a lease is out: wait
        reg.leases.clear()
        fullest = min(reg.replicas(handle), key=lambda s: s.free_bytes).id
        assert rep.trim(scan(h.master)) == 1
        assert len(reg.replicas(handle)) == 3 and fullest not in reg.locations[handle]
        assert handle in reg.pending_delete[fullest]
        beat = await h.call("heartbeat", id=fullest, capacity_bytes=100 * GB,
                            used_bytes=GB, free_bytes=GB, chunk_count=1)
        assert beat["delete"] == [handle]
    run(tmp_path, body)


def test_outdated_creation_report_does_not_delete_a_current_replica(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        await setup(h, {"c1": "a", "c2": "b", "c3": "c"}, files=1, chunks=1)
        reg, ns = h.master.registry, h.master.ns
        handle = next(iter(ns.chunks))
        reg.leases.clear()
        await h.call("lease", ino=2, index=0)          # a new grant: v2 on all three
        assert ns.version(handle) == 2
        holder = sorted(reg.locations[handle])[0]
        # the "created at v1" report arrives only now
        reply = await h.call("report_chunks", id=holder, added=[[handle, 1]])
        assert reply["delete"] == [] and holder in reg.locations[handle]
    run(tmp_path, body)


def test_run_forever_is_cancellable(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        rep = Replicator(h.master, caller=replicate_ok(h), period=0.01, grace=0)
        with trio.move_on_after(0.1):
            await rep.run_forever()
    run(tmp_path, body)


def test_a_chunk_a_client_asks_for_goes_first(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        inos = await setup(h, {"c1": "a", "c2": "b", "c3": "c", "c4": "d"}, files=3, chunks=1)
        reg = h.master.registry
        holders = {cid for locs in reg.locations.values() for cid in locs}
        kill(h, sorted(holders)[0])
        needs = scan(h.master)
        under = sorted(n.handle for n in needs.values() if len(n.live) < n.goal)
        assert len(under) >= 2
        # a client reads the file whose chunk would otherwise come last
        last = under[-1]
        ino = next(i for i in inos if h.master.ns.chunk_at(i, 0) == last)
        await h.call("chunks", ino=ino, first=0, count=1)
        rep = Replicator(h.master, caller=replicate_ok(h), grace=0)
        assert rep.plan(scan(h.master))[0].handle == last
    run(tmp_path, body, replication_max=1, replication_per_chunkd=1)


def test_the_replicators_scan_yields_to_requests_and_equals_the_full_scan(
        tmp_path: Path) -> None:
    """issue 15: the round's scan lets other tasks run every few thousand
    inodes (the request loop is not stalled for the whole scan), and finds
    what the one-piece scan finds; a file removed meanwhile is not in it."""
    from master.services.queries import scan_cooperatively

    async def body(h: Harness) -> None:
        inos = await setup(h, {"c1": "a", "c2": "b", "c3": "c"}, files=6, chunks=2)
        want = scan(h.master)
        ran: list[int] = []

        async def other() -> None:
            for i in range(1000):
                ran.append(i)
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
            got = await scan_cooperatively(h.master, step=2)
            nursery.cancel_scope.cancel()
        assert len(ran) >= 3                     # it ran between the scan's steps
        assert {h_: (n.goal, sorted(n.refs), len(n.live)) for h_, n in got.items()} == \
            {h_: (n.goal, sorted(n.refs), len(n.live)) for h_, n in want.items()}
        gone = set(h.master.ns.inodes[inos[0]].chunks.values())
        await h.call("unlink", parent=1, name=b"f0")
        await h.call("trash_purge", inos=[inos[0]])
        assert not gone & set(await scan_cooperatively(h.master, step=2))
    run(tmp_path, body)
