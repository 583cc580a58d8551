"""FUSE operations pyfuse3 does not bind: ``fallocate``.

pyfuse3 (3.5) fills libfuse's ``struct fuse_lowlevel_ops`` with its own
handlers only; FALLOCATE requests get ENOSYS and the kernel then answers
EOPNOTSUPP to every fallocate(2) on the mount. libfuse copies that struct
inside ``fuse_session_new``, which pyfuse3.init calls through its PLT. So, for
the duration of ``pyfuse3.init``, :func:`installed` points pyfuse3's GOT entry
for ``fuse_session_new`` at a wrapper that copies the struct, adds our
``fallocate`` handler (a ctypes callback) and calls the real function.

The handler runs inside pyfuse3's request loop, in the trio thread with the
GIL held, like pyfuse3's own C handlers: it starts a trio task on the
client's nursery and returns; the task answers with ``fuse_reply_err``.
Errors map to one errno through :func:`gfsfs.fuse.operations.to_fuse_errno`.

If anything does not look as expected (another libfuse struct layout, no PLT
slot, a struct size we do not know), nothing is patched and fallocate stays
EOPNOTSUPP; the reason is logged.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import struct
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

# struct fuse_lowlevel_ops of libfuse 3.x: 44 function pointers in this order
# (fuse_lowlevel.h); the slots pyfuse3 fills tell us the layout is the one known
OPS_SLOTS = ("init destroy lookup forget getattr setattr readlink mknod mkdir unlink rmdir "
             "symlink rename link open read write flush release fsync opendir readdir "
             "releasedir fsyncdir statfs setxattr getxattr listxattr removexattr access "
             "create getlk setlk bmap ioctl poll write_buf retrieve_reply forget_multi "
             "flock fallocate readdirplus copy_file_range lseek").split()
PTR = ctypes.sizeof(ctypes.c_void_p)

FALLOCATE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int,
                             ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
SESSION_NEW = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                               ctypes.c_size_t, ctypes.c_void_p)

# what the handler calls: (ino, mode, offset, length) -> awaitable; set by installed()
FallocateFn = Callable[[int, int, int, int], Awaitable[None]]
_state: dict[str, Any] = {}


def _libfuse() -> ctypes.CDLL:
    lib = ctypes.CDLL("libfuse3.so.3")
    lib.fuse_reply_err.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.fuse_reply_err.restype = ctypes.c_int
    lib.fuse_session_new.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                                     ctypes.c_void_p]
    lib.fuse_session_new.restype = ctypes.c_void_p
    return lib


# ---------------------------------------------------------------- ELF: the GOT slot

def _plt_slot(path: str, symbol: str) -> int:
    """Offset (from the load bias) of the GOT slot ``path`` jumps through to
    reach ``symbol`` (an R_X86_64_JUMP_SLOT or GLOB_DAT relocation)."""
    with open(path, "rb") as f:
        elf = f.read()
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise OSError("not a little-endian 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, shoff + i * shentsize)
                for i in range(shnum)]
    for _name, typ, _fl, _addr, off, size, link, _info, _al, entsize in sections:
        if typ != 4 or not entsize:          # SHT_RELA
            continue
        _n, _t, _f, _a, symoff, _s, strndx, _i, _al2, symentsize = sections[link]
        stroff = sections[strndx][4]
        for r in range(size // entsize):
            r_offset, r_info, _addend = struct.unpack_from("<QQq", elf, off + r * entsize)
            if r_info & 0xFFFFFFFF not in (6, 7):   # GLOB_DAT, JUMP_SLOT
                continue
            st_name, = struct.unpack_from("<I", elf, symoff + (r_info >> 32) * symentsize)
            end = elf.index(b"\0", stroff + st_name)
            if elf[stroff + st_name:end] == symbol.encode():
                return r_offset
    raise OSError(f"no relocation for {symbol}")


def _mapping(path: str) -> tuple[int, list[tuple[int, int, str]]]:
    """(load bias, [(start, end, perms)]) of ``path`` in this process."""
    spans: list[tuple[int, int, str, int]] = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == path:
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                spans.append((lo, hi, parts[1], int(parts[2], 16)))
    if not spans:
        raise OSError(f"{path} is not mapped")
    bias = min(lo - off for lo, _hi, _p, off in spans)
    return bias, [(lo, hi, perms) for lo, hi, perms, _off in spans]


@contextlib.contextmanager
def _writable(addr: int, maps: list[tuple[int, int, str]]) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = addr - addr % mmap.PAGESIZE
    perms = next((p for lo, hi, p in maps if lo <= addr < hi), None)
    if perms is None:
        raise OSError(f"{addr:#x} is not in the mapping")
    if "w" in perms:
        yield
        return
    prot = (1 if "r" in perms else 0) | (4 if "x" in perms else 0)
    if libc.mprotect(page, mmap.PAGESIZE, 1 | 2) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    try:
        yield
    finally:
        libc.mprotect(page, mmap.PAGESIZE, prot)


# ---------------------------------------------------------------- the handler

def _on_fallocate(req: int, ino: int, mode: int, offset: int, length: int, _fi: int) -> None:
    """libfuse's fallocate callback: hand the work to a trio task."""
    try:
        _state["nursery"].start_soon(_fallocate_task, req, ino, mode, offset, length)
    except BaseException:                  # nothing may escape into C
        log.exception("fallocate: could not start the request")
        _state["lib"].fuse_reply_err(req, 5)


