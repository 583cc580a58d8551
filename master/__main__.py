"""``python -m master``: the same as ``gfs-master``."""
from __future__ import annotations

import sys

from master.main import main

sys.exit(main())
