"""``python -m gfsfs.tools.cli``: the ``gfs`` command line."""
from __future__ import annotations

import sys

from gfsfs.tools.cli.entry import main

sys.exit(main())
