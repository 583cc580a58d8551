"""Read-only queries over the master's state that the web page, the CLI's
RPCs (fsck, trash_list) and /metrics share: each written once, here."""
from __future__ import annotations

from master.state.namespace import ROOT_INO, Namespace


def paths_of(ns: Namespace, inos: set[int]) -> dict[int, str]:
    """A path for each of ``inos`` that has a name (one walk from the root)."""
    out: dict[int, str] = {}
    if not inos:
        return out
    stack: list[tuple[int, str]] = [(ROOT_INO, "")]
    while stack and len(out) < len(inos):
        ino, path = stack.pop()
        inode = ns.inodes.get(ino)
        if inode is None or inode.dir is None:
            continue
        for name, (child, _cookie) in inode.dir.entries.items():
            cpath = f"{path}/{name.decode('utf-8', 'backslashreplace')}"
            if child in inos and child not in out:
                out[child] = cpath
            if ns.inodes.get(child) is not None and ns.inodes[child].dir is not None:
                stack.append((child, cpath))
    return out
