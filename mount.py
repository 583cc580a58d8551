#!/usr/bin/env python3
"""Mount a gfsfs file system: ``python mount.py MASTER_URL MOUNTPOINT``.

The program lives in :mod:`gfsfs.fuse.mount`; this file is its entry point at
the top of the tree (``gfs-mount`` once installed).
"""
from __future__ import annotations

import sys

from gfsfs.fuse.mount import main

if __name__ == "__main__":
    sys.exit(main())
