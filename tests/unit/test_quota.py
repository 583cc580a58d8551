"""Directory quotas' accounting and enforcement in the namespace
(master.state.quota): usage kept by every record, the limits in force, nested
quotas, hard links, renames in, out and within, snapshots, the trash, soft
limits with grace; and that a checkpoint image or a replay gives the same
usage as the live namespace (a random walk of records checked after each)."""
from __future__ import annotations

import random
import stat
from typing import Any

import pytest

from gfsfs.common.errors import Code, GFSError
from master.state import image, quota, records
from master.state.namespace import ROOT_INO, Namespace

NS = 10**9
T0 = 1_700_000_000 * NS


class FS:
    """A namespace driven through records, keeping every record applied."""

    def __init__(self) -> None:
        self.ns = Namespace(1 << 20)
        self.log: list[dict[str, Any]] = []
        self.now = T0

    def do(self, rec: dict[str, Any]) -> Any:
        self.now += NS
        if "now" in rec:
            rec["now"] = self.now
        out = self.ns.apply(rec)
        self.log.append(rec)
        return out

    def mkdir(self, parent: int, name: str) -> int:
        return self.do(records.mkdir(parent, name.encode(), 0o755, 0, 0, self.ns.next_ino))

    def create(self, parent: int, name: str, size: int = 0) -> int:
        ino = self.do(records.create(parent, name.encode(), 0o100644, 0, 0, 0,
                                     self.ns.next_ino))
        if size:
            self.do(records.extend(ino, size, 1))
        return ino

    def quota(self, ino: int, **kw: int) -> None:
        self.do(records.setquota(ino, **kw))

    def used(self, ino: int) -> tuple[int, int]:
        q = self.ns.quotas[ino]
        return q.used_bytes, q.used_inodes

    def refused(self, rec: dict[str, Any]) -> None:
        before = image.to_state(self.ns)
        with pytest.raises(GFSError) as info:
            self.do(rec)
        assert info.value.code is Code.QUOTA
        assert image.to_state(self.ns) == before          # nothing changed

    def check(self) -> None:
        """Usage as kept == usage counted from the tree == after a checkpoint
        image == after replaying every record."""
        live = {q.ino: (q.used_bytes, q.used_inodes) for q in self.ns.quotas.values()}
        assert live == {ino: quota.usage(self.ns, ino) for ino in live}
        loaded = image.from_state(image.to_state(self.ns), 3)
        assert {q.ino: (q.used_bytes, q.used_inodes) for q in loaded.quotas.values()} == live
        assert image.to_state(loaded) == image.to_state(self.ns)
        replayed = Namespace(1 << 20)
        for rec in self.log:
            replayed.apply(rec)
        assert image.to_state(replayed) == image.to_state(self.ns)
        for ino, inode in self.ns.inodes.items():       # the parent index
            if inode.dir is None:
                names = sorted(d.ino for d in self.ns.inodes.values() if d.dir is not None
                               for child, _c in d.dir.entries.values() if child == ino)
                assert sorted(self.ns.parents_of(inode)) == names


def test_the_code_is_edquot_and_a_4xx() -> None:
    import errno
    assert Code.QUOTA.errno == errno.EDQUOT and 400 <= Code.QUOTA.status < 500


def test_inode_limit_counts_what_is_below_not_the_directory() -> None:
    fs = FS()
    q = fs.mkdir(ROOT_INO, "q")
    fs.quota(q, inodes=3)
    assert fs.used(q) == (0, 0)
    sub = fs.mkdir(q, "sub")
    fs.create(sub, "f")
    fs.do(records.symlink(q, b"s", b"f", 0, 0, fs.ns.next_ino))
    assert fs.used(q) == (0, 3)
    fs.refused(records.create(q, b"g", 0o100644, 0, 0, 0, fs.ns.next_ino))
    fs.refused(records.mkdir(sub, b"d", 0o755, 0, 0, fs.ns.next_ino))
    fs.refused(records.create(sub, b"fifo", stat.S_IFIFO | 0o644, 0, 0, 0, fs.ns.next_ino))
    fs.do(records.unlink(q, b"s"))
    fs.create(q, "g")                       # room again
    fs.create(ROOT_INO, "outside")          # not under the quota
    assert fs.used(q) == (0, 3)
    fs.check()


