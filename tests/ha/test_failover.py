"""Automatic failover through a real etcd: two masters campaign for the key;
kill -9 of the primary hands the cluster to the shadow within
failover_seconds with no acknowledged mutation lost, and the old primary,
started again, finds the new one leading and follows it."""
from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import CLUSTER_SETTINGS
from gfsfs.common.errors import GFSError
from gfsfs.tools.etcd import Etcd, etcd_binary
from gfsfs.tools.localcluster import Daemon, python
from faultkit import Partition, needs_nft
from test_shadows import call, mkdir, names, same_metadata, wait_for

pytestmark = pytest.mark.skipif(etcd_binary() is None,
                                reason="needs etcd (Debian etcd-server; .ci/bootstrap test)")
TTL = 3.0


@dataclass
class Masters:
    etcd: Etcd
    a: Daemon
    b: Daemon


def master(base: Path, name: str, host: str, etcd: str, role: str) -> Daemon:
    sets = CLUSTER_SETTINGS + [f"master.log_dir={str(base / 'logs')!r}",
                               f"master.role={json.dumps(role)}", "master.shadow_timeout=1.0",
                               f"ha.etcd={json.dumps(etcd)}", f"ha.failover_seconds={TTL}",
                               f'ha.election_key="/test/{base.name}"']
    return Daemon(name, [python(), "-m", "master", "--host", host, "--port", "0",
                         "--data-dir", str(base / "data" / name),
                         *sum((["--set", s] for s in sets), [])],
                  base / "logs" / f"{name}.out")


@pytest.fixture
def masters(tmp_path: Path) -> Iterator[Masters]:
    etcd = Etcd(tmp_path)
    a = master(tmp_path, "master-a", "127.0.0.2", "", "primary")
    b = master(tmp_path, "master-b", "127.0.0.3", "", "shadow")
    try:
        etcd.start()
        for d, role in ((a, "primary"), (b, "shadow")):
            d.argv[d.argv.index(next(x for x in d.argv if x.startswith("ha.etcd=")))] = \
                f"ha.etcd={json.dumps(etcd.url)}"
            d.start()
        yield Masters(etcd, a, b)
    finally:
        for d in (a, b):
            d.signal(signal.SIGCONT)
            d.stop()
        etcd.stop()


def primary_of(*ds: Daemon) -> Daemon | None:
    for d in ds:
        try:
            if d.alive() and call(d.url, "ha_status", timeout=2.0)["primary"]:
                return d
        except GFSError:
            pass
    return None


def elected(a: Daemon) -> None:
    """Wait until ``a`` leads and has a synchronous shadow."""
    wait_for("master a to be elected", lambda: primary_of(a) is a)
    wait_for("a synchronous shadow",
             lambda: any(s["synchronous"] for s in call(a.url, "ha_status")["shadows"]))


@pytest.mark.allow_errors
def test_kill9_of_the_elected_primary_fails_over_within_failover_seconds(masters: Masters) -> None:
    a, b = masters.a, masters.b
    elected(a)
    acked = [mkdir(a.url, f"d{i}")["ino"] for i in range(20)]
    assert len(acked) == 20 and call(a.url, "ha_status")["epoch"] > 0
    a.kill()
    died = time.monotonic()
    wait_for("master b to accept a mutation", lambda: mkdir(b.url, "after"), timeout=4 * TTL)
    took = time.monotonic() - died
    print(f"failover: first mutation on the new primary {took:.1f} s after kill -9")
    assert took <= 2 * TTL + 2, took
    assert {f"d{i}" for i in range(20)} <= names(b.url)
    # the old primary, started again, finds b leading and follows it
    a.argv[a.argv.index("--port") + 1] = a.url.rsplit(":", 1)[1]
    a.start()
    wait_for("a to follow b", lambda: not call(a.url, "ha_status")["primary"]
             and same_metadata(a.url, b.url), timeout=20)
    assert call(b.url, "ha_status")["epoch"] > call(a.url, "dump_metadata")["epoch"] - 1


@pytest.mark.allow_errors
def test_a_stopped_primary_refuses_mutations_when_it_wakes_and_steps_down(masters: Masters) -> None:
    a, b = masters.a, masters.b
    elected(a)
    mkdir(a.url, "before")
    a.signal(signal.SIGSTOP)
    wait_for("master b to take over", lambda: primary_of(b) is b, timeout=4 * TTL)
    mkdir(b.url, "while-a-slept")
    a.signal(signal.SIGCONT)
    # its lease lapsed while it slept: it refuses, or is already restarting as a shadow
    with pytest.raises((GFSError, httpx.TransportError)) as e:
        mkdir(a.url, "from-the-old-primary", timeout=5.0)
    assert not isinstance(e.value, GFSError) or e.value.code == "NOTPRIMARY", e.value
    wait_for("a to rejoin as b's shadow", lambda: same_metadata(a.url, b.url)
             and not call(a.url, "ha_status")["primary"], timeout=20)
    assert "from-the-old-primary" not in names(b.url)


@needs_nft
@pytest.mark.allow_errors
def test_a_partitioned_primary_is_replaced_and_rejoins_when_healed(masters: Masters) -> None:
    """nftables cut the primary's address off from everything: the shadow
    takes over; healed, the old primary refuses to mutate, becomes the new
    one's shadow and converges to the same metadata."""
    a, b = masters.a, masters.b
    elected(a)
    mkdir(a.url, "before")
    with Partition("ha") as part:
        part.cut(["ip saddr 127.0.0.2", "ip daddr 127.0.0.2"])
        wait_for("master b to take over", lambda: primary_of(b) is b, timeout=4 * TTL)
        mkdir(b.url, "during")
    with pytest.raises((GFSError, httpx.TransportError)) as e:
        mkdir(a.url, "from-the-old-primary", timeout=5.0)
    assert not isinstance(e.value, GFSError) or e.value.code == "NOTPRIMARY", e.value
    wait_for("a to rejoin as b's shadow and converge",
             lambda: not call(a.url, "ha_status")["primary"] and same_metadata(a.url, b.url),
             timeout=30)
    assert {"before", "during"} <= names(a.url) and "from-the-old-primary" not in names(b.url)
