"""The namespace's objects, laid out for a master that holds many files
(issue 15): an inode, a directory's entries, a file's chunk map, the chunk table.

Memory is what limits a master (GFS §2.6.1 keeps < 64 B per file), so:

- :class:`Inode` has ``__slots__`` and one ``_body`` slot for what depends on
  the type: a :class:`Directory`, a symlink's target (bytes), a device's rdev
  (int), or a regular file's chunks -- ``None`` (none), an ``int`` (the handle
  of its only chunk, at index 0: most files) or a ``dict`` index -> handle.
  ``inode.chunks`` is a small view (:class:`ChunkMap`) with the dict calls the
  master uses; ``inode.dir``, ``.target``, ``.rdev`` read ``_body``.
- xattrs are ``None`` until the first one is set (``inode.xattrs`` then reads
  an empty read-only mapping).
- A directory keeps one dict ``name -> cookie << INO_BITS | ino`` (one int per
  entry, not a tuple and two more ints) and its names in cookie order (a list,
  bisected on the cookie for readdir offsets and removals).
- The chunk table keeps a version per handle and a reference count only for
  the few chunks snapshots share (> 1).
- Small ints that repeat (mode, uid, gid) are shared between inodes.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any, Mapping

INO_BITS = 40                    # a directory entry packs cookie << INO_BITS | ino
INO_MASK = (1 << INO_BITS) - 1
S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000
S_IFCHR = 0o020000
S_IFBLK = 0o060000
NO_XATTRS: Mapping[bytes, bytes] = MappingProxyType({})

_shared: dict[int, int] = {}


def share(value: int) -> int:
    """One int object for each value of a field that repeats (mode, uid, gid)."""
    if -5 <= value <= 256:
        return value
    if len(_shared) > 1 << 16:
        _shared.clear()
    return _shared.setdefault(value, value)


class EntriesView:
    """``dir.entries`` as it was: name -> (ino, cookie), read-only."""

    __slots__ = ("_map",)

    def __init__(self, packed: dict[bytes, int]) -> None:
        self._map = packed

    def __contains__(self, name: object) -> bool:
        return name in self._map

    def __len__(self) -> int:
        return len(self._map)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._map)

    def __getitem__(self, name: bytes) -> tuple[int, int]:
        v = self._map[name]
        return v & INO_MASK, v >> INO_BITS

    def get(self, name: bytes, default: Any = None) -> Any:
        return self[name] if name in self._map else default

    def items(self) -> Iterator[tuple[bytes, tuple[int, int]]]:
        return ((n, (v & INO_MASK, v >> INO_BITS)) for n, v in self._map.items())

    def values(self) -> Iterator[tuple[int, int]]:
        return ((v & INO_MASK, v >> INO_BITS) for v in self._map.values())

    def keys(self) -> Iterator[bytes]:
        return iter(self._map)


class Directory:
    """A directory's entries; each gets a cookie, increasing with insertion."""

    __slots__ = ("_map", "_names", "next_cookie", "parent")

    def __init__(self, parent: int) -> None:
        self._map: dict[bytes, int] = {}     # name -> cookie << INO_BITS | ino
        self._names: list[bytes] = []        # in cookie order (ascending)
        self.next_cookie = 1
        self.parent = parent

    def _cookie(self, name: bytes) -> int:
        return self._map[name] >> INO_BITS

    @property
    def entries(self) -> EntriesView:
        return EntriesView(self._map)

    @property
    def count(self) -> int:
        """How many entries (a Directory itself is always true)."""
        return len(self._map)

    def __contains__(self, name: object) -> bool:
        return name in self._map

    def get(self, name: bytes) -> int | None:
        v = self._map.get(name)
        return None if v is None else v & INO_MASK

    def children(self) -> Iterator[int]:
        """The inode of each entry (in no promised order)."""
        return (v & INO_MASK for v in self._map.values())

    def items(self) -> Iterator[tuple[bytes, int]]:
        """(name, ino) of each entry, in cookie order."""
        m = self._map
        return ((n, m[n] & INO_MASK) for n in self._names)

    def add(self, name: bytes, ino: int, cookie: int | None = None) -> None:
        """A new entry (``cookie``: a checkpoint's, in ascending order)."""
        if ino >> INO_BITS or ino < 0:
            raise ValueError(f"inode number {ino} too large for a directory entry")
        if cookie is None:
            cookie = self.next_cookie
            self.next_cookie += 1
        self._map[name] = cookie << INO_BITS | ino
        self._names.append(name)

    def remove(self, name: bytes) -> int:
        v = self._map[name]
        del self._names[bisect_left(self._names, v >> INO_BITS, key=self._cookie)]
        del self._map[name]
        return v & INO_MASK

    def retarget(self, name: bytes, ino: int) -> None:
        """Point ``name`` at another inode, keeping its cookie (RENAME_EXCHANGE)."""
        self._map[name] = (self._map[name] >> INO_BITS) << INO_BITS | ino

    def after(self, offset: int, limit: int) -> list[tuple[bytes, int, int]]:
        """Up to ``limit`` entries with cookie > ``offset``: (name, ino, cookie)."""
        start = bisect_right(self._names, offset, key=self._cookie)
        m = self._map
        out = []
        for name in self._names[start:start + limit]:
            v = m[name]
            out.append((name, v & INO_MASK, v >> INO_BITS))
        return out

    def rows(self) -> list[tuple[bytes, int, int]]:
        """Every entry as (name, ino, cookie), in cookie order."""
        return self.after(0, len(self._names))


