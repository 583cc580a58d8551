"""The master -> master face (typed in gfsfs.common.protocol.master_master):
op-log shipping to shadows, promotion and stepping down, the HA status."""
from __future__ import annotations

from typing import Any

import trio

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.rpc import App, Request, Response, need, opt
from gfsfs.common.validate import check_addr

from master.core import Master
from master.ha.service import HA

Req = dict[str, Any]
STREAM = "application/x-msgpack-stream"


class HAHandlers:
    def __init__(self, master: Master, ha: HA) -> None:
        self.m = master
        self.ha = ha

    async def follow(self, req: Request) -> Response:
        """``GET /ha/follow?from=N&crc=C&shadow=URL``: the op log from N on."""
        try:
            start = int(req.query.get("from", ""))
        except ValueError:
            raise GFSError(Code.BADREQ, "from must be an integer") from None
        crc_text = req.query.get("crc", "")
        if crc_text and not crc_text.isdigit():
            raise GFSError(Code.BADREQ, "crc must be an unsigned integer")
        url = check_addr(req.query.get("shadow", ""), "shadow")
        shipper = self.m.shipper
        shadow = shipper.open_stream(url, start, int(crc_text) if crc_text else None)
        return Response(200, shipper.follow_stream(shadow, start), STREAM)

    async def checkpoint(self, req: Request) -> Response:
        """``GET /ha/checkpoint``: a fresh checkpoint file, and the CRC of its
        last record (``x-gfs-last-crc``) for the shadow's next follow."""
        self.m.role.check_primary()
        seq = await self.m.checkpoint()
        data = await trio.to_thread.run_sync(self.m.oplog.checkpoint_file(seq).read_bytes)
        crc = self.m.oplog.crc_at(seq)
        headers = {"x-gfs-seq": str(seq)}
        if crc is not None:
            headers["x-gfs-last-crc"] = str(crc)
        return Response(200, data, "application/octet-stream", headers)

    async def shadow_ack(self, req: Req) -> Req:
        return self.m.shipper.ack(check_addr(need(req, "shadow", str), "shadow"),
                                  need(req, "seq", int))

    async def promote(self, req: Req) -> Req:
        return await self.ha.promote(opt(req, "epoch", int, 0))

    async def step_down(self, req: Req) -> Req:
        return self.ha.step_down(need(req, "epoch", int),
                                 check_addr(need(req, "primary", str), "primary"))

    async def ha_status(self, req: Req) -> Req:
        return self.ha.status()


HA_RPCS = ("shadow_ack", "promote", "step_down", "ha_status")


def install(master: Master, ha: HA, app: App) -> None:
    handlers = HAHandlers(master, ha)
    for name in HA_RPCS:
        app.rpc(name, getattr(handlers, name))
    app.route("GET", "/ha/follow", handlers.follow)
    app.route("GET", "/ha/checkpoint", handlers.checkpoint)
