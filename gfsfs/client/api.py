"""The public client API: gfsfs from a program, without a mount (what
libmfsio is for MooseFS and the HDFS client for Hadoop)::

    import gfsfs

    with gfsfs.connect("127.0.0.1:5000") as fs:
        fs.mkdir("/data", parents=True, exist_ok=True)
        with fs.open("/data/a.txt", "w") as f:
            f.write("hello\\n")
        print(fs.read_bytes("/data/a.txt"), [s.name for s in fs.ls("/data")])

Threads: a :class:`GFS` handle runs one :class:`gfsfs.client.core.Client` on its
own trio loop in a daemon thread; every method hands its work to that loop
(``trio.from_thread.run``) and waits for it. The Client's state is touched only
on that thread, so a handle and its files may be used from any number of
threads at once (calls interleave as concurrent FUSE requests do); one file
object, like a built-in one, is for one thread at a time. Do not call a handle
from trio code (it blocks): there use :class:`gfsfs.client.api_ops.Ops` on a Client.

Errors: every :class:`~gfsfs.common.errors.GFSError` becomes an OSError in one place,
:func:`os_error` (FileNotFoundError, FileExistsError, NotADirectoryError, ...;
ConnectionError when the cluster cannot be reached). See docs/client-api.md.
"""
from __future__ import annotations

import atexit
import dataclasses
import io
import logging
import os
import ssl
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import IO, Any, TypeVar

import trio

from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth.secret import Secret
from gfsfs.client.api_file import RawFile
from gfsfs.client.api_ops import DIR_MODE, Mode, Ops, Stat
from gfsfs.client.core import Client
from gfsfs.common.config import ClientConfig, TLSConfig
from gfsfs.common import masters
from gfsfs.common.tls import client_context as tls_client_context
from gfsfs.common.errors import GFSError

__all__ = ["GFS", "Stat", "connect", "os_error", "master_url"]

log = logging.getLogger(__name__)
T = TypeVar("T")
BUFFER_SIZE = 1 << 20       # default buffering of open(): one Python-level request per MiB
_handles: weakref.WeakSet[GFS] = weakref.WeakSet()


def os_error(exc: GFSError, path: str | None = None) -> OSError:
    """The OSError for a GFSError: its errno from :data:`gfsfs.common.errors.CODES`
    (so ``OSError`` picks the subclass: ENOENT -> FileNotFoundError, ...);
    UNAVAILABLE (no master or chunkd answered) is a ConnectionError. The wire
    code is kept as ``.gfs_code``, the GFSError as ``__cause__``."""
    cls = ConnectionError if exc.code == "UNAVAILABLE" else OSError
    detail = f"{exc.code}: {exc.message}" if exc.message else exc.code
    err = cls(exc.errno, f"{os.strerror(exc.errno)} ({detail})", path)
    err.gfs_code = exc.code  # type: ignore[attr-defined]
    return err


def master_url(url: str | None = None, default: str | None = None) -> str:
    """``http://HOST:PORT`` of the master from ``HOST:PORT``, ``http://...`` or
    ``gfs://HOST:PORT/...`` (a path is ignored); several masters
    comma-separated (``a:5000,b:5000``: the client follows whichever is
    primary) give ``http://a:5000,http://b:5000``. None: ``$GFS_MASTER``, else
    ``default`` (the config's master_url). ValueError without an address."""
    url = url or os.environ.get("GFS_MASTER") or default or ClientConfig().master_url
    return ",".join(masters.parse(url))


class _Loop:
    """A trio loop in a daemon thread, holding one Client open until stop()."""

    def __init__(self, cfg: ClientConfig, tls: ssl.SSLContext | None = None,
                 secret: Secret | None = None) -> None:
        self.cfg = cfg
        self.tls = tls
        self.secret = secret
        self.client: Client | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._failure: BaseException | None = None
        self._ready = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._main, daemon=True,
                                        name=f"gfsfs-client {cfg.master_url}")
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:    # reported by __init__ if it never got ready
            self._failure = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with Client.open(self.cfg, self.secret, tls=self.tls) as client:
            self.client, self._stop = client, trio.Event()
            self.token = trio.lowlevel.current_trio_token()
            self._ready.set()
            await self._stop.wait()

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def stop(self) -> None:
        """Write back every file's buffered data, then end the loop (waiting
        for it unless called on the loop's own thread, as a finalizer may be)."""
        if self._pid != os.getpid():
            return                     # a forked child: the loop is the parent's
        if self.token is not None:
            try:
                self.token.run_sync_soon(self._stop_soon)
            except trio.RunFinishedError:
                pass
        if threading.current_thread() is not self._thread:
            self._thread.join(self.cfg.request_timeout + 5.0)

    def _stop_soon(self) -> None:
        if self._stop is not None:
            self._stop.set()


