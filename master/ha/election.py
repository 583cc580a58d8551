"""Electing the primary master through etcd (DESIGN: automatic failover; docs/ha.md).

Every master that may lead runs :meth:`Election.campaign` for one key
(``[ha] election_key``); the one holding it is the primary, and the key's value
is its URL. We speak etcd's v3 JSON gateway (HTTP POST, keys and values
base64, int64 fields as JSON strings) through httpx on trio:

- ``/v3/lease/grant {"TTL": ceil(ttl)}``: a lease of ``ttl`` seconds
  (``[ha] failover_seconds``); keys attached to it vanish when it expires;
- ``/v3/kv/txn``: *if the key's create_revision is 0 (it does not exist), put
  it with our URL and our lease, else read it*: at most one campaigner wins;
- ``/v3/lease/keepalive {"ID": ...}`` every ttl/3 while we lead (one request
  on the gateway's stream; an answer without a positive ``TTL`` means the
  lease is gone), and ``/v3/kv/range`` after it, to see the key is still ours;
- ``/v3/kv/range``: who leads (:meth:`Election.leader`), polled every
  ``POLL`` seconds by the campaigners that lost, until the key is gone;
- ``/v3/kv/txn`` (*if create_revision is still ours, delete the key*) and
  ``/v3/lease/revoke``: :meth:`Election.resign`, so a shadow takes over at once.

**The epoch** is the key's ``create_revision``: etcd's revision counter at the
moment the key was created. Revisions only grow, and each new holder creates
the key anew, so every leader's epoch is strictly higher than its
predecessor's; no counter of our own is needed.

**held_until**: etcd expires our lease ``ttl`` seconds after it *received*
our last keepalive (or grant), which is after we *sent* it. So
``sent + ttl`` is a lower bound on the moment etcd may give the key to
another master, on our own monotonic clock (which keeps running while we are
SIGSTOPped). We may act as leader until ``sent + ttl - margin``; the margin
covers the two clocks' rates differing and a decision taken just before the
deadline being applied just after it. A leader that is frozen or cut off thus
stops believing it leads before a successor can be elected, even before it
hears it lost. Leadership is lost when that moment passes without a
successful keepalive (every failed one is retried until then, across the
endpoints), when etcd says the lease is gone, or when the key is no longer
ours: ``is_leader`` turns False, ``lost`` is set and ``campaign`` returns.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import trio

from gfsfs.common.retry import Backoff

log = logging.getLogger(__name__)

POLL = 0.25                          # seconds between looks at the key while we wait
RETRY = Backoff(0.05, 0.5, quiet_every=20)
GRPC_NOT_FOUND = 5                   # the gateway's "code" for a lease that is gone
GRPC_RETRYABLE = {4, 10, 14}         # deadline exceeded, aborted, unavailable


class EtcdError(Exception):
    """etcd answered with an error (``code`` is the gRPC status code)."""

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class EtcdUnavailable(EtcdError):
    """No endpoint answered (or one answered that it cannot serve now)."""


class LeaseGone(EtcdError):
    """Our lease expired or was revoked."""


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def error_of(status: int, answer: dict[str, Any]) -> EtcdError:
    """The error an answer with HTTP ``status`` and JSON body ``answer`` means:
    ``{"error": "...", "code": 5}``, or on a stream ``{"error": {"grpc_code": 5,
    "message": "..."}}``."""
    err = answer.get("error")
    body = err if isinstance(err, dict) else answer
    code = int(body.get("code", body.get("grpc_code", 0)) or 0)
    msg = f"etcd: HTTP {status}: {body.get('message') or body.get('error') or body}"
    if code == GRPC_NOT_FOUND and "lease" in msg:
        return LeaseGone(msg, code)
    if status >= 500 or code in GRPC_RETRYABLE:
        return EtcdUnavailable(msg, code)
    return EtcdError(msg, code)


class ResignedError(Exception):
    """resign() was called while we campaigned."""


class Election:
    """Campaign for ``key`` in etcd as ``me`` (this master's URL); see the module doc.

    State for the master to read: ``is_leader``; ``epoch`` (our key's
    create_revision, once we won); ``held_until`` (monotonic; None while not
    leader): act as primary only while ``clock() < held_until``; ``lost``, a
    trio.Event set when leadership is lost (not on :meth:`resign`), replaced
    by a fresh one when we win again; ``elected_at`` / ``lost_at``: when our
    winning txn was sent / when we gave the lead up for lost. ``endpoints``
    may be changed in place (the tests cut a leader off that way).
    ``margin``: seconds ``held_until`` keeps clear of the lease's end
    (default max(0.5, ttl/5)).
    """

    def __init__(self, endpoints: list[str], key: str, me: str, ttl: float,
                 http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 margin: float | None = None) -> None:
        if not endpoints:
            raise ValueError("Election: no etcd endpoints")
        if ttl < 2:
            raise ValueError(f"Election: ttl must be at least 2 s (etcd's minimum), got {ttl}")
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.key = key
        self.me = me
        self.ttl = float(ttl)
        self.margin = max(0.5, ttl / 5) if margin is None else margin
        self.timeout = min(2.0, max(0.5, ttl / 4))       # one request to etcd
        self.http = http if http is not None else httpx.AsyncClient(trust_env=False)
        self.own_http = http is None
        self.clock = clock
        self.lease: int | None = None
        self.lease_sent: float | None = None   # when our last good grant/keepalive was sent
        self.epoch: int | None = None
        self.is_leader = False
        self.held_until: float | None = None
        self.elected_at: float | None = None   # when our winning txn was sent
        self.lost_at: float | None = None
        self.lost = trio.Event()
        self.resigned = False
        self.turn = 0                          # the endpoint to try first

    async def aclose(self) -> None:
        if self.own_http:
            await self.http.aclose()

    # -- talking to etcd -------------------------------------------------------

    async def post_once(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One request (at most ``timeout`` seconds) to the current endpoint; the
        next endpoint is tried after one that could not answer."""
        url = self.endpoints[self.turn % len(self.endpoints)] + path
        try:
            with trio.fail_after(self.timeout):
                async with self.http.stream("POST", url, content=json.dumps(body),
                                            timeout=self.timeout) as r:
                    text = await self.first_message(r)
            answer = json.loads(text) if text else {}
        except (httpx.HTTPError, trio.TooSlowError, ValueError) as e:
            self.turn += 1
            raise EtcdUnavailable(f"{url}: {type(e).__name__}: {e}") from None
        if r.status_code != 200 or "error" in answer:
            err = error_of(r.status_code, answer)
            if isinstance(err, EtcdUnavailable):
                self.turn += 1
            raise err
        return answer.get("result", answer)      # keepalive answers on a stream: {"result": ...}

    @staticmethod
    async def first_message(r: httpx.Response) -> str:
        """The body, or its first line on a stream (the keepalive's may stay open)."""
        text = ""
        async for chunk in r.aiter_text():
            text += chunk
            if "\n" in text.strip():
                break
        return text.strip().split("\n", 1)[0] if text.strip() else ""

    async def post(self, path: str, body: dict[str, Any], until: float | None = None,
                   what: str = "") -> dict[str, Any]:
        """``post_once``, retried with a backoff over the endpoints while etcd
        cannot be reached; gives up (EtcdUnavailable) once ``clock()`` passes
        ``until``; other errors are raised at once."""
        retry = 0
        while True:
            try:
                return await self.post_once(path, body)
            except EtcdUnavailable as e:
                if until is not None and self.clock() >= until:
                    raise
                await RETRY.pause(retry, log, "etcd %s (%s): %s; retrying",
                                  what or path, self.key, e)
                retry += 1

    # -- the key ------------------------------------------------------------

    def key_compare(self, revision: int) -> dict[str, Any]:
        return {"key": b64(self.key), "target": "CREATE", "result": "EQUAL",
                "create_revision": str(revision)}

    async def holder(self, until: float | None = None) -> dict[str, Any] | None:
        """The key's record (value, create_revision, lease decoded), None if absent."""
        answer = await self.post("/v3/kv/range", {"key": b64(self.key)}, until, "range")
        kvs = answer.get("kvs") or []
        return decode_kv(kvs[0]) if kvs else None

    async def leader(self) -> tuple[str, int] | None:
        """(the leader's URL, its epoch) as etcd has it now; None if nobody leads.
        Retried for up to ``ttl`` seconds, then EtcdUnavailable."""
        kv = await self.holder(until=self.clock() + self.ttl)
        return None if kv is None else (kv["value"], kv["create_revision"])

    # -- the lease ----------------------------------------------------------

    async def keepalive(self, until: float | None = None) -> None:
        """Refresh our lease (``lease_sent`` = when this was sent); LeaseGone if
        it has expired or was revoked."""
        assert self.lease is not None
        sent = self.clock()
        answer = await self.post("/v3/lease/keepalive", {"ID": str(self.lease)}, until,
                                 "keepalive")
        if int(answer.get("TTL", 0) or 0) <= 0:
            raise LeaseGone(f"etcd: lease {self.lease:x} has expired")
        self.lease_sent = sent

    async def fresh_lease(self) -> None:
        """A lease good for about ``ttl`` from now: ours refreshed, or a new one."""
        if self.lease is not None:
            try:
                await self.keepalive()
                return
            except LeaseGone:
                self.lease = None
        sent = self.clock()
        answer = await self.post("/v3/lease/grant", {"TTL": math.ceil(self.ttl)}, None, "grant")
        self.lease, self.lease_sent = int(answer["ID"]), sent
        log.debug("etcd lease %x granted, TTL %s", self.lease, answer.get("TTL"))

    async def revoke(self, until: float | None = None) -> None:
        if self.lease is None:
            return
        lease, self.lease = self.lease, None
        try:
            await self.post("/v3/lease/revoke", {"ID": str(lease)}, until, "revoke")
        except LeaseGone:
            pass

    # -- campaigning ----------------------------------------------------------

    async def try_create(self) -> int | None:
        """Create the key with our lease unless it exists; our epoch if we hold it."""
        assert self.lease is not None
        sent = self.clock()
        answer = await self.post("/v3/kv/txn", {
            "compare": [self.key_compare(0)],
            "success": [{"request_put": {"key": b64(self.key), "value": b64(self.me),
                                         "lease": str(self.lease)}}],
            "failure": [{"request_range": {"key": b64(self.key)}}]}, None, "txn")
        revision = int(answer["header"]["revision"])
        if answer.get("succeeded"):
            self.elected_at = sent
            return revision
        kvs = (answer.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
        kv = decode_kv(kvs[0]) if kvs else None
        if kv is not None and kv["lease"] == self.lease:     # our own, answer lost on the way
            self.elected_at = sent
            return int(kv["create_revision"])
        return None

    async def wait_vacant(self) -> None:
        """Until nobody holds the key (polled every POLL seconds)."""
        retry = 0
        while not self.resigned:
            try:
                if await self.holder() is None:
                    return
                retry = 0
            except EtcdError as e:
                await RETRY.pause(retry, log, "etcd: looking at %s: %s", self.key, e)
                retry += 1
                continue
            await trio.sleep(POLL)

    async def win(self) -> int:
        """Campaign until we hold the key; our epoch."""
        retry = 0
        while True:
            try:
                await self.fresh_lease()
                epoch = await self.try_create()
            except EtcdError as e:       # LeaseGone: revoked under us; a fresh one next time
                if isinstance(e, LeaseGone):
                    self.lease = None
                await RETRY.pause(retry, log, "etcd: campaigning for %s: %s", self.key, e)
                retry += 1
                continue
            if epoch is not None:
                return epoch
            retry = 0
            await self.wait_vacant()
            if self.resigned:
                raise ResignedError()

    def leading(self, epoch: int) -> None:
        assert self.lease_sent is not None
        self.epoch = epoch
        self.held_until = self.lease_sent + self.ttl - self.margin
        self.is_leader = True
        if self.lost.is_set():                 # a new term: a new event to wait on
            self.lost = trio.Event()
        log.info("etcd: %s leads (%s, epoch %d, lease %x)", self.me, self.key, epoch,
                 self.lease or 0)

    async def campaign(self, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Win the key, report our epoch (``await nursery.start(election.campaign)``),
        then keep it until leadership is lost (``lost`` set) or we resign; returns then."""
        self.resigned = False
        try:
            try:
                epoch = await self.win()
            except ResignedError:
                return
            self.leading(epoch)
            task_status.started(epoch)
            await self.hold()
        finally:
            self.is_leader = False
            self.held_until = None

    async def hold(self) -> None:
        """Keep the lease alive every ttl/3 and check the key is still ours."""
        while not self.resigned:
            assert self.lease_sent is not None and self.held_until is not None
            await trio.sleep(max(0.0, self.lease_sent + self.ttl / 3 - self.clock()))
            if self.resigned:
                return
            why = await self.renew()
            if why and not self.resigned:
                await self.lose(why)
                return

    async def renew(self) -> str:
        """One keepalive round; why leadership is lost ("" if it is not)."""
        assert self.held_until is not None
        try:
            await self.keepalive(until=self.held_until)
            self.held_until = self.lease_sent + self.ttl - self.margin  # type: ignore[operator]
            kv = await self.holder(until=self.held_until)
        except LeaseGone as e:
            return str(e)
        except EtcdError as e:
            if self.clock() < self.held_until:
                return ""                     # a range that failed: tried again next round
            return f"no keepalive before our lease could lapse: {e}"
        if kv is None or kv["create_revision"] != self.epoch or kv["lease"] != self.lease:
            return f"the key is no longer ours: {kv}"
        return ""

    async def lose(self, why: str) -> None:
        self.is_leader = False
        self.held_until = None
        self.lost_at = self.clock()
        self.lost.set()
        log.warning("etcd: %s lost the lead (%s, epoch %s): %s", self.me, self.key,
                    self.epoch, why)
        lease, self.lease = self.lease, None
        if lease is None:
            return
        with trio.move_on_after(self.timeout):   # best effort: hand over sooner
            try:
                await self.post_once("/v3/lease/revoke", {"ID": str(lease)})
            except EtcdError:
                pass

    async def resign(self) -> None:
        """Give the key up at once: delete it (if still ours) and revoke our lease."""
        self.resigned = True
        was_leader, epoch = self.is_leader, self.epoch
        self.is_leader = False
        self.held_until = None
        until = self.clock() + self.ttl
        try:
            if was_leader and epoch is not None:
                await self.post("/v3/kv/txn", {
                    "compare": [self.key_compare(epoch)],
                    "success": [{"request_delete_range": {"key": b64(self.key)}}]},
                    until, "resign")
            await self.revoke(until)
        except EtcdError as e:
            log.warning("etcd: resigning %s: %s (the lease lapses by itself)", self.key, e)
        log.info("etcd: %s resigned %s", self.me, self.key)


def decode_kv(kv: dict[str, Any]) -> dict[str, Any]:
    """A gateway KeyValue: base64 decoded, int64 strings as ints (absent = 0)."""
    return {"key": unb64(kv.get("key", "")), "value": unb64(kv.get("value", "")),
            "create_revision": int(kv.get("create_revision", 0) or 0),
            "mod_revision": int(kv.get("mod_revision", 0) or 0),
            "lease": int(kv.get("lease", 0) or 0)}
