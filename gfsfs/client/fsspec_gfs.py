"""gfsfs as an fsspec file system: the ``gfs://`` protocol, so pandas, pyarrow,
dask and anything else built on fsspec read and write a cluster without a
mount::

    import pandas as pd
    df.to_csv("gfs://127.0.0.1:5000/data/x.csv")
    pd.read_csv("gfs://127.0.0.1:5000/data/x.csv")

``gfs://HOST:PORT/PATH`` names PATH on the cluster whose master listens on
HOST:PORT (no host: ``$GFS_MASTER``; several masters, the primary and its
shadows: ``gfs://HOST:PORT,HOST:PORT/PATH``). Registered with fsspec through the
``fsspec.specs`` entry point (setup.cfg). Each instance (fsspec caches one per
host, port and options) holds one :func:`gfsfs.connect` handle, made at first
use; files are the API's own file objects (:mod:`gfsfs.client.api_file`), so fsspec
adds no cache of its own. Extra keyword arguments (``storage_options``) are
``[client]`` config keys, e.g. ``request_timeout``. See docs/client-api.md.
"""
from __future__ import annotations

import os
import posixpath
import threading
from datetime import datetime, timezone
from typing import IO, Any
from urllib.parse import urlsplit

from fsspec import AbstractFileSystem
from fsspec.utils import stringify_path

from gfsfs.client import api
from gfsfs.client.api_ops import Stat

COPY_PIECE = 8 << 20          # cp_file streams through memory this much at a time


class GFSFileSystem(AbstractFileSystem):
    protocol = "gfs"
    root_marker = "/"

    def __init__(self, host: str | None = None, port: int | None = None,
                 **client_options: Any) -> None:
        super().__init__(host=host, port=port, **client_options)
        if host is None:
            self.master = api.master_url(None)
        elif "," in host:               # several masters: gfs://a:5000,b:5000/path
            self.master = api.master_url(host)
        else:
            self.master = api.master_url(f"{host}:{port or 5000}")
        self.client_options = client_options
        self._handle: api.GFS | None = None
        self._lock = threading.Lock()

    @property
    def gfs(self) -> api.GFS:
        """The API handle (connected at first use; again after a fork)."""
        with self._lock:
            h = self._handle
            if h is None or h.closed or h._pid != os.getpid():
                self._handle = api.connect(self.master, **self.client_options)
            return self._handle

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()

    # ------------------------------------------------------------ paths

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        if path.startswith("gfs://"):
            path = urlsplit(path).path
        elif path.startswith("gfs::"):
            path = path[len("gfs::"):]
        full = posixpath.normpath("/" + path)
        return "/" + full.lstrip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        parts = urlsplit(stringify_path(path))
        out: dict[str, Any] = {}
        if parts.scheme == "gfs" and "," in parts.netloc:
            out["host"] = parts.netloc          # several masters, each HOST:PORT
        elif parts.scheme == "gfs" and parts.hostname:
            out["host"] = parts.hostname
            if parts.port:
                out["port"] = parts.port
        return out

    def unstrip_protocol(self, name: str) -> str:
        if name.startswith("gfs://"):
            return name
        netlocs = ",".join(u.split("://", 1)[1] for u in self.master.split(","))
        return f"gfs://{netlocs}{self._strip_protocol(name)}"

    # ------------------------------------------------------------ listing

    @staticmethod
    def _info(st: Stat) -> dict[str, Any]:
        kind = {"file": "file", "directory": "directory"}.get(st.type, "other")
        return {"name": st.path, "size": st.size, "type": kind, "islink": st.type == "symlink",
                "mode": st.mode, "ino": st.ino, "nlink": st.nlink, "uid": st.uid, "gid": st.gid,
                "mtime": st.mtime_ns / 1e9, "created": st.ctime_ns / 1e9, "goal": st.goal}

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        st = self.gfs.stat(path)
        entries = self.gfs.ls(path) if st.is_dir() else [st]
        infos = [self._info(s) for s in entries]
        return infos if detail else [i["name"] for i in infos]

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._info(self.gfs.stat(self._strip_protocol(path)))

    def exists(self, path: str, **kwargs: Any) -> bool:
        return self.gfs.exists(self._strip_protocol(path))

    def created(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["created"], tz=timezone.utc)

    def modified(self, path: str) -> datetime:
        return datetime.fromtimestamp(self.info(path)["mtime"], tz=timezone.utc)

    # ------------------------------------------------------------ files

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              **kwargs: Any) -> IO[Any]:
        if not autocommit:
            raise NotImplementedError("gfs:// has no transactions (autocommit=False)")
        buffering = block_size if block_size and block_size > 0 else -1
        return self.gfs.open(self._strip_protocol(path), mode, buffering=buffering)

    def cat_file(self, path: str, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        return self.gfs.read_bytes(self._strip_protocol(path), start, end)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite",
                  **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        if mode == "create":
            with self.gfs.open(path, "xb") as f:
                f.write(value)
        else:
            self.gfs.write_bytes(path, value)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        with self.gfs.open(self._strip_protocol(path1), "rb", buffering=0) as src, \
                self.gfs.open(self._strip_protocol(path2), "wb", buffering=0) as dst:
            while piece := src.read(COPY_PIECE):
                dst.write(piece)

    # ------------------------------------------------------------ namespace

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """As fsspec's local file system: FileExistsError if ``path`` exists."""
        self.gfs.mkdir(self._strip_protocol(path), parents=create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.gfs.mkdir(self._strip_protocol(path), parents=True, exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        self.gfs.rmdir(self._strip_protocol(path))

    def rm_file(self, path: str) -> None:
        self.gfs.rm(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        self.rm_file(path)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """A plain path is removed by :meth:`gfsfs.client.api.GFS.rm` (one walk at
        the client); globs, lists and ``maxdepth`` by fsspec's expansion."""
        if isinstance(path, str) and maxdepth is None and not any(c in path for c in "*?["):
            self.gfs.rm(self._strip_protocol(path), recursive=recursive)
        else:
            super().rm(path, recursive=recursive, maxdepth=maxdepth)

    def mv(self, path1: Any, path2: Any, recursive: bool = False,
           maxdepth: int | None = None, **kwargs: Any) -> None:
        """A rename at the master (atomic, any size, whole trees) for plain
        paths; globs and lists are copied then removed by fsspec."""
        if isinstance(path1, str) and isinstance(path2, str) and maxdepth is None \
                and not any(c in path1 for c in "*?["):
            self.gfs.rename(self._strip_protocol(path1), self._strip_protocol(path2))
        else:
            super().mv(path1, path2, recursive=recursive, maxdepth=maxdepth, **kwargs)