class GFS:
    """A connection to one gfsfs cluster (see :func:`connect`)."""

    def __init__(self, cfg: ClientConfig, uid: int | None = None,
                 gid: int | None = None, tls: ssl.SSLContext | None = None,
                 secret: Secret | None = None) -> None:
        self.url = cfg.master_url
        self._pid = os.getpid()
        self._loop: _Loop | None = _Loop(cfg, tls, secret)
        assert self._loop.client is not None
        self._client: Client = self._loop.client
        self._ops = Ops(self._client, uid, gid)
        self._files: weakref.WeakSet[IO[Any]] = weakref.WeakSet()
        # a handle dropped unclosed still stops its thread; at exit _close_all
        # closes open handles (their files first), so not this
        self._finalizer = weakref.finalize(self, self._loop.stop)
        self._finalizer.atexit = False
        _handles.add(self)

    def __repr__(self) -> str:
        return f"<gfsfs.GFS {self.url}{' closed' if self.closed else ''}>"

    def __enter__(self) -> GFS:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._loop is None

    def close(self) -> None:
        """Close the files still open (writing back what they buffer, as the
        HDFS client does) and stop the client thread."""
        if self._loop is None or self._pid != os.getpid():
            self._loop = None
            return
        for f in list(self._files):
            try:
                f.close()
            except (OSError, ValueError) as exc:
                log.error("%s: closing %s: %s", self.url, getattr(f, "name", f), exc)
        self._loop = None
        self._finalizer()

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, path: str | None = None) -> T:
        """``await fn(*args)`` on the client's thread; GFSError -> OSError."""
        loop = self._loop
        if loop is None:
            raise ValueError(f"{self!r}: the handle is closed")
        if self._pid != os.getpid():
            raise RuntimeError("a gfsfs handle cannot cross fork(); connect again in the child")
        try:
            return loop.run(fn, *args)
        except GFSError as exc:
            raise os_error(exc, path) from exc
        except trio.RunFinishedError:
            raise ValueError(f"{self!r}: the handle is closed") from None

    # ------------------------------------------------------------ files

    def open(self, path: str, mode: str = "rb", buffering: int = -1,
             encoding: str | None = None, errors: str | None = None,
             newline: str | None = None) -> IO[Any]:
        """Like the built-in ``open`` (but binary by default, as in fsspec):
        modes r, w, x, a with b/t and +; ``buffering`` 0 (binary only) gives
        the bare :class:`RawFile`, -1 a 1 MiB buffer. Text is UTF-8 unless
        ``encoding`` says otherwise."""
        m = Mode.parse(mode)
        if m.text and buffering == 0:
            raise ValueError("can't have unbuffered text I/O")
        st, of = self._call(self._ops.open, path, m, path=path)
        f = self._wrap(RawFile(self, st, of, m, mode), m, buffering, encoding, errors, newline)
        self._files.add(f)
        return f

    @staticmethod
    def _wrap(raw: RawFile, m: Mode, buffering: int, encoding: str | None,
              errors: str | None, newline: str | None) -> IO[Any]:
        if buffering == 0:
            return raw
        size = BUFFER_SIZE if buffering in (-1, 1) else buffering
        buf: io.BufferedIOBase
        if m.read and m.write:
            buf = io.BufferedRandom(raw, size)
        elif m.write:
            buf = io.BufferedWriter(raw, size)
        else:
            buf = io.BufferedReader(raw, size)
        if not m.text:
            return buf
        text = io.TextIOWrapper(buf, encoding or "utf-8", errors, newline,
                                line_buffering=buffering == 1)
        text.mode = raw.mode  # type: ignore[misc]
        return text

    def read_bytes(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        """The file's bytes ``[start:end]`` (slice rules), in one request."""
        return self._call(self._ops.read_bytes, path, start, end, path=path)

    def write_bytes(self, path: str, data: bytes | bytearray | memoryview) -> int:
        """Create or replace ``path`` with ``data``; visible to all on return."""
        return self._call(self._ops.write_bytes, path, data, path=path)

    # ------------------------------------------------------------ namespace

    def stat(self, path: str, follow_symlinks: bool = True) -> Stat:
        return self._call(self._ops.stat, path, follow_symlinks, path=path)

    def exists(self, path: str) -> bool:
        try:
            self.stat(path)
        except FileNotFoundError:
            return False
        return True

    def isdir(self, path: str) -> bool:
        return self.exists(path) and self.stat(path).is_dir()

    def ls(self, path: str = "/") -> list[Stat]:
        """The entries of a directory with their attributes, sorted by name."""
        return self._call(self._ops.ls, path, path=path)

    def listdir(self, path: str = "/") -> list[str]:
        return [s.name for s in self.ls(path)]

    def mkdir(self, path: str, mode: int = DIR_MODE, parents: bool = False,
              exist_ok: bool = False) -> Stat:
        """Like ``pathlib.Path.mkdir``."""
        return self._call(self._ops.mkdir, path, mode, parents, exist_ok, path=path)

    def rmdir(self, path: str) -> None:
        self._call(self._ops.rmdir, path, path=path)

    def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file, symlink or empty directory; ``recursive``: a whole tree."""
        self._call(self._ops.rm, path, recursive, path=path)

    def rename(self, src: str, dst: str, replace: bool = True) -> None:
        """rename(2) (atomic, at the master); ``replace=False``: FileExistsError
        if ``dst`` exists."""
        self._call(self._ops.rename, src, dst, replace, path=src)

    def snapshot(self, src: str, dst: str) -> dict[str, Any]:
        """Copy-on-write snapshot of a file or tree at ``dst`` (``gfs snapshot``)."""
        return self._call(self._ops.snapshot, src, dst, path=dst)

    def setgoal(self, path: str, goal: int, recursive: bool = False) -> dict[str, Any]:
        """Replicas per chunk of ``path`` (and all below it with ``recursive``)."""
        return self._call(self._ops.setgoal, path, goal, recursive, path=path)

    def statfs(self) -> dict[str, Any]:
        """Capacity, free space, chunk size (the master's ``statfs``)."""
        return self._call(self._ops.statfs)


def connect(url: str | None = None, *, config: ClientConfig | None = None,
            uid: int | None = None, gid: int | None = None,
            tls: TLSConfig | ssl.SSLContext | None = None,
            secret_file: str | None = None, **options: Any) -> GFS:
    """A :class:`GFS` handle on the cluster whose master is at ``url``
    (``HOST:PORT``, ``http://HOST:PORT`` or ``gfs://HOST:PORT``, or several
    comma-separated: the primary and its shadows; None: ``$GFS_MASTER``, else
    the config's). ``options`` are ``[client]`` config
    keys (``request_timeout=5.0``, ``short_circuit=False``, ...) over
    ``config``. What is created belongs to ``uid``/``gid`` (default: this
    process's). ``tls``: a ``[tls]`` section (or a client SSL context) for
    ``https://`` masters and chunkds: the CA they are verified against, the
    cert shown to them. ``secret_file``: the cluster secret (default
    ``$GFS_SECRET_FILE``; none: an open cluster). Raises ConnectionError if
    no master answers (within ``failover_timeout``, 30 s by default), and
    :class:`gfsfs.common.auth.secret.SecretError` if the secret file is unusable."""
    base = config or ClientConfig()
    cfg = dataclasses.replace(base, **options, master_url=master_url(url, base.master_url))
    ctx = tls_client_context(tls) if isinstance(tls, TLSConfig) else tls
    secret = secrets.from_config(secret_file if secret_file is not None
                                 else os.environ.get("GFS_SECRET_FILE", ""))
    fs = GFS(cfg, uid, gid, ctx, secret)
    try:
        fs.statfs()
    except BaseException:
        fs.close()
        raise
    return fs


@atexit.register
def _close_all() -> None:
    """At exit, write back what open handles still buffer."""
    for fs in list(_handles):
        fs.close()
