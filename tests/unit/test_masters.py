"""gfsfs/common/masters.py (issue 13): the master list, the switching rule,
and the failover loop driven through httpx's MockTransport under trio's
MockClock (the loop's waits take no real time)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from gfsfs.common import rpc
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.masters import AGAIN, RAISE, SWITCH, Masters, parse, verdict
from gfsfs.common.retry import unavailable

A, B, C = "http://a:1", "http://b:2", "http://c:3"


def test_parse_normalizes_a_comma_separated_list() -> None:
    assert parse("a:1, http://b:2/ ,gfs://c:3/data/x.csv,a:1,") == [A, B, C]
    assert parse([A, "b:2"]) == [A, B]
    for bad in ("", " , ", "http://"):
        with pytest.raises(ValueError):
            parse(bad)


def test_verdict_sends_again_only_what_cannot_be_applied_twice() -> None:
    refused = unavailable(A, httpx.ConnectError("refused"))
    cut = unavailable(A, httpx.ReadTimeout("slow"))
    answered = GFSError(Code.UNAVAILABLE, "no chunkd")
    shadow = GFSError(Code.NOTPRIMARY, "a shadow", primary=B)
    assert refused.unsent and not cut.unsent
    assert [verdict(e, True) for e in (refused, cut, answered, shadow)] == \
        [SWITCH, SWITCH, AGAIN, SWITCH]
    assert [verdict(e, False) for e in (refused, cut, answered, shadow)] == \
        [SWITCH, RAISE, RAISE, SWITCH]
    assert verdict(GFSError(Code.EEXIST), True) == RAISE


def test_switch_follows_the_named_primary_else_the_next(caplog: pytest.LogCaptureFixture) -> None:
    m = Masters(httpx.AsyncClient(), f"{A},{B}")
    caplog.set_level(logging.WARNING, "gfsfs.common.masters")
    assert m.switch(A, GFSError(Code.NOTPRIMARY, "shadow", primary=B + "/")) == B
    assert m.switch(A, GFSError(Code.NOTPRIMARY, "shadow", primary=B)) == B   # moved already
    assert [r.getMessage() for r in caplog.records] == [
        f"master {A} is not primary; now using {B} (shadow)"]
    assert m.switch(B, GFSError(Code.NOTPRIMARY, "shadow", primary=C)) == C
    assert m.urls == [A, B, C] and m.spec() == f"{C},{A},{B}"
    assert m.switch(C, unavailable(C, httpx.ConnectError("refused"))) == A     # wraps around
    assert m.switch(A, GFSError(Code.NOTPRIMARY, "fenced", primary=A)) == B   # names itself
    one = Masters(httpx.AsyncClient(), A)
    assert one.switch(A, unavailable(A, httpx.ConnectError("refused"))) == A


def test_going_round_the_list_is_quiet_until_a_master_answers(
        caplog: pytest.LogCaptureFixture) -> None:
    m = Masters(httpx.AsyncClient(), f"{A},{B}")
    caplog.set_level(logging.DEBUG, "gfsfs.common.masters")
    down = GFSError(Code.UNAVAILABLE, "down")
    m.switch(A, down)
    m.switch(B, down)
    m.switch(A, down)
    m.answered(B)
    m.switch(B, down)
    assert [(r.levelname, r.getMessage().split(" (")[0]) for r in caplog.records] == [
        ("WARNING", f"master {A} does not answer; now using {B}"),
        ("DEBUG", f"master {B} does not answer; now using {A}"),
        ("DEBUG", f"master {A} does not answer; now using {B}"),
        ("INFO", f"master {B} answers"),
        ("WARNING", f"master {B} does not answer; now using {A}")]


Handler = Callable[[httpx.Request], httpx.Response]


def run(handler: Handler, spec: str, name: str, body: dict[str, Any],
        failover_timeout: float = 10.0) -> tuple[Any, float, Masters]:
    """``Masters(spec).call(name, body)`` over ``handler``: (reply or the
    error raised, mock seconds it took, the group)."""
    out: list[Any] = []

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            m = Masters(http, spec, failover_timeout=failover_timeout, retries=3)
            start = trio.current_time()
            try:
                out.append(await m.call(name, body))
            except GFSError as exc:
                out.append(exc)
            out.extend([trio.current_time() - start, m])
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out[0], out[1], out[2]


def answer(obj: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=rpc.pack(obj))


def test_a_call_moves_past_a_dead_master_and_a_shadow_to_the_primary() -> None:
    seen: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req.url.host)
        if req.url.host == "a":
            raise httpx.ConnectError("refused")
        if req.url.host == "b":
            return answer(GFSError(Code.NOTPRIMARY, "shadow", primary=C).to_wire(), 421)
        return answer({"ino": 7})
    reply, took, m = run(handler, f"{A},{B}", "create", {"rid": 5})
    assert reply == {"ino": 7} and seen == ["a", "b", "c"] and m.primary == C
    assert took == 0                 # each master asked once: no waits


def test_no_master_answering_fails_after_the_failover_timeout() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")
    err, took, _ = run(handler, f"{A},{B}", "getattr", {"ino": 1}, failover_timeout=4.0)
    assert isinstance(err, GFSError) and err.code == Code.UNAVAILABLE and err.addr
    assert 4.0 <= took < 4.0 + 5 * 1.25


def test_a_request_that_may_have_been_applied_is_not_sent_again() -> None:
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.host)
        raise httpx.ReadTimeout("no reply")
    err, _, _ = run(handler, f"{A},{B}", "snapshot", {"src": 2, "parent": 1, "name": b"s"})
    assert isinstance(err, GFSError) and err.code == Code.UNAVAILABLE and calls == ["a"]
    calls.clear()
    err, _, _ = run(handler, f"{A},{B}", "mkdir", {"rid": 9})     # with a rid: again
    assert calls[:3] == ["a", "b", "a"]


def test_a_master_answering_unavailable_is_asked_again_at_most_retries_times() -> None:
    calls: list[str] = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(req.url.host)
        return answer(GFSError(Code.UNAVAILABLE, "no chunkd").to_wire(), 503)
    err, took, m = run(handler, f"{A},{B}", "lease", {"ino": 1, "index": 0})
    assert isinstance(err, GFSError) and calls == ["a"] * 3 and m.primary == A and took > 0


def test_the_client_gives_each_mutation_one_rid_for_all_its_attempts() -> None:
    """Client.call: every mutation of the protocol's ``Mutation`` kind gets a
    request id, the same on the retry after a lost reply; reads get none."""
    from gfsfs.client.core import RID_RPCS, Client
    from gfsfs.common.config import ClientConfig
    assert RID_RPCS == {"setattr", "create", "mkdir", "symlink", "link", "unlink", "rmdir",
                        "rename", "setxattr", "removexattr"}
    bodies: list[tuple[str, dict[str, Any]]] = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append((req.url.path, rpc.unpack(req.content)))
        if len(bodies) == 1:
            raise httpx.ReadTimeout("the reply was lost")
        return answer({"ino": 9, "size": 0, "mode": 0o100644})

    async def main() -> None:
        cfg = ClientConfig(master_url=f"{A},{B}")
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http, \
                trio.open_nursery() as nursery:
            client = Client(cfg, http, nursery)
            await client.create(1, b"f", 0o100644, 0, 0)
            await client.create(1, b"g", 0o100644, 0, 0)
            await client.call("getattr", {"ino": 9})
            assert client.master == B
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    rids = [b.get("rid") for _, b in bodies]
    assert [p for p, _ in bodies] == ["/rpc/create"] * 3 + ["/rpc/getattr"]
    assert rids[0] == rids[1] and rids[2] not in (None, rids[0]) and rids[3] is None
    assert all(0 < r < 2 ** 63 for r in rids[:3])
