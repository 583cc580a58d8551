"""gfsfs/common/retry.py: the transport-error mapping and the backoff policy."""
from __future__ import annotations

import logging

import httpcore
import httpx
import pytest
import trio

from gfsfs.common import retry, rpc
from gfsfs.common.errors import Code, GFSError


def test_a_transport_error_is_unavailable_naming_the_address() -> None:
    err = retry.unavailable("http://a:1", httpx.ConnectError("refused"))
    assert err.code is Code.UNAVAILABLE and err.addr == "http://a:1"
    assert err.message == "http://a:1: ConnectError: refused"
    for exc in (httpx.ReadTimeout("slow"), httpcore.RemoteProtocolError("cut")):
        with pytest.raises(GFSError) as caught:
            with retry.reaching("http://b:2"):
                raise exc
        assert caught.value.code is Code.UNAVAILABLE and caught.value.addr == "http://b:2"


def test_other_errors_pass_through_and_wire_errors_name_no_address() -> None:
    with pytest.raises(GFSError) as caught:
        with retry.reaching("http://a:1"):
            raise GFSError(Code.STALE, "old")
    assert caught.value.code is Code.STALE and caught.value.addr is None
    with pytest.raises(GFSError) as caught:
        rpc.decode_reply(503, rpc.pack(GFSError(Code.UNAVAILABLE, "http://a:1: x").to_wire()))
    assert caught.value.addr is None       # a server's answer: it was reached


def test_rpc_call_maps_an_unreachable_server() -> None:
    async def main() -> None:
        async with rpc.make_http(timeout=2.0) as http:
            with pytest.raises(GFSError) as caught:
                await rpc.call(http, "http://127.0.0.1:1", "statfs")
        assert caught.value.code is Code.UNAVAILABLE
        assert caught.value.addr == "http://127.0.0.1:1"
    trio.run(main)


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    policy = retry.Backoff(0.5, 5.0)
    for n, want in enumerate([0.5, 1.0, 2.0, 4.0, 5.0, 5.0]):
        for _ in range(20):
            assert want * 0.75 <= policy.delay(n) <= want * 1.25
    assert retry.Backoff(1.0, 2.0, jitter=0).delay(10_000) == 2.0


def test_the_log_level_rises_per_retry() -> None:
    levels = [retry.MUTATION.level(n) for n in range(4)]
    assert levels == [logging.DEBUG, logging.INFO, logging.WARNING, logging.WARNING]
    hb = retry.heartbeat(2.0)
    assert hb.cap == 8.0 and retry.heartbeat(100).cap == 30.0 and retry.heartbeat(0.1).cap == 1.0
    assert [hb.level(n) for n in (0, 1, 2, 3, 99, 100)] == [
        logging.DEBUG, logging.INFO, logging.WARNING, logging.DEBUG, logging.DEBUG,
        logging.WARNING]


def test_pause_logs_then_sleeps(caplog: pytest.LogCaptureFixture) -> None:
    policy = retry.Backoff(0.01, 0.01)
    logger = logging.getLogger("test.retry")

    async def main() -> float:
        start = trio.current_time()
        with caplog.at_level(logging.DEBUG, "test.retry"):
            for n in range(3):
                await policy.pause(n, logger, "try %d failed", n + 1)
        return trio.current_time() - start
    assert trio.run(main) >= 0.02
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "try 1 failed"), (logging.INFO, "try 2 failed"),
        (logging.WARNING, "try 3 failed")]
