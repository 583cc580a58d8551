"""Lazy deletion: unlinked files wait in trash (still usable by inode) and are
purged later; their chunks become garbage only then."""
from __future__ import annotations

from master.state import image
from master.state.namespace import ROOT_INO

from test_master_namespace import NS


def test_unlinked_file_stays_usable_until_purged() -> None:
    t = NS()
    f = t.file(ROOT_INO, b"f")
    t.do("add_chunk", ino=f, index=0, handle=7, version=1)
    t.do("unlink", parent=ROOT_INO, name=b"f")
    assert t.names(ROOT_INO) == []
    inode = t.ns.get(f)                      # an open file keeps working by inode
    assert inode.nlink == 0 and t.ns.chunk_at(f, 0) == 7
    assert t.ns.take_garbage() == set()
    assert t.ns.expired_trash(t.now) == [] and t.ns.expired_trash(t.now + 1) == [f]
    t.do("purge", inos=[f])
    assert f not in t.ns.inodes and t.ns.take_garbage() == {7}


def test_rename_over_a_file_trashes_it_and_checkpoint_keeps_trash() -> None:
    t = NS()
    a = t.file(ROOT_INO, b"a")
    b = t.file(ROOT_INO, b"b")
    t.do("add_chunk", ino=b, index=0, handle=9, version=1)
    t.do("rename", parent=ROOT_INO, name=b"a", new_parent=ROOT_INO, new_name=b"b")
    assert t.ns.lookup(ROOT_INO, b"b").ino == a
    assert list(t.ns.trash) == [b]
    copy = image.from_state(image.to_state(t.ns), 3)
    assert copy.trash == t.ns.trash and copy.get(b).nlink == 0
    copy.apply({"op": "purge", "inos": [b], "now": t.now + 1})
    assert copy.take_garbage() == {9}


def test_hard_linked_file_is_not_trashed_until_last_link() -> None:
    t = NS()
    f = t.file(ROOT_INO, b"f")
    t.do("link", ino=f, parent=ROOT_INO, name=b"g")
    t.do("unlink", parent=ROOT_INO, name=b"f")
    assert t.ns.trash == {}
    t.do("unlink", parent=ROOT_INO, name=b"g")
    assert list(t.ns.trash) == [f]
