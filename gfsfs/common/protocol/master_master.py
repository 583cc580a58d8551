"""The master -> master messages: shadow masters (GFS §5.1.3, docs/ha.md).

shadow -> primary
-----------------
``GET /ha/follow?from=N&crc=C&shadow=URL``: one long-lived streamed response
(``application/x-msgpack-stream``: msgpack items back to back) -- a header
``{"epoch", "primary", "from", "chunk_size", "durable"}``, then
``[seq, record]`` for every record from ``N`` on as it is appended (a failed
write on the primary ends the stream: the shadow resyncs), and
``{"durable": seq, "time": t}`` after each second without records. ``C`` is
the CRC of the shadow's record ``N - 1`` (its op-log frame's CRC); STALE
("resync") when that record is not the primary's, is no longer in the
primary's memory, or ``N`` is past the primary's log; NOTPRIMARY from a shadow.

``GET /ha/checkpoint``: a checkpoint written now, as its file's bytes
(``application/octet-stream``); headers ``x-gfs-seq`` (its last record) and
``x-gfs-last-crc`` (that record's CRC, when known).

``shadow_ack {shadow: URL, seq}`` -> ``{"durable": seq, "synchronous": bool}``:
the shadow has every record up to ``seq`` on disk. The primary's mutation
replies wait for ``[master] sync_shadows`` synchronous shadows'
acknowledgements; ``synchronous`` says whether this shadow is one of them
(under etcd, only such a shadow campaigns).

new primary -> old primary
--------------------------
``step_down {epoch, primary: URL}`` -> ``{"epoch"}``: a master promoted in
``epoch`` tells the old primary; it stops mutating and restarts as a shadow of
``primary``. STALE when ``epoch`` is not above its own.

``promote`` and ``ha_status`` (from ``gfs`` and the etcd election) are in
:mod:`gfsfs.common.protocol.client_master`.
"""
from __future__ import annotations

from typing import TypedDict

from gfsfs.common.protocol.shapes import Message, Route, table

SENDER = "master"
SERVER = "master"


class ShadowAckReq(TypedDict):
    shadow: str                     # the shadow's URL
    seq: int                        # its last durable record


class ShadowAckReply(TypedDict):
    durable: int                    # the primary's last durable record
    synchronous: bool               # whether the shadow is in the synchronous set


class StepDownReq(TypedDict):
    epoch: int
    primary: str


class EpochReply(TypedDict):
    epoch: int


MESSAGES: dict[str, Message] = table(
    Message("shadow_ack", ShadowAckReq, ShadowAckReply,
            "a shadow has the records up to seq on disk"),
    Message("step_down", StepDownReq, EpochReply, "another master was promoted"),
)

ROUTES: list[Route] = [
    Route("GET", "/ha/follow?from=N&crc=C&shadow=URL",
          "the op log from record N on, streamed (msgpack items)"),
    Route("GET", "/ha/checkpoint", "a checkpoint written now (its file's bytes)"),
]