class ChunkMap:
    """A regular file's chunks as a dict index -> handle (a view of the
    inode's ``_body``: ``None``, one handle at index 0, or a dict)."""

    __slots__ = ("_inode",)

    def __init__(self, inode: Inode) -> None:
        self._inode = inode

    def _dict(self) -> dict[int, int]:
        body = self._inode._body
        if body is None:
            return {}
        if body.__class__ is int:
            return {0: body}
        return body                    # type: ignore[no-any-return]

    def _store(self, d: dict[int, int]) -> None:
        if not d:
            self._inode._body = None
        elif len(d) == 1 and 0 in d:
            self._inode._body = d[0]
        else:
            self._inode._body = d

    def get(self, index: int, default: Any = None) -> Any:
        body = self._inode._body
        if body.__class__ is int:
            return body if index == 0 else default
        return default if body is None else body.get(index, default)

    def __getitem__(self, index: int) -> int:
        found = self.get(index)
        if found is None:
            raise KeyError(index)
        return found                   # type: ignore[no-any-return]

    def __contains__(self, index: object) -> bool:
        return self.get(index) is not None    # type: ignore[arg-type]

    def __setitem__(self, index: int, handle: int) -> None:
        body = self._inode._body
        if body.__class__ is dict:
            body[index] = handle
        elif body is None and index == 0 or body.__class__ is int and index == 0:
            self._inode._body = handle
        else:
            d = self._dict()
            d[index] = handle
            self._store(d)

    def pop(self, index: int, *default: Any) -> Any:
        body = self._inode._body
        d = body if body.__class__ is dict else self._dict()
        found = d.pop(index, *default)
        self._store(d)
        return found

    def __delitem__(self, index: int) -> None:
        self.pop(index)

    def __len__(self) -> int:
        body = self._inode._body
        return 0 if body is None else 1 if body.__class__ is int else len(body)

    def __bool__(self) -> bool:
        return self._inode._body is not None

    def __iter__(self) -> Iterator[int]:
        return iter(list(self._dict()))

    def keys(self) -> list[int]:
        return list(self._dict())

    def values(self) -> list[int]:
        return list(self._dict().values())

    def items(self) -> list[tuple[int, int]]:
        return list(self._dict().items())

    def copy(self) -> dict[int, int]:
        return dict(self._dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkMap):
            other = other._dict()
        return self._dict() == other

    def __repr__(self) -> str:
        return f"ChunkMap({self._dict()!r})"


