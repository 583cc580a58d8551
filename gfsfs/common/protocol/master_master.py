"""The master -> master messages: for the shadow masters of issue 13.

A shadow master will follow the primary's op log (GFS §5.1.3) and serve
read-only namespace requests while the primary is down. Its messages --
shipping op log records and checkpoints, and whatever the shadow answers --
will be typed here when issue 13 builds them; until then there are none, and
nothing serves or sends a master -> master RPC.
"""
from __future__ import annotations

from gfsfs.common.protocol.shapes import Message, Route

SENDER = "master"
SERVER = "master"

MESSAGES: dict[str, Message] = {}

ROUTES: list[Route] = []
