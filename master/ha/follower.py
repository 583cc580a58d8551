"""The shadow's side of op-log shipping (see :mod:`master.ha.shipping`).

:meth:`Follower.run` keeps one ``GET /ha/follow`` stream open to the primary
from the shadow's last record on. Each batch of records that arrives is
applied to the shadow's namespace (the same ``Namespace.apply`` replay uses),
appended to its own op log under the primary's sequence numbers, fsync'd in
one group commit, and then acknowledged (``shadow_ack``): the primary's
mutation replies wait for that. A refusal with STALE ("resync") -- the shadow
is new, too far behind, or holds records the primary does not (it was a
primary once) -- makes it take ``GET /ha/checkpoint`` and start over from it.
A broken stream is reopened after a short pause.

The shadow never acts on what it applies (no chunk deletions, no leases): its
garbage is dropped; the primary collects it.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import msgpack
import trio

from gfsfs.common import rpc
from gfsfs.common.errors import Code, GFSError

from master.state import image
from master.state.logread import read_checkpoint_bytes

log = logging.getLogger(__name__)

RETRY = 0.5                    # seconds between attempts to reach the primary
READ_TIMEOUT = 5.0             # the primary sends something every second


class Resync(Exception):
    """The shadow's log cannot continue the primary's: take a checkpoint."""


class Follower:
    def __init__(self, master: Any, http: httpx.AsyncClient | None) -> None:
        self.m = master
        self.http = http
        self.primary_durable = 0        # the primary's last durable record, as last told
        self.heard = 0.0                # monotonic time we last heard from the primary
        self.caught_up = trio.Event()   # set once the shadow was within reach of the primary
        self.resyncs = 0
        self.applied = 0
        # whether the primary last said we are in its synchronous set: only
        # then do we hold every record it acknowledged (and may campaign)
        self.synchronous = False

    @property
    def url(self) -> str:
        return self.m.role.primary_url

    def lag(self) -> dict[str, Any]:
        # unknown (None) until the primary was heard from since we followed it
        behind = max(0, self.primary_durable - self.m.oplog.last_seq) if self.heard else None
        return {"primary": self.url, "records_behind": behind,
                "seconds_behind": round(time.monotonic() - self.heard, 3) if self.heard else None,
                "applied": self.applied, "resyncs": self.resyncs}

    async def run(self) -> None:
        """Follow until cancelled (promotion cancels it)."""
        if self.http is None:
            raise RuntimeError("a follower needs an HTTP client")
        while True:
            if not self.url:                    # not known yet (etcd will tell)
                await trio.sleep(RETRY)
                continue
            try:
                await self.follow_once()
            except Resync as why:
                log.warning("shadow: %s; taking the primary's checkpoint", why)
                await self._resync_quietly()
            except (GFSError, httpx.HTTPError, OSError, ValueError) as exc:
                log.warning("shadow: following %s: %s; retrying", self.url, exc)
            await trio.sleep(RETRY)

    async def _resync_quietly(self) -> None:
        try:
            await self.resync()
        except (GFSError, httpx.HTTPError, OSError, ValueError) as exc:
            log.warning("shadow: checkpoint from %s failed: %s", self.url, exc)

    async def follow_once(self) -> None:
        oplog = self.m.oplog
        start = oplog.last_seq + 1
        crc = "" if oplog.last_crc is None else str(oplog.last_crc)
        params = {"from": str(start), "crc": crc, "shadow": self.m.role.url}
        timeout = httpx.Timeout(30.0, read=READ_TIMEOUT)
        async with self.http.stream("GET", f"{self.url}/ha/follow", params=params,
                                    timeout=timeout) as resp:
            if resp.status_code >= 400:
                err = rpc.decode_error(resp.status_code, await resp.aread())
                if err.code == Code.STALE:
                    raise Resync(err.message)
                raise err
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
            async for piece in resp.aiter_raw():
                unpacker.feed(piece)
                batch = [item for item in unpacker]
                if batch:
                    await self.apply(batch)

    async def apply(self, batch: list[Any]) -> None:
        """Apply and log a batch of stream items, fsync once, acknowledge."""
        oplog, ns = self.m.oplog, self.m.ns
        last = None
        for item in batch:
            self.heard = time.monotonic()
            if isinstance(item, dict):          # the header, or "nothing new"
                if "chunk_size" in item and item["chunk_size"] != ns.chunk_size:
                    log.warning("shadow: chunk size %d, as the primary's", item["chunk_size"])
                    ns.chunk_size = item["chunk_size"]
                self.primary_durable = max(self.primary_durable, item.get("durable", 0))
                continue
            seq, rec = item
            if seq != oplog.last_seq + 1:
                raise Resync(f"record {seq} does not follow our {oplog.last_seq}")
            oplog.check_writable()              # before applying: memory = the log
            try:
                ns.apply(rec)
            except GFSError as exc:
                log.critical("shadow: record %d (%r) does not apply: %s", seq, rec.get("op"), exc)
                raise Resync(f"record {seq} does not apply") from None
            ns.take_garbage()
            oplog.append(rec)
            last = seq
            self.applied += 1
        self.primary_durable = max(self.primary_durable, oplog.last_seq)
        if last is None:
            self._note_caught_up()
            return
        await oplog.commit(last)
        reply = await rpc.call(self.http, self.url, "shadow_ack",
                               {"shadow": self.m.role.url, "seq": last})
        self.primary_durable = max(self.primary_durable, reply.get("durable", 0))
        self.synchronous = bool(reply.get("synchronous"))
        self._note_caught_up()

    def _note_caught_up(self) -> None:
        if self.primary_durable - self.m.oplog.last_seq <= 0 and not self.caught_up.is_set():
            log.info("shadow: caught up with %s at record %d", self.url, self.m.oplog.last_seq)
            self.caught_up.set()

    async def resync(self) -> None:
        """Replace our state with the primary's newest checkpoint."""
        resp = await self.http.get(f"{self.url}/ha/checkpoint", timeout=300.0)
        if resp.status_code >= 400:
            raise rpc.decode_error(resp.status_code, resp.content)
        data = resp.content
        seq, state = read_checkpoint_bytes(data)
        crc_text = resp.headers.get("x-gfs-last-crc", "")
        crc = int(crc_text) if crc_text.isdigit() else None
        await self.m.oplog.restart_at(seq, data, crc)
        self.m.ns.replace(image.from_state(state, self.m.cfg.replication_factor))
        self.resyncs += 1
        log.warning("shadow: took %s's checkpoint at record %d (%d bytes)", self.url, seq,
                    len(data))

