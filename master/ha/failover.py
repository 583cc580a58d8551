"""Automatic failover through etcd (``[ha] etcd``; docs/ha.md).

Every master runs :func:`run`. Whoever holds the election key
(:class:`master.ha.election.Election`) is the primary; the others are its
shadows and follow the URL the key holds. The rules:

- A master may mutate only while it holds the key *and* its lease is surely
  still valid (``Role.lease`` = the election: ``held_until`` on the monotonic
  clock). One that was stopped or cut off refuses mutations before etcd can
  elect another.
- A shadow campaigns only if its primary last said it was in the
  synchronous set (so it holds every record that primary acknowledged), or
  after ``3 × ttl`` with no leader at all (every master restarted; the
  configured primary is gone).
- Every master starts as a shadow (:func:`start_as_candidate`); the
  configured primary of a new cluster (epoch 0: no election held yet)
  campaigns as soon as the key is free. Winning makes a
  master primary (:meth:`HA.promote`) in the key's ``create_revision`` as
  epoch -- strictly above every earlier holder's.
- Losing the key (lease expired, key taken) makes the master step down: it
  restarts as a shadow of the new holder (``Role.demoted``).
- A clean shutdown resigns, so a shadow takes over at once.
"""
from __future__ import annotations

import logging

import httpx
import trio

from gfsfs.common import rpc
from gfsfs.common.config import HAConfig

from master.ha.election import Election
from master.ha.service import HA

log = logging.getLogger(__name__)


def election_for(cfg: HAConfig, me: str, host: str) -> Election:
    """The election, talking to etcd from ``host`` (when it is one address)."""
    endpoints = [e.strip().rstrip("/") for e in cfg.etcd.split(",") if e.strip()]
    source = rpc.source_address_for(host)
    http = httpx.AsyncClient(trust_env=False, transport=httpx.AsyncHTTPTransport(
        local_address=source)) if source else None
    return Election(endpoints, cfg.election_key, me, cfg.failover_seconds, http=http)


def start_as_candidate(ha: HA, election: Election) -> bool:
    """Under etcd every master starts as a shadow; the key makes one primary.
    Whether this one was configured primary (it campaigns without waiting)."""
    role = ha.m.role
    configured = role.primary
    role.lease = election
    role.await_election()
    ha.m.registry.following = True
    # only a new cluster's configured primary campaigns at once: once an
    # election was held, its log may lack what a later primary acknowledged
    return configured and ha.m.ns.epoch == 0


async def run(ha: HA, election: Election, configured_primary: bool) -> None:
    """Follow the leader, campaign when allowed, lead until the key is lost."""
    role = ha.m.role
    try:
        async with trio.open_nursery() as nursery:
            await _until_may_campaign(ha, election, configured_primary)
            epoch = await nursery.start(election.campaign)
            await _lead(ha, epoch)
            await election.lost.wait()
            holder = await _leader_quietly(election)
            log.critical("lost the election key (now %s): stepping down",
                         holder[0] if holder else "nobody")
            role.superseded(holder[1] if holder else role.epoch + 1,
                            holder[0] if holder else "")
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2.0):
            if election.is_leader:
                await election.resign()
            await election.http.aclose()


async def _leader_quietly(election: Election) -> tuple[str, int] | None:
    try:
        return await election.leader()
    except Exception as exc:                 # etcd unreachable: the holder is unknown
        log.warning("cannot ask etcd who leads: %s", exc)
        return None


async def _until_may_campaign(ha: HA, election: Election, configured_primary: bool) -> None:
    """As a shadow: follow whoever holds the key; return once we may campaign
    (the key is free and we caught up with its last holder, or we are the
    configured primary, or nobody has held it for a long time)."""
    role, follower = ha.m.role, ha.follower
    vacant_since = trio.current_time()
    while True:
        holder = await _leader_quietly(election)
        if holder is not None and holder[0] != role.url:
            vacant_since = trio.current_time()
            if holder[0] != role.primary_url:
                log.info("following %s, the holder of the election key (epoch %d)", *holder)
                role.become_shadow(holder[0])
                ha.restart_following()
        elif holder is None and (configured_primary or follower.synchronous):
            return                           # free, and we have the last primary's records
        elif holder is None and trio.current_time() - vacant_since > 3 * election.ttl:
            log.warning("no primary for %.0f s and never caught up with one: campaigning",
                        trio.current_time() - vacant_since)
            return
        await trio.sleep(0.25)


async def _lead(ha: HA, epoch: int) -> None:
    """We hold the key: become primary in (at least) its epoch."""
    await ha.promote(epoch)
    log.warning("elected primary through etcd in epoch %d", ha.m.ns.epoch)
