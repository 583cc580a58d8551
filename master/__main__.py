"""``python -m master``: the same as ``gfs-master``."""
from __future__ import annotations

import sys

from .main import main

sys.exit(main())