class Inode:
    """One file, directory, symlink or special file (see the module doc)."""

    __slots__ = ("ino", "mode", "uid", "gid", "nlink", "atime_ns", "mtime_ns", "ctime_ns",
                 "size", "goal", "parent", "_body", "_xattrs")

    def __init__(self, ino: int, mode: int, uid: int, gid: int, nlink: int, atime_ns: int,
                 mtime_ns: int, ctime_ns: int, size: int = 0, rdev: int = 0, goal: int = 1,
                 xattrs: Mapping[bytes, bytes] | None = None, target: bytes = b"",
                 dir: Directory | None = None, chunks: Mapping[int, int] | None = None,
                 parent: int = 0) -> None:
        self.ino = ino
        self.mode = share(mode)
        self.uid = share(uid)
        self.gid = share(gid)
        self.nlink = nlink
        self.atime_ns = atime_ns
        self.mtime_ns = mtime_ns
        self.ctime_ns = ctime_ns
        self.size = size
        self.goal = goal
        # a non-directory's first name's directory (0: none; the others' are in
        # Namespace.more_parents). Derived from the entries, never persisted.
        self.parent = parent
        self._xattrs: dict[bytes, bytes] | None = dict(xattrs) if xattrs else None
        self._body: Any = None
        fmt = mode & S_IFMT
        if dir is not None:
            self._body = dir
        elif fmt == S_IFREG:
            if chunks:
                ChunkMap(self)._store(dict(chunks))
        elif fmt == S_IFLNK:
            self._body = target
        elif fmt in (S_IFCHR, S_IFBLK) and rdev:
            self._body = rdev

    def __repr__(self) -> str:
        return (f"Inode(ino={self.ino}, mode={self.mode:o}, nlink={self.nlink}, "
                f"size={self.size}, body={self._body!r})")

    @property
    def is_dir(self) -> bool:
        return self._body.__class__ is Directory

    @property
    def dir(self) -> Directory | None:
        body = self._body
        return body if body.__class__ is Directory else None

    @dir.setter
    def dir(self, value: Directory | None) -> None:
        self._body = value

    @property
    def chunks(self) -> ChunkMap | None:
        """The chunk map of a regular file; None for anything else."""
        return ChunkMap(self) if self.mode & S_IFMT == S_IFREG else None

    @chunks.setter
    def chunks(self, value: Mapping[int, int] | None) -> None:
        if self.mode & S_IFMT != S_IFREG:
            raise ValueError("only a regular file has chunks")
        ChunkMap(self)._store(dict(value or {}))

    def chunk_handles(self) -> list[int]:
        """The handles of a regular file's chunks ([] for anything else)."""
        body = self._body
        if self.mode & S_IFMT != S_IFREG or body is None:
            return []
        return [body] if body.__class__ is int else list(body.values())

    @property
    def target(self) -> bytes:
        body = self._body
        return body if body.__class__ is bytes else b""

    @property
    def rdev(self) -> int:
        fmt = self.mode & S_IFMT
        return self._body if fmt in (S_IFCHR, S_IFBLK) and self._body else 0

    @property
    def xattrs(self) -> Mapping[bytes, bytes]:
        """The extended attributes (read-only; set them with set_xattr)."""
        return self._xattrs if self._xattrs is not None else NO_XATTRS

    def set_xattr(self, name: bytes, value: bytes) -> None:
        if self._xattrs is None:
            self._xattrs = {}
        self._xattrs[name] = value

    def remove_xattr(self, name: bytes) -> None:
        assert self._xattrs is not None
        del self._xattrs[name]
        if not self._xattrs:
            self._xattrs = None

    def touch(self, now: int) -> None:
        self.mtime_ns = self.ctime_ns = now


class ChunkTable:
    """handle -> (version, reference count) for every chunk a file references.
    Reading an entry gives a new list ``[version, refcount]``; changes go
    through the methods."""

    __slots__ = ("versions", "refs")

    def __init__(self) -> None:
        self.versions: dict[int, int] = {}
        self.refs: dict[int, int] = {}       # only chunks with more than one reference

    def __len__(self) -> int:
        return len(self.versions)

    def __contains__(self, handle: object) -> bool:
        return handle in self.versions

    def __iter__(self) -> Iterator[int]:
        return iter(self.versions)

    def __getitem__(self, handle: int) -> list[int]:
        return [self.versions[handle], self.refs.get(handle, 1)]

    def get(self, handle: int, default: Any = None) -> Any:
        v = self.versions.get(handle)
        return default if v is None else [v, self.refs.get(handle, 1)]

    def keys(self) -> Iterator[int]:
        return iter(self.versions)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ChunkTable):
            return self.versions == other.versions and self.refs == other.refs
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other)
        return NotImplemented

    __hash__ = None             # type: ignore[assignment]

    def items(self) -> Iterator[tuple[int, list[int]]]:
        refs = self.refs
        return ((h, [v, refs.get(h, 1)]) for h, v in self.versions.items())

    def version(self, handle: int) -> int | None:
        return self.versions.get(handle)

    def new(self, handle: int, version: int, refs: int = 1) -> None:
        self.versions[handle] = version
        if refs != 1:
            self.refs[handle] = refs

    def set_version(self, handle: int, version: int) -> None:
        if handle not in self.versions:
            raise KeyError(handle)
        self.versions[handle] = version

    def ref(self, handle: int) -> None:
        if handle not in self.versions:
            raise KeyError(handle)
        self.refs[handle] = self.refs.get(handle, 1) + 1

    def unref(self, handle: int) -> bool:
        """Drop one reference; whether that was the last (the chunk is gone)."""
        n = self.refs.get(handle, 1) - 1
        if n <= 0:
            del self.versions[handle]
            self.refs.pop(handle, None)
            return True
        if n == 1:
            del self.refs[handle]
        else:
            self.refs[handle] = n
        return False
