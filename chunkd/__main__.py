"""``python -m chunkd``: the chunk server (see :mod:`chunkd.main`)."""
from __future__ import annotations

import sys

from chunkd.main import main

sys.exit(main())