async def _fallocate_task(req: int, ino: int, mode: int, offset: int, length: int) -> None:
    from gfsfs.fuse.operations import to_fuse_errno
    err = 0
    try:
        await _state["fallocate"](ino, mode, offset, length)
    except BaseException as exc:           # noqa: B902 - every error becomes one errno
        err = to_fuse_errno(exc)
        if not isinstance(exc, Exception):
            _state["lib"].fuse_reply_err(req, err)
            raise
    _state["lib"].fuse_reply_err(req, err)


_FALLOCATE_CB = FALLOCATE(_on_fallocate)


def _session_new(args: int, ops: int, size: int, userdata: int) -> int:
    lib = _state["lib"]
    if size != len(OPS_SLOTS) * PTR:
        log.warning("fallocate not offered: libfuse ops struct of %d bytes", size)
        return lib.fuse_session_new(args, ops, size, userdata)
    table = (ctypes.c_void_p * len(OPS_SLOTS)).from_buffer_copy(ctypes.string_at(ops, size))
    i = OPS_SLOTS.index
    if not (table[i("readdirplus")] and table[i("forget_multi")] and table[i("create")]) \
            or table[i("fallocate")]:
        log.warning("fallocate not offered: unexpected ops struct layout")
        return lib.fuse_session_new(args, ops, size, userdata)
    table[i("fallocate")] = ctypes.cast(_FALLOCATE_CB, ctypes.c_void_p).value
    _state["table"] = table                # libfuse copies it; keep ours alive anyway
    return lib.fuse_session_new(args, ctypes.addressof(table), size, userdata)


_SESSION_NEW_CB = SESSION_NEW(_session_new)


@contextlib.contextmanager
def installed(nursery: Any, fallocate: FallocateFn) -> Iterator[bool]:
    """Around ``pyfuse3.init``: offer FALLOCATE to the kernel, served by
    ``fallocate(ino, mode, offset, length)`` in tasks of ``nursery``.
    Yields whether the hook is in place."""
    import pyfuse3
    _state.update(nursery=nursery, fallocate=fallocate)
    try:
        _state["lib"] = _libfuse()
        assert pyfuse3.__file__ is not None
        # /proc/self/maps names the file itself: through a symlinked venv (or
        # site-packages) pyfuse3.__file__ is another path to it
        path = os.path.realpath(pyfuse3.__file__)
        slot_off = _plt_slot(path, "fuse_session_new")
        bias, maps = _mapping(path)
    except (OSError, ValueError, AssertionError, struct.error) as exc:
        log.warning("fallocate not offered (pyfuse3 could not be extended): %s", exc)
        yield False
        return
    slot = ctypes.c_void_p.from_address(bias + slot_off)
    saved = slot.value
    with _writable(bias + slot_off, maps):
        slot.value = ctypes.cast(_SESSION_NEW_CB, ctypes.c_void_p).value
    try:
        yield True
    finally:
        with _writable(bias + slot_off, maps):
            slot.value = saved