def test_byte_limit_on_extend_truncate_and_shrink() -> None:
    fs = FS()
    q = fs.mkdir(ROOT_INO, "q")
    fs.quota(q, bytes=1000)
    f = fs.create(q, "f", 600)
    g = fs.create(q, "g", 400)
    assert fs.used(q) == (1000, 2)
    fs.refused(records.extend(f, 601, 1))
    fs.refused(records.setattr(g, size=401))       # a truncate up counts (logical size)
    fs.do(records.setattr(g, size=100))             # shrinking is always allowed
    fs.do(records.extend(f, 900, 1))
    assert fs.used(q) == (1000, 2)
    with pytest.raises(GFSError) as info:
        fs.ns.check_growth(f, 901, fs.now)          # what the master asks before allocating
    assert info.value.code is Code.QUOTA
    fs.ns.check_growth(f, 900, fs.now)
    fs.do(records.unlink(q, b"f"))                  # to the trash: counts nowhere
    assert fs.used(q) == (100, 1)
    trashed = next(iter(fs.ns.trash))
    fs.do(records.extend(g, 1000, 1))
    fs.refused(records.restore(trashed, q, b"back"))
    fs.do(records.restore(trashed, ROOT_INO, b"back"))
    fs.check()


def test_nested_quotas_all_apply() -> None:
    fs = FS()
    a = fs.mkdir(ROOT_INO, "a")
    b = fs.mkdir(a, "b")
    fs.quota(a, bytes=100, inodes=10)
    fs.quota(b, inodes=100)
    fs.create(b, "f", 60)
    assert fs.used(a) == (60, 2) and fs.used(b) == (0 + 60, 1)
    fs.refused(records.extend(fs.create(b, "g"), 41, 1))    # a's bytes, from inside b
    fs.do(records.rmquota(a))
    fs.do(records.extend(fs.ns.lookup(b, b"g").ino, 41, 1))
    assert fs.used(b) == (101, 2)
    with pytest.raises(GFSError):
        fs.do(records.rmquota(a))                   # ENOENT: none any more
    fs.check()


def test_hard_links_count_once_per_quota() -> None:
    fs = FS()
    q = fs.mkdir(ROOT_INO, "q")
    d = fs.mkdir(q, "d")
    out = fs.mkdir(ROOT_INO, "out")
    fs.quota(q, bytes=150, inodes=4)
    f = fs.create(out, "f", 100)
    fs.do(records.link(f, d, b"f1"))               # into the tree: its bytes and one inode
    assert fs.used(q) == (100, 2)
    fs.do(records.link(f, q, b"f2"))               # already counted in q: free
    assert fs.used(q) == (100, 2)
    g = fs.create(out, "g", 60)
    fs.refused(records.link(g, q, b"g"))           # 160 bytes > 150
    fs.do(records.unlink(d, b"f1"))
    assert fs.used(q) == (100, 2)                  # still named in q by f2
    fs.do(records.unlink(q, b"f2"))
    assert fs.used(q) == (0, 1)
    fs.do(records.link(g, q, b"g"))
    fs.do(records.extend(g, 150, 1))               # growth through the other name counts
    assert fs.used(q) == (150, 2)
    fs.check()


def test_renames_into_out_of_and_within_a_tree() -> None:
    fs = FS()
    q = fs.mkdir(ROOT_INO, "q")
    inner = fs.mkdir(q, "inner")
    out = fs.mkdir(ROOT_INO, "out")
    tree = fs.mkdir(out, "tree")
    fs.create(tree, "a", 30)
    fs.create(fs.mkdir(tree, "sub"), "b", 30)
    fs.quota(q, bytes=100, inodes=5)
    fs.create(q, "x", 50)
    # the moved subtree: 4 inodes (tree, a, sub, b) and 60 bytes: over both
    fs.refused(records.rename(out, b"tree", q, b"tree", 0))
    fs.do(records.unlink(q, b"x"))
    fs.do(records.rename(out, b"tree", q, b"tree", 0))
    assert fs.used(q) == (60, 5)
    # within the tree: nothing to pay, even when full
    fs.do(records.rename(q, b"tree", inner, b"t2", 0))
    assert fs.used(q) == (60, 5)
    # out of the tree: given back
    fs.do(records.rename(inner, b"t2", out, b"t3", 0))
    assert fs.used(q) == (0, 1)
    # rename over an existing file in the tree frees the replaced one
    fs.create(q, "big", 90)
    small = fs.create(out, "small", 20)
    fs.refused(records.rename(out, b"small", q, b"other", 0))
    fs.do(records.rename(out, b"small", q, b"big", 0))
    assert fs.used(q) == (20, 2) and fs.ns.lookup(q, b"big").ino == small
    fs.check()


