"""Logging to the console and to ``<log_dir>/<component>_YYYY-MM-DD.log``."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def setup(component: str, log_dir: str | Path, level: str = "INFO",
          console: bool = True) -> Path:
    """Configure the root logger; returns the log file's path."""
    path = Path(log_dir)
    path.mkdir(parents=True, exist_ok=True)
    logfile = path / f"{component}_{time.strftime('%Y-%m-%d')}.log"
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter(FORMAT)
    fh = logging.FileHandler(logfile)
    fh.setFormatter(fmt)
    root.addHandler(fh)
    if console:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "hypercorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logfile
