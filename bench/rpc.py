"""One msgpack RPC's round trip, and a 1 MiB push, on loopback.

Workload: a master (no chunkds needed for getattr) and one chunkd started by
gfsfs.tools.localcluster in a temp dir; N sequential ``getattr`` calls of the root
through the client's RPC pool (gfsfs.common.rpc.call), then M sequential 1 MiB
``PUT /data`` pushes to the chunkd (no chain). Printed: median and p99 per
call, beside a bare trio TCP echo of the same size measured in the same run
(the floor any server on this machine has). Ratios, not absolute times: these
machines are shared and noisy. ``--tls``: the same with both daemons under
TLS (throwaway certs, gfsfs.tools.devcerts), so the two runs' ratios to the
floor show what TLS costs a round trip (docs/benchmarks.md).

    .venv/bin/python bench/rpc.py [--calls 3000] [--pushes 200] [--tls]
"""
from __future__ import annotations

import argparse
import functools
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gfsfs.common import rpc, tls
from gfsfs.common.config import TLSConfig
from gfsfs.tools import devcerts
from gfsfs.tools.localcluster import Cluster


def fmt(samples: list[float]) -> str:
    s = sorted(samples)
    return (f"median {statistics.median(s) * 1e3:7.3f} ms   "
            f"p99 {s[int(len(s) * 0.99) - 1] * 1e3:7.3f} ms")


async def echo_floor(n: int, size: int) -> list[float]:
    """A trio TCP server that answers each message with a few bytes."""
    out: list[float] = []

    async def handler(stream: trio.SocketStream) -> None:
        got = 0
        async for data in stream:
            got += len(data)
            if got >= size:
                got = 0
                await stream.send_all(b"ok")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0,
                                                          host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        payload = b"x" * size
        for _ in range(n):
            t = time.perf_counter()
            await stream.send_all(payload)
            await stream.receive_some(16)
            out.append(time.perf_counter() - t)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    return out


async def measure(master: str, chunkd: str, calls: int, pushes: int,
                  ctx: ssl.SSLContext | None = None) -> None:
    http = rpc.make_http(tls=ctx)
    try:
        for _ in range(50):
            await rpc.call(http, master, "getattr", {"ino": 1})
        lat = []
        for _ in range(calls):
            t = time.perf_counter()
            await rpc.call(http, master, "getattr", {"ino": 1})
            lat.append(time.perf_counter() - t)
        floor = await echo_floor(calls, 40)
        print(f"getattr RPC        {fmt(lat)}")
        print(f"TCP echo (floor)   {fmt(floor)}   ratio {statistics.median(lat) / statistics.median(floor):.1f}x")
        data = b"y" * (1 << 20)
        push = []
        for i in range(pushes):
            t = time.perf_counter()
            r = await http.put(f"{chunkd}/data/{i + 1:x}", content=data)
            r.raise_for_status()
            push.append(time.perf_counter() - t)
        pfloor = await echo_floor(pushes, 1 << 20)
        print(f"1 MiB push         {fmt(push)}   {(1 << 20) / statistics.median(push) / 2**20:.0f} MiB/s")
        print(f"1 MiB TCP (floor)  {fmt(pfloor)}   ratio {statistics.median(push) / statistics.median(pfloor):.1f}x")
    finally:
        await http.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--pushes", type=int, default=200)
    p.add_argument("--tls", action="store_true", help="both daemons and the client under TLS")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="gfs-bench-rpc-") as tmp:
        extra: list[str] = []
        ctx = None
        if args.tls:
            pki = devcerts.make(Path(tmp) / "pki")
            extra = pki.sets()
            ctx = tls.client_context(TLSConfig(cert=str(pki.cert), key=str(pki.key),
                                               ca=str(pki.ca)))
        c = Cluster(Path(tmp), 1, extra=extra)
        try:
            c.start()
            print(f"master {c.url}, chunkd {c.servers[0].url}")
            trio.run(measure, c.url, c.servers[0].url, args.calls, args.pushes, ctx)
        finally:
            c.stop()


if __name__ == "__main__":
    main()