def test_rename_exchange_across_trees() -> None:
    fs = FS()
    q = fs.mkdir(ROOT_INO, "q")
    out = fs.mkdir(ROOT_INO, "out")
    fs.create(q, "small", 10)
    big = fs.mkdir(out, "big")
    fs.create(big, "f", 200)
    fs.quota(q, bytes=100)
    fs.refused(records.rename(q, b"small", out, b"big", 2))
    fs.create(out, "mid", 90)
    fs.do(records.rename(q, b"small", out, b"mid", 2))
    assert fs.used(q) == (90, 1)
    fs.check()


def test_snapshot_into_a_tree_is_accounted() -> None:
    fs = FS()
    src = fs.mkdir(ROOT_INO, "src")
    fs.create(src, "a", 40)
    f = fs.create(src, "b", 40)
    fs.do(records.link(f, src, b"b2"))
    q = fs.mkdir(ROOT_INO, "q")
    fs.quota(q, bytes=100, inodes=8)
    order = fs.ns.snapshot_order(src)
    assert len(order) == 3
    fs.do(records.snapshot(src, q, b"s1", fs.ns.next_ino, 3))
    assert fs.used(q) == (80, 3)
    fs.refused(records.snapshot(src, q, b"s2", fs.ns.next_ino, 3))     # 160 bytes
    fs.do(records.rmquota(q))
    fs.quota(q, inodes=5)
    fs.refused(records.snapshot(src, q, b"s2", fs.ns.next_ino, 3))     # 6 inodes
    fs.check()


def test_soft_limit_becomes_hard_after_the_grace() -> None:
    fs = FS()
    q = fs.mkdir(ROOT_INO, "q")
    fs.quota(q, inodes=10, soft_inodes=2, grace_ns=5 * NS)
    fs.create(q, "a")
    fs.create(q, "b")
    fs.create(q, "c")                     # over soft: allowed, the grace starts
    since = fs.ns.quotas[q].since_inodes
    assert since == fs.now
    fs.create(q, "d")                     # within the grace (each record is 1 s later)
    fs.now += 10 * NS
    fs.refused(records.create(q, b"e", 0o100644, 0, 0, 0, fs.ns.next_ino))
    assert fs.ns.quotas[q].row(fs.now)["soft_inodes_expired"]
    fs.check()                             # the since survives checkpoint and replay
    for name in (b"a", b"b", b"c"):
        fs.do(records.unlink(q, name))
    assert fs.ns.quotas[q].since_inodes == 0          # back under: reset
    fs.create(q, "e")
    fs.create(q, "f")                                 # over again: a new grace
    assert fs.ns.quotas[q].since_inodes == fs.now
    fs.quota(q, soft_bytes=10, grace_ns=0)            # grace 0: soft is hard
    fs.refused(records.extend(fs.ns.lookup(q, b"e").ino, 11, 1))
    fs.check()


def test_setquota_validates_and_rmdir_drops_the_quota() -> None:
    fs = FS()
    q = fs.mkdir(ROOT_INO, "q")
    f = fs.create(ROOT_INO, "f")
    for bad in (records.setquota(q), records.setquota(q, bytes=10, soft_bytes=20),
                records.setquota(q, bytes=-1), records.setquota(f, bytes=1)):
        with pytest.raises(GFSError) as info:
            fs.do(bad)
        assert info.value.code in (Code.EINVAL, Code.ENOTDIR)
    fs.quota(q, inodes=1)
    fs.create(q, "x")
    fs.quota(q, inodes=1, bytes=5)                    # a replacement keeps the usage
    assert fs.used(q) == (0, 1)
    fs.do(records.unlink(q, b"x"))
    fs.do(records.rmdir(ROOT_INO, b"q"))
    assert fs.ns.quotas == {}
    assert fs.ns.nearest_quota(ROOT_INO) is None
    fs.check()


