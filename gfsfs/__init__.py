"""gfsfs: the Google File System in Python, mounted through FUSE, or used from
a program with :func:`connect` (:mod:`gfsfs.client.api`, docs/client-api.md)."""
from __future__ import annotations

from gfsfs.common.errors import GFSError

__all__ = ["GFSError", "connect"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # gfsfs.connect without importing the client (trio, httpx) for every user
    # of gfsfs.common.errors or gfsfs.common.config, such as the daemons
    if name == "connect":
        from gfsfs.client.api import connect
        return connect
    raise AttributeError(f"module 'gfsfs' has no attribute {name!r}")
