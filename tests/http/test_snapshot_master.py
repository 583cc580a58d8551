"""Snapshots and the trash RPCs at the master, in process (fake chunkds):
the snapshot record, copy-on-write on lease, reference counts, replay."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from master.core import Master
from master.state.namespace import ROOT_INO
from test_master_http import Harness, run


async def setup(h: Harness) -> dict[str, int]:
    for cid in ("c1", "c2", "c3"):
        await h.register(cid, rack=cid)
    d = (await h.call("mkdir", parent=ROOT_INO, name=b"d", mode=0o755, uid=0, gid=0))["ino"]
    sub = (await h.call("mkdir", parent=d, name=b"sub", mode=0o755, uid=0, gid=0))["ino"]
    f = (await h.call("create", parent=d, name=b"f", mode=0o644, uid=0, gid=0))["ino"]
    g = (await h.call("create", parent=sub, name=b"g", mode=0o644, uid=0, gid=0))["ino"]
    await h.call("link", ino=g, parent=d, name=b"g2")
    await h.call("symlink", parent=d, name=b"s", target=b"f", uid=0, gid=0)
    for ino in (f, g):
        await h.call("lease", ino=ino, index=0)
        await h.call("lease", ino=ino, index=1)
        await h.call("extend", ino=ino, size=(1 << 20) + 10, mtime_ns=time.time_ns())
    return {"d": d, "sub": sub, "f": f, "g": g}


def names(m: Master, ino: int) -> set[bytes]:
    d = m.ns.inodes[ino].dir
    assert d is not None
    return set(d.entries)


def test_snapshot_tree_cow_and_replay(tmp_path: Path) -> None:
    state: dict[str, Any] = {}

    async def body(h: Harness) -> None:
        t = await setup(h)
        m = h.master
        f_chunks = dict(m.ns.inodes[t["f"]].chunks or {})
        versions = {hd: m.ns.chunks[hd][0] for hd in f_chunks.values()}
        reply = await h.call("snapshot", src=t["d"], parent=ROOT_INO, name=b"snap")
        assert reply["inodes"] == 5 and reply["files"] == 2 and reply["chunks"] == 4
        assert reply["leases_revoked"] == 4            # every chunk had a lease
        for hd, v in versions.items():
            assert m.ns.chunks[hd] == [v + 1, 2]        # version raised, shared
        snap = reply["ino"]
        assert names(m, snap) == {b"sub", b"f", b"g2", b"s"}
        sf = m.ns.lookup(snap, b"f")
        assert sf.chunks == f_chunks and sf.size == (1 << 20) + 10 and sf.nlink == 1
        sg = m.ns.lookup(snap, b"g2")
        assert sg.nlink == 2 and m.ns.lookup(m.ns.lookup(snap, b"sub").ino, b"g") is sg
        assert m.ns.inodes[snap].nlink == 3 and m.ns.lookup(snap, b"s").target == b"f"
        assert m.ns.inodes[m.ns.lookup(snap, b"sub").ino].dir.parent == snap
        await h.fails("EEXIST", "snapshot", src=t["d"], parent=ROOT_INO, name=b"snap")
        await h.fails("EINVAL", "snapshot", src=t["d"], parent=t["sub"], name=b"x")
        # the first write to a shared chunk copies it: the writer gets a new handle
        h.chunkds.calls.clear()
        old = f_chunks[0]
        lease = await h.call("lease", ino=sf.ino, index=0)
        assert lease["handle"] != old
        copies = [c for c in h.chunkds.calls if c[1] == "copy"]
        assert len(copies) == 3 and all(c[2]["handle"] == old and
                                        c[2]["new_handle"] == lease["handle"] for c in copies)
        assert m.ns.chunks[old][1] == 1 and m.ns.chunks[lease["handle"]][1] == 1
        assert m.ns.inodes[t["f"]].chunks[0] == old
        # the other side now owns the old chunk alone: a plain lease
        assert (await h.call("lease", ino=t["f"], index=0))["handle"] == old
        # append_lease copies too
        al = await h.call("append_lease", ino=sg.ino)
        assert al["index"] == 1 and al["handle"] != m.ns.inodes[t["g"]].chunks[1]
        # truncate to 0 drops the references of the snapshot's g only
        shared = m.ns.inodes[t["g"]].chunks[0]
        await h.call("setattr", ino=sg.ino, size=0)
        assert m.ns.chunks[shared][1] == 1
        state["dump"] = _dump(m)
        state["snap"] = snap

    run(tmp_path, body)

    async def replay(h: Harness) -> None:
        assert _dump(h.master) == state["dump"]
    run(tmp_path, replay)


def _dump(m: Master) -> Any:
    ns = m.ns
    return ({i: (x.mode, x.nlink, x.size, dict(x.chunks or {}),
                 sorted((n, v[0]) for n, v in x.dir.entries.items()) if x.dir else None)
             for i, x in ns.inodes.items()},
            {h: list(v) for h, v in ns.chunks.items()}, ns.next_ino, ns.next_handle)


def test_rm_snapshot_frees_only_its_chunks_and_trash_rpcs(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        t = await setup(h)
        m = h.master
        snap = (await h.call("snapshot", src=t["f"], parent=ROOT_INO, name=b"fs"))["ino"]
        await h.call("lease", ino=snap, index=1)            # index 1 now unshared
        own = m.ns.inodes[snap].chunks[1]
        await h.call("unlink", parent=ROOT_INO, name=b"fs")
        listing = await h.call("trash_list")
        [e] = listing["entries"]
        assert e["path"] == "/fs" and e["ino"] == snap and e["size"] == (1 << 20) + 10
        assert e["purge_ns"] - e["deleted_ns"] == int(m.cfg.trash_time * 1e9)
        # restore: old path; taken -> EEXIST; elsewhere with parent/name
        await h.call("trash_restore", ino=snap)
        assert m.ns.lookup(ROOT_INO, b"fs").ino == snap
        await h.call("unlink", parent=ROOT_INO, name=b"fs")
        await h.call("create", parent=ROOT_INO, name=b"fs", mode=0o644, uid=0, gid=0)
        await h.fails("EEXIST", "trash_restore", ino=snap)
        await h.call("trash_restore", ino=snap, parent=t["d"], name=b"back")
        assert m.ns.lookup(t["d"], b"back").ino == snap
        await h.call("unlink", parent=t["d"], name=b"back")
        reply = await h.call("trash_purge", older_than=3600)
        assert reply["purged"] == 0
        reply = await h.call("trash_purge")
        assert reply == {"purged": 1, "bytes": (1 << 20) + 10, "chunks_freed": 1,
                         "chunks_shared": 1}
        assert own not in m.ns.chunks and own in {hd for s in m.registry.pending_delete.values()
                                                  for hd in s}
        assert m.ns.chunks[m.ns.inodes[t["f"]].chunks[0]][1] == 1
        assert (await h.call("trash_list"))["entries"] == []
        await h.fails("ENOENT", "trash_restore", ino=snap)

    run(tmp_path, body)