def test_nearest_quota_and_paths() -> None:
    fs = FS()
    a = fs.mkdir(ROOT_INO, "a")
    b = fs.mkdir(a, "b")
    f = fs.create(b, "f")
    fs.quota(a, bytes=10)
    assert fs.ns.nearest_quota(f).ino == a and fs.ns.nearest_quota(b).ino == a
    assert fs.ns.nearest_quota(ROOT_INO) is None
    fs.quota(ROOT_INO, inodes=100)
    assert fs.ns.nearest_quota(ROOT_INO).ino == ROOT_INO
    assert quota.dir_path(fs.ns, b) == "/a/b" and quota.dir_path(fs.ns, ROOT_INO) == "/"


@pytest.mark.parametrize("seed", range(6))
def test_random_records_keep_usage_exact(seed: int) -> None:
    """Random creates, links, unlinks, renames (plain and exchange), size
    changes, snapshots and quota changes over a small tree with nested
    quotas; after each batch, the kept usage is the counted one, and the
    image and a replay agree. Refusals change nothing."""
    rnd = random.Random(seed)
    fs = FS()
    dirs = [ROOT_INO]
    for i in range(5):
        dirs.append(fs.mkdir(rnd.choice(dirs), f"d{i}"))
    for d in rnd.sample(dirs, 3):
        fs.quota(d, bytes=rnd.randint(500, 5000), inodes=rnd.randint(5, 40),
                 soft_inodes=0, grace_ns=NS)

    def names() -> list[tuple[int, bytes, int]]:
        return [(d.ino, n, c) for d in fs.ns.inodes.values() if d.dir is not None
                for n, (c, _k) in d.dir.entries.items()]

    def files() -> list[int]:
        return [i.ino for i in fs.ns.inodes.values() if i.chunks is not None
                and i.ino not in fs.ns.trash]

    def live_dirs() -> list[int]:
        return [i.ino for i in fs.ns.inodes.values() if i.dir is not None]

    for step in range(300):
        op = rnd.randrange(10)
        try:
            if op == 0:
                fs.create(rnd.choice(live_dirs()), f"f{step}")
            elif op == 1:
                fs.mkdir(rnd.choice(live_dirs()), f"m{step}")
            elif op == 2 and files():
                fs.do(records.link(rnd.choice(files()), rnd.choice(live_dirs()), b"l%d" % step))
            elif op == 3 and files():
                fs.do(records.extend(rnd.choice(files()), rnd.randint(0, 800), 1))
            elif op == 4 and files():
                fs.do(records.setattr(rnd.choice(files()), size=rnd.randint(0, 600)))
            elif op in (5, 6):
                parent, name, _c = rnd.choice(names())
                flags = 2 if rnd.random() < 0.3 else 0
                target = rnd.choice(names()) if flags else None
                if target is not None:
                    fs.do(records.rename(parent, name, target[0], target[1], 2))
                else:
                    fs.do(records.rename(parent, name, rnd.choice(live_dirs()),
                                         rnd.choice([b"r%d" % step, name]), 0))
            elif op == 7:
                parent, name, child = rnd.choice(names())
                if fs.ns.inodes[child].dir is not None:
                    fs.do(records.rmdir(parent, name))
                else:
                    fs.do(records.unlink(parent, name))
            elif op == 8:
                src = rnd.choice(live_dirs() + files())
                fs.do(records.snapshot(src, rnd.choice(live_dirs()), b"s%d" % step,
                                       fs.ns.next_ino, len(fs.ns.snapshot_order(src))))
            elif op == 9 and rnd.random() < 0.3:
                d = rnd.choice(live_dirs())
                if d in fs.ns.quotas and rnd.random() < 0.5:
                    fs.do(records.rmquota(d))
                else:
                    fs.quota(d, bytes=rnd.randint(0, 3000), inodes=rnd.randint(1, 30),
                             soft_bytes=0, grace_ns=NS)
        except GFSError:
            fs.log = fs.log                     # refused: applied nothing, logged nothing
        if step % 30 == 29:
            fs.check()
    fs.check()
