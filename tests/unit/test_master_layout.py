"""How the master is put together (issue 11): one RPC table in master/api/server.py,
domain modules free of HTTP, one lease manager and one snapshot service that
every Master owns from the start, and the lease table's early-drop memory."""
from __future__ import annotations

import ast
import inspect
import time
from pathlib import Path

from gfsfs.common.config import MasterConfig
from master.core import Master
from master.chunks.leases import Lease, LeaseManager, LeaseTable
from master.api.server import RPCS, Handlers, build_app
from master.services.snapshot import SnapshotService

ROOT = Path(__file__).resolve().parents[2]
HTTP = ("gfsfs.common.rpc", "gfsfs.common.httpserver", "master.api")


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_domain_modules_import_no_http() -> None:
    """Only master/api/ speaks HTTP: state, chunks and services never import
    the wire or the API layer (main.py, which starts the server, aside)."""
    domain = [p for p in (ROOT / "master").rglob("*.py")
              if "api" not in p.relative_to(ROOT / "master").parts and p.name != "main.py"]
    assert len(domain) > 15
    for path in domain:
        for name in _imports(path):
            assert not name.startswith(HTTP) and not name.startswith("."), (path, name)


def test_one_rpc_table() -> None:
    assert len(set(RPCS)) == len(RPCS)
    for name in RPCS:
        assert inspect.iscoroutinefunction(getattr(Handlers, name)), name
    for name in ("snapshot", "trash_list", "trash_restore", "trash_purge", "fsck", "drain"):
        assert name in RPCS


async def _no_chunkd(addr: str, name: str, body: dict) -> None:    # type: ignore[type-arg]
    raise AssertionError("no chunkd calls expected")


def test_master_owns_its_services_without_an_app(tmp_path: Path) -> None:
    m = Master.open(MasterConfig(data_dir=str(tmp_path)), _no_chunkd)
    try:
        assert isinstance(m.leases, LeaseManager) and isinstance(m.snapshots, SnapshotService)
        assert m.leases.table is m.registry.leases
        assert isinstance(m.registry.leases, LeaseTable)
        build_app(m)                                # changes nothing about them
        assert m.leases.table is m.registry.leases
    finally:
        m.close()


def test_lease_table_remembers_early_drops() -> None:
    table = LeaseTable(lease_ns=0)                 # no start-up grace period
    now = time.time_ns()
    live = Lease("c1", now + 10**12, ("c1", "c2"))
    table.put(7, live)
    assert 7 in table and table[7] is live and len(table) == 1 and list(table) == [7]
    table.drop(7)                                  # dropped before it expired
    assert 7 not in table and table.get(7) is None
    assert table.maybe_held(7, now) and table.outstanding(7, now) is live
    table.fenced(7, {"c3"})                        # a version only c3 took: not fenced
    assert table.outstanding(7, now) is live
    table.fenced(7, {"c1"})                        # its primary took it: fenced
    assert not table.maybe_held(7, now) and table.outstanding(7, now) is None
    table.put(8, Lease("c1", now - 1))             # expired: nothing to remember
    table.drop(8)
    assert not table.maybe_held(8, time.time_ns())
    table.put(9, Lease("c2", now + 10**12))
    table.drop_primary("c2")
    assert 9 not in table and table.maybe_held(9, now)
    table.put(10, Lease("c2", now + 10**12))
    table.clear()                                  # forgets, remembers nothing
    assert 10 not in table and not table.maybe_held(10, now)


def test_lease_table_grace_after_start() -> None:
    table = LeaseTable(lease_ns=60 * 10**9)
    assert table.maybe_held(12345, time.time_ns())    # a previous master's grant?
