"""gfsfs/common/protocol.py: the version exchange at mount time, and that the RPCs
the master and chunkd serve are the ones the docstring documents."""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gfsfs.fuse import mount
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import PROTOCOL_VERSION
from gfsfs.common.rpc import App, serve_forever


class ServedApp:
    """``app`` on a loopback port, served from a thread of its own (mount.main
    runs trio itself)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.port = 0
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token, self._stop = trio.lowlevel.current_trio_token(), trio.Event()
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(serve_forever, self.app, "127.0.0.1", 0, self._stop)
            self._ready.set()

    def __enter__(self) -> str:
        self._thread.start()
        assert self._ready.wait(10)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        assert self._token is not None and self._stop is not None
        self._token.run_sync_soon(self._stop.set)
        self._thread.join(10)


def fake_master(statfs: Any) -> App:
    app = App("master")
    app.rpc("statfs", statfs)
    return app


@pytest.fixture
def root_logging() -> Iterator[None]:
    """mount.main sets up the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def mount_main(url: str, tmp: Path) -> int:
    (tmp / "mnt").mkdir(exist_ok=True)
    return mount.main([url, str(tmp / "mnt"), "-f", "--set", f"client.log_dir={tmp}",
                       "--set", "client.retries=1"])


@pytest.mark.parametrize("side", ["master refuses", "client refuses"])
def test_mount_refuses_another_protocol_clearly(side: str, tmp_path: Path, root_logging: None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []

    async def statfs(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req.get("protocol"))
        if side == "master refuses":
            raise GFSError(Code.PROTOCOL, f"the client speaks gfsfs protocol "
                                          f"{req.get('protocol')}; the master speaks protocol 7")
        return {"chunk_size": 1 << 20, "chunkds": 0, "protocol": 999}

    with ServedApp(fake_master(statfs)) as url:
        assert mount_main(url, tmp_path) == 1
    assert seen == [PROTOCOL_VERSION]
    logged = "".join(p.read_text() for p in tmp_path.glob("client_*.log"))
    want = ("protocol 7" if side == "master refuses"
            else f"master {url} speaks gfsfs protocol 999; this client speaks protocol 1")
    for text in (logged, capsys.readouterr().err):
        assert "ERROR gfsfs.mount" in text and "cannot mount" in text and want in text


def test_mount_accepts_a_master_that_sends_no_version(tmp_path: Path) -> None:
    """An older master (no ``protocol`` in its statfs reply) is version 1."""
    from gfsfs.common.config import ClientConfig

    async def statfs(req: dict[str, Any]) -> dict[str, Any]:
        return {"chunk_size": 1 << 20, "chunkds": 3}

    with ServedApp(fake_master(statfs)) as url:
        cfg = ClientConfig(master_url=url, log_dir=str(tmp_path))
        info = trio.run(mount.check_master, cfg)
    assert info["chunkds"] == 3


# ---------------------------------------------------------------- served = documented

def documented() -> dict[str, tuple[set[str], set[str]]]:
    """Per server ("master", "chunkd"): the RPC names and the raw routes
    (``"GET /chunk/"``) the docstring of gfsfs/common/protocol.py documents, from
    its sections ``X -> master`` and ``X -> chunkd``: the namespace table's
    first column, every ``name {fields}`` / ``POST /rpc/name {fields}``, and
    every ``GET /path`` (up to its first ``<`` or ``?``)."""
    from gfsfs.common import protocol
    lines = (protocol.__doc__ or "").split("\n")
    out: dict[str, tuple[set[str], set[str]]] = {"master": (set(), set()),
                                                 "chunkd": (set(), set())}
    server = None
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if "->" in line and re.fullmatch(r"-{4,}", nxt):
            server = line.split("(")[0].split("->")[1].strip()
            continue
        if server not in out:
            continue
        rpcs, routes = out[server]
        # a table row: the name at the line's start, the next column 2+ spaces on
        if (m := re.match(r"([a-z_]+)\s{2,}\S", line)) and m.group(1) != "rpc":
            rpcs.add(m.group(1))
        rpcs.update(re.findall(r"``(?:POST /rpc/)?([a-z_]+) \{", line))
        routes.update(f"{m} {p}" for m, p in re.findall(r"``(GET|PUT|POST) (/[a-z_/]*)", line)
                      if not p.startswith("/rpc/"))
    return out


def served(tmp: Path) -> dict[str, tuple[set[str], set[str]]]:
    """The RPC names and raw routes the master and a chunkd register."""
    from chunkd.api.server import ChunkServer
    from chunkd.storage.store import MemoryChunkStore
    from gfsfs.common.config import ChunkServerConfig, MasterConfig
    from master.core import Master
    from master.api.server import build_app

    async def no_chunkds(addr: str, name: str, body: dict[str, Any]) -> Any:
        return {}
    m = Master.open(MasterConfig(data_dir=str(tmp)), no_chunkds)
    try:
        master_app = build_app(m)
    finally:
        m.close()
    chunkd_app = ChunkServer(MemoryChunkStore(), ChunkServerConfig(), None,  # type: ignore[arg-type]
                             "cs1", "http://cs1").app
    return {name: (set(app.rpcs), {f"{meth} {prefix}" for meth, prefix, _ in app.routes})
            for name, app in (("master", master_app), ("chunkd", chunkd_app))}


def test_the_rpcs_served_are_the_rpcs_documented(tmp_path: Path) -> None:
    docs, live = documented(), served(tmp_path)
    for server in ("master", "chunkd"):
        doc_rpcs, doc_routes = docs[server]
        live_rpcs, live_routes = live[server]
        assert sorted(live_rpcs - doc_rpcs) == [], f"{server}: served, not documented"
        assert sorted(doc_rpcs - live_rpcs) == [], f"{server}: documented, not served"
        assert sorted(live_routes - doc_routes) == [], f"{server}: served, not documented"
        assert sorted(doc_routes - live_routes) == [], f"{server}: documented, not served"
    assert "GET /chunk/" in docs["chunkd"][1] and "lookup" in docs["master"][0]
