"""Epoch fencing: the highest master epoch this chunkd has seen, on disk.

Every promotion of a master raises the cluster's *epoch* (docs/operations.md,
"Several masters"). The chunkd keeps the highest epoch it has seen and the URL
of that epoch's primary, in ``<data_dir>/<id>/epoch`` (JSON, written to a temp
file, fsync'd, renamed, the directory fsync'd), loaded at start.

- An order from a master (``set_version``, ``delete``, ``replicate``, ``copy``,
  ``set_versions``) with an older epoch is refused STALE and does nothing;
  a newer one raises the epoch, on disk, before it is carried out
  (:meth:`Fence.admit`, called by the routes in :mod:`chunkd.api.server`).
- A master's reply to ``register``, ``heartbeat`` or ``report_chunks`` is acted
  upon (its ``delete`` and ``extended`` lists) only when it says ``primary``
  with an epoch no older than the highest seen; such a reply with a newer epoch
  raises it and names that master the primary (:meth:`Fence.heard`).
- Heartbeats carry the highest epoch and its primary (:meth:`Fence.wire`), so
  an old primary that hears from a chunkd learns it was superseded.

An order carries no URL: an order that raises the epoch leaves its primary
unknown ("") until a primary's reply in that epoch names it.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import trio

from gfsfs.common.config import ConfigError
from gfsfs.common.errors import Code, GFSError

log = logging.getLogger(__name__)

FILE = "epoch"          # in the chunkd's own directory, next to server_info


class Fence:
    """The highest epoch seen and its primary; ``path`` None: kept in memory only."""

    def __init__(self, path: Path | None = None, epoch: int = 0, primary_url: str = "") -> None:
        self.path = path
        self.epoch = epoch
        self.primary_url = primary_url
        self.refused = 0                # orders refused STALE (for /metrics)
        self.lock = trio.Lock()         # one raise written at a time, in order
        self.rivals: set[tuple[int, str]] = set()   # second primaries of an epoch, logged

    @classmethod
    def load(cls, path: Path) -> Fence:
        """The fence kept at ``path`` (epoch 0 if there is none yet). A file
        that cannot be read stops start-up: epoch 0 would let a superseded
        master give orders again."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable epoch file: {exc}") from None
        epoch = raw.get("epoch") if isinstance(raw, dict) else None
        url = raw.get("primary_url", "") if isinstance(raw, dict) else None
        if not _nat(epoch) or not isinstance(url, str):
            raise ConfigError(f"{path}: bad epoch file {raw!r}")
        return cls(path, epoch, url)

    def wire(self) -> dict[str, Any]:
        """The ``epoch`` and ``primary_url`` fields of a heartbeat."""
        body: dict[str, Any] = {"epoch": self.epoch}
        if self.primary_url:
            body["primary_url"] = self.primary_url
        return body

    async def admit(self, epoch: int, order: str) -> None:
        """Let an order of ``epoch`` through, raising the highest epoch first
        (on disk) if it is newer; STALE if it is older."""
        if epoch > self.epoch:
            await self.raise_to(epoch, "")
        if epoch < self.epoch:
            self.refused += 1
            log.warning("refused %s from a master of epoch %d: epoch %d (primary %s) is newer",
                        order, epoch, self.epoch, self.primary_url or "unknown")
            raise GFSError(Code.STALE, f"{order} from master epoch {epoch}; this chunkd has "
                                       f"seen epoch {self.epoch} (primary "
                                       f"{self.primary_url or 'unknown'})")

    async def heard(self, url: str, epoch: int, primary: bool) -> bool:
        """Whether to act on a reply of the master at ``url`` (in ``epoch``,
        ``primary`` or not): only a primary's of no older epoch than the
        highest, which then is raised to ``epoch`` with ``url`` its primary."""
        if not primary or epoch < self.epoch:
            return False
        if epoch > self.epoch or not self.primary_url:
            await self.raise_to(epoch, url)
        elif url != self.primary_url and (epoch, url) not in self.rivals:
            self.rivals.add((epoch, url))
            log.warning("masters %s and %s both claim to be primary in epoch %d",
                        self.primary_url, url, epoch)
        return epoch >= self.epoch

    async def raise_to(self, epoch: int, url: str) -> None:
        """Make ``epoch`` (primary ``url``, "" = unknown) the highest seen: on
        disk first, then here. Nothing happens if a newer one got there first;
        in the same epoch only an unknown primary is filled in."""
        async with self.lock:
            if epoch < self.epoch or (epoch == self.epoch and (self.primary_url or not url)):
                return
            if self.path is not None:
                try:
                    await trio.to_thread.run_sync(_save, self.path, epoch, url)
                except OSError as exc:
                    log.error("cannot record epoch %d in %s: %s", epoch, self.path, exc)
                    raise GFSError(Code.EIO, f"cannot record epoch {epoch}: {exc}") from None
            if epoch > self.epoch:
                log.info("master epoch %d (was %d), primary %s", epoch, self.epoch,
                         url or "not known yet")
            self.epoch, self.primary_url = epoch, url


def _nat(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _save(path: Path, epoch: int, url: str) -> None:
    """Temp file, fsync, rename, fsync of the directory: never half written,
    and durable before the order that raised it is carried out."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"epoch": epoch, "primary_url": url}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
