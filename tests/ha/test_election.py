"""The primary's election through a real etcd (master/ha/election.py), started
by gfsfs/tools/etcd.py: one winner, failover when a lease lapses, a resign
handing over at once, a leader cut off from etcd or a frozen etcd never
leaving two masters that believe they lead."""
from __future__ import annotations

import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from gfsfs.tools.etcd import Etcd, etcd_binary, free_port
from master.ha.election import Election

pytestmark = pytest.mark.skipif(etcd_binary() is None,
                                reason="needs etcd (Debian etcd-server; .ci/bootstrap test)")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Etcd]:
    e = Etcd(tmp_path_factory.mktemp("etcd"))
    try:
        e.start()
        yield e
    finally:
        e.stop()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"/gfsfs-test/{request.node.name}"


def elections(etcd: Etcd, key: str, ttl: float, n: int = 2) -> list[Election]:
    return [Election([etcd.url], key, f"http://m{i}", ttl) for i in range(n)]


async def wait_for(cond: Callable[[], bool], timeout: float) -> float:
    """Poll ``cond`` until true; the seconds it took."""
    start = time.monotonic()
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)
    return time.monotonic() - start


def believes(e: Election) -> bool:
    """What the master acts on: it leads and its hold has not lapsed."""
    return e.is_leader and e.held_until is not None and time.monotonic() < e.held_until


async def never_two_leaders(es: list[Election]) -> None:
    while True:
        assert sum(believes(e) for e in es) <= 1, [(e.me, e.epoch, e.held_until) for e in es]
        await trio.sleep(0.005)


def run(body: Callable[[trio.Nursery], Awaitable[None]], es: list[Election]) -> None:
    """``body(nursery)`` with a never-two-leaders watch beside it; closes ``es``."""
    async def main() -> None:
        try:
            async with trio.open_nursery() as n:
                n.start_soon(never_two_leaders, es)
                await body(n)
                n.cancel_scope.cancel()
        finally:
            for e in es:
                await e.aclose()
    trio.run(main)


def test_one_of_two_wins_the_other_waits(etcd: Etcd, key: str) -> None:
    es = elections(etcd, key, ttl=3)

    async def body(n: trio.Nursery) -> None:
        assert await es[0].leader() is None
        for e in es:
            n.start_soon(e.campaign)
        await wait_for(lambda: any(e.is_leader for e in es), 10)
        won, other = es if es[0].is_leader else es[::-1]
        assert won.epoch is not None and won.epoch > 0
        assert await other.leader() == (won.me, won.epoch)
        await trio.sleep(1.5)                    # past a keepalive round
        assert won.is_leader and not other.is_leader and believes(won)
        assert await won.leader() == (won.me, won.epoch)
        await won.resign()
    run(body, es)


def test_a_lapsed_lease_hands_over_within_ttl_with_a_higher_epoch(etcd: Etcd, key: str) -> None:
    ttl = 2.0
    a, b = es = elections(etcd, key, ttl)

    async def body(n: trio.Nursery) -> None:
        a_scope = trio.CancelScope()
        n.start_soon(a_campaign, a_scope)
        await wait_for(lambda: a.is_leader, 10)
        n.start_soon(b.campaign)
        await trio.sleep(1.0)
        assert not b.is_leader
        held_a, epoch_a = a.held_until, a.epoch
        assert held_a is not None and epoch_a is not None
        stopped = time.monotonic()
        a_scope.cancel()                         # a dies: no more keepalives, no resign
        await wait_for(lambda: b.is_leader, ttl + 5)
        assert b.elected_at is not None and b.epoch is not None
        assert b.elected_at - stopped <= ttl + 1.0
        assert b.elected_at > held_a, "b was elected while a could still believe it led"
        assert b.epoch > epoch_a
        assert await b.leader() == (b.me, b.epoch)
        await b.resign()

    async def a_campaign(scope: trio.CancelScope) -> None:
        with scope:
            await a.campaign()
    run(body, es)


def test_resign_hands_over_at_once(etcd: Etcd, key: str) -> None:
    ttl = 3.0
    a, b = es = elections(etcd, key, ttl)

    async def body(n: trio.Nursery) -> None:
        epoch_a = await n.start(a.campaign)
        n.start_soon(b.campaign)
        await trio.sleep(0.5)
        assert not b.is_leader
        start = time.monotonic()
        await a.resign()
        assert not a.is_leader and a.held_until is None and not a.lost.is_set()
        took = await wait_for(lambda: b.is_leader, ttl)
        assert took < 1.0, f"handed over in {took:.2f}s (ttl {ttl})"
        assert b.epoch is not None and b.epoch > epoch_a
        assert b.elected_at is not None and b.elected_at >= start
        assert await a.leader() == (b.me, b.epoch)
        await b.resign()
    run(body, es)


def test_a_leader_cut_off_from_etcd_loses_before_another_leads(etcd: Etcd, key: str) -> None:
    ttl = 2.0
    a, b = es = elections(etcd, key, ttl)

    async def body(n: trio.Nursery) -> None:
        epoch_a = await n.start(a.campaign)
        n.start_soon(b.campaign)
        await trio.sleep(0.5)
        a.endpoints[:] = [f"http://127.0.0.1:{free_port('127.0.0.1')}"]   # nothing listens
        cut = time.monotonic()
        await wait_for(a.lost.is_set, ttl + 2)
        assert not a.is_leader and a.held_until is None and a.lost_at is not None
        assert a.lost_at - cut <= ttl, "a noticed too late"
        await wait_for(lambda: b.is_leader, ttl + 5)
        assert b.elected_at is not None and b.epoch is not None
        assert a.lost_at < b.elected_at and b.epoch > epoch_a
        await b.resign()
    run(body, es)


def test_a_frozen_etcd_never_leaves_two_leaders(etcd: Etcd, key: str) -> None:
    ttl = 2.0
    a, b = es = elections(etcd, key, ttl)

    async def body(n: trio.Nursery) -> None:
        epoch_a = await n.start(a.campaign)
        n.start_soon(b.campaign)
        await trio.sleep(0.5)
        etcd.signal(signal.SIGSTOP)
        try:
            await wait_for(a.lost.is_set, ttl + 2)   # a's keepalives go unanswered
            assert not believes(a)
        finally:
            etcd.signal(signal.SIGCONT)
        await wait_for(lambda: a.lost.is_set() and b.is_leader, 2 * ttl + 5)
        assert b.epoch is not None and b.epoch > epoch_a
        assert await b.leader() == (b.me, b.epoch)
        await b.resign()
    run(body, es)


def test_etcd_stops_by_its_pid_and_is_reaped(tmp_path: Path) -> None:
    e = Etcd(tmp_path).start()
    try:
        assert e.alive() and e.url.startswith("http://127.0.0.1:")
    finally:
        e.stop()
    assert e.daemon is not None and e.daemon.proc is not None
    assert e.daemon.proc.returncode is not None        # reaped
    assert not e.alive()


def test_a_dead_endpoint_is_passed_over(etcd: Etcd, key: str) -> None:
    dead = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    e = Election([dead, etcd.url], key, "http://m0", 2)

    async def body(n: trio.Nursery) -> None:
        with trio.fail_after(5):
            epoch = await n.start(e.campaign)
        assert await e.leader() == ("http://m0", epoch)
        await e.resign()
        assert await e.leader() is None
    run(body, [e])
