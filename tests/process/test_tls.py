"""A cluster under mutual TLS ([tls] cert, key, ca, require_client_cert), real
processes, throwaway certs: every daemon serves https and every peer shows
its cert -- chunkd->master heartbeats, master->chunkd orders, chunkd->chunkd
forwards, the shadow's follow stream, the web page's own client -- and a
client library write and read, ``gfs status``, go through. A plain-HTTP
client, a client without a cert and one with a cert of another CA are
refused; garbage handshakes leave the daemons serving."""
from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

import gfsfs
from conftest import TEST_CHUNK_SIZE, make_cluster
from gfsfs.common import tls
from gfsfs.common.config import TLSConfig
from gfsfs.tools.etcd import free_port
from gfsfs.tools.localcluster import ROOT, Cluster, Daemon, python
from tlskit import PKI, make_pki


@dataclass
class TLSCluster:
    cluster: Cluster
    shadow: Daemon
    pki: PKI

    @property
    def url(self) -> str:
        return self.cluster.url

    def cfg(self) -> TLSConfig:
        return TLSConfig(cert=str(self.pki.cert), key=str(self.pki.key), ca=str(self.pki.ca))

    def ctx(self) -> ssl.SSLContext:
        ctx = tls.client_context(self.cfg())
        assert ctx is not None
        return ctx

    def call(self, url: str, rpc_name: str, /, **body: Any) -> Any:
        r = httpx.post(f"{url}/rpc/{rpc_name}", content=msgpack.packb(body, use_bin_type=True),
                       verify=self.ctx(), timeout=10)
        assert r.status_code == 200, r.content
        return msgpack.unpackb(r.content, raw=False, strict_map_key=False)


def _wait(what: str, check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except (httpx.HTTPError, AssertionError, KeyError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def tc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSCluster]:
    base = tmp_path_factory.mktemp("tls")
    pki = make_pki(base / "pki")
    sets = pki.sets(mutual=True)
    port = free_port("127.0.0.2")
    cluster = make_cluster(base, 2, extra=sets + ["master.replication_factor=2"],
                           also_masters=[f"https://127.0.0.2:{port}"])
    shadow = Daemon("shadow", [python(), "-m", "master", "--host", "127.0.0.2",
                               "--port", str(port), "--data-dir", str(base / "data" / "shadow"),
                               "--set", f"master.log_dir={str(base / 'logs')!r}",
                               "--set", 'master.role="shadow"', "--set", "master.sync_shadows=0",
                               *sum((["--set", s] for s in sets), [])],
                    base / "logs" / "shadow.out")
    try:
        cluster.start_master()
        shadow.argv += ["--set", f"master.primary_url={json.dumps(cluster.url)}"]
        shadow.start()
        for i in range(2):
            cluster.add_chunkd(i)
        t = TLSCluster(cluster, shadow, pki)
        _wait("both chunkds live at both masters", lambda: all(
            t.call(u, "cluster_status")["chunkds_alive"] == 2 for u in (t.url, shadow.url)))
        yield t
    finally:
        shadow.stop()
        cluster.stop()


def test_every_daemon_serves_https_and_the_cluster_works(tc: TLSCluster) -> None:
    assert tc.url.startswith("https://127.0.0.1:") and tc.shadow.url.startswith("https://")
    status = tc.call(tc.url, "cluster_status")
    assert all(c["addr"].startswith("https://") for c in status["servers"]), status
    data = bytes(range(256)) * (TEST_CHUNK_SIZE * 3 // 256 + 7)      # 4 chunks, 2 replicas
    with gfsfs.connect(tc.url, tls=tc.cfg(), request_timeout=10.0, retries=2) as fs:
        fs.write_bytes("/over-tls", data)
        assert fs.read_bytes("/over-tls") == data
    attr = tc.call(tc.url, "lookup", parent=1, name=b"over-tls")
    info = tc.call(tc.url, "fileinfo", ino=attr["ino"])
    assert len(info["chunks"]) == 4
    assert all(len(c["replicas"]) == 2 for c in info["chunks"])       # forwarded down the chain
    # the shadow followed over https
    _wait("the shadow to have the file", lambda: tc.call(
        tc.shadow.url, "lookup", parent=1, name=b"over-tls")["size"] == len(data))
    # the web page's own client (the master's cert, to itself)
    r = httpx.get(f"{tc.url}/web/download", params={"path": "/over-tls"}, verify=tc.ctx())
    assert r.status_code == 200 and r.content == data


def test_the_gfs_cli_speaks_tls(tc: TLSCluster) -> None:
    sets = sum((["--set", s] for s in tc.pki.sets()), [])
    r = subprocess.run([sys.executable, "-m", "gfsfs.tools.cli", "--master", tc.url, *sets,
                        "status"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    bad = subprocess.run([sys.executable, "-m", "gfsfs.tools.cli", "--master", tc.url,
                          "--set", "tls.ca='/nonexistent.pem'", "status"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "[tls] ca" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("who", ["plain http", "no cert", "cert of another CA"])
def test_strangers_are_refused(tc: TLSCluster, who: str) -> None:
    chunkd = tc.cluster.servers[0].url
    for url in (tc.url, chunkd):
        if who == "plain http":
            r = httpx.post(url.replace("https://", "http://") + "/rpc/statfs",
                           content=msgpack.packb({}), timeout=5)
            assert r.status_code == 400 and b"https://" in r.content
            continue
        ctx = tls.client_context(TLSConfig(ca=str(tc.pki.ca)))
        if who == "cert of another CA":
            assert ctx is not None
            ctx.load_cert_chain(tc.pki.other_cert, tc.pki.other_key)
        with pytest.raises(httpx.HTTPError):
            httpx.post(f"{url}/rpc/statfs", content=msgpack.packb({}), verify=ctx, timeout=5)


def test_garbage_handshakes_leave_the_daemons_serving(tc: TLSCluster) -> None:
    for url in (tc.url, tc.cluster.servers[0].url):
        host, port = url.split("//")[1].rsplit(":", 1)
        for junk in (b"\x16\x03\x01\x02\x00" + b"\xff" * 512, b"\x00" * 64, b"\x16\x03"):
            with socket.create_connection((host, int(port)), timeout=15) as s:
                s.sendall(junk)
                if junk != b"\x16\x03":         # a half record: the server waits for more
                    s.settimeout(15)
                    while s.recv(4096):
                        pass
        assert httpx.get(f"{url}/metrics", verify=tc.ctx(), timeout=10).status_code == 200


def test_a_daemon_with_a_broken_cert_says_so(tmp_path: Path, tc: TLSCluster) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    for prog in ("master", "chunkd"):
        r = subprocess.run([sys.executable, "-m", prog, "--port", "0",
                            "--data-dir", str(tmp_path / prog),
                            "--set", f"tls.cert={str(junk)!r}",
                            "--set", f"tls.key={str(tc.pki.key)!r}"],
                           capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert r.returncode == 2, (prog, r.stderr)
        assert "[tls] cert" in r.stderr and "Traceback" not in r.stderr, r.stderr
