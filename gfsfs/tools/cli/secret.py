"""``gfs secret init FILE`` and ``gfs secret add FILE``: make the cluster secret,
or add a new key to it for a rotation (docs/security.md). They run here and
need no cluster."""
from __future__ import annotations

import argparse
import os
import secrets as random
from typing import Any

from gfsfs.common.auth import secret as secrets
from gfsfs.tools.cli.common import Failure
from gfsfs.tools.cli.output import emit


def cmd_init(_: Any, args: argparse.Namespace) -> int:
    try:
        made = secrets.generate(args.file, overwrite=args.force)
    except (secrets.SecretError, OSError) as exc:
        raise Failure(str(exc)) from None
    emit(args, {"file": args.file, "kid": made.signing.kid},
         lambda: f"{args.file}: a new cluster secret (key {made.signing.kid}, mode 0600); "
                 f"copy it to every master, chunkd and mount host and set "
                 f"[cluster] secret_file")
    return 0


def cmd_add(_: Any, args: argparse.Namespace) -> int:
    """Append a key: it verifies at once; it signs once moved to the top."""
    try:
        old = secrets.load(args.file)
        key = random.token_hex(secrets.KEY_BYTES)
        fd = os.open(args.file, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "a") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        new = secrets.load(args.file)
    except (secrets.SecretError, OSError) as exc:
        raise Failure(str(exc)) from None
    kid = new.keys[-1].kid
    emit(args, {"file": args.file, "kid": kid, "keys": len(new.keys)},
         lambda: f"{args.file}: key {kid} added ({len(new.keys)} keys; "
                 f"{old.signing.kid} still signs)")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``secret init`` and ``secret add``."""
    p = sub.add_parser("secret", parents=[common], help="make or rotate the cluster secret")
    inner = p.add_subparsers(dest="secret_command", required=True)
    init = inner.add_parser("init", parents=[common], help="write a new cluster secret file")
    init.add_argument("file", metavar="FILE")
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(func=cmd_init, local=True)
    add = inner.add_parser("add", parents=[common],
                           help="append a new key (rotation: it verifies now, signs once first)")
    add.add_argument("file", metavar="FILE")
    add.set_defaults(func=cmd_add, local=True)
