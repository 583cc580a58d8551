"""``python -m gfsfs.tools.cli``: the ``gfs`` command line."""
from __future__ import annotations

import sys

from gfsfs.tools.cli import main

sys.exit(main())
