"""gfsfs: the Google File System in Python, mounted through FUSE."""
from __future__ import annotations

from .errors import GFSError

__all__ = ["GFSError"]
__version__ = "0.1.0"
