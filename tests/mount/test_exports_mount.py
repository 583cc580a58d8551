"""Exports (issue 14, docs/security.md#exports) on a real secured cluster:
mounts that do not hold the cluster secret, each from its own loopback
address, let in only by configs/exports.toml-style rules -- a subtree root
that cannot be escaped, ro, maproot, a per-export password -- beside the
admin's mount, which holds the secret."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
import trio

from conftest import make_cluster, needs_fuse
from gfsfs.client.core import Client
from gfsfs.common.auth.hmac import Signer
from gfsfs.common.auth.private import write_private
from gfsfs.common.auth.session import session_secret
from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.tools.localcluster import Cluster, Mount, python

pytestmark = needs_fuse

ADMIN_NET, TEAM, PUB, VAULT, NOBODY = "127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8", \
    "127.0.0.9"
PASSWORD = "correct horse battery"

EXPORTS = f"""
[[export]]
name = "whole"
from = "{ADMIN_NET}/32"
path = "/"

[[export]]
name = "team"
from = ["{TEAM}"]
path = "/team"
maproot = "65534:65534"

[[export]]
name = "pub"
from = "{PUB}"
path = "/pub"
access = "ro"

[[export]]
name = "vault"
from = "{VAULT}"
path = "/vault"
password_file = "PASSWORD_FILE"
"""


@dataclasses.dataclass
class Site:
    cluster: Cluster
    admin: Path                 # the mount holding the secret
    base: Path
    exports: Path
    mounts: list[Mount]

    def mount(self, address: str, *options: str) -> Path:
        """A mount from ``address`` without the secret (its own directory)."""
        mp = Path(tempfile.mkdtemp(prefix="gfsfs-exp-"))
        mp.chmod(0o755)
        m = Mount(self.cluster.url, mp, self.base / "logs" / f"mount-{address}.out",
                  options=["--set", f"client.source_address={address!r}", *options])
        self.mounts.append(m)
        m.start()
        return mp

    def refused(self, address: str, *options: str) -> str:
        """mount.py's complaint when it is not let in (it must exit)."""
        mp = Path(tempfile.mkdtemp(prefix="gfsfs-exp-"))
        r = subprocess.run([python(), str(Path(__file__).parents[2] / "mount.py"),
                            self.cluster.url, str(mp), "--foreground",
                            "--set", f"client.source_address={address!r}",
                            "--set", f"client.log_dir={str(self.base / 'logs')!r}", *options],
                           capture_output=True, text=True, timeout=60)
        mp.rmdir()
        assert r.returncode != 0, r.stdout + r.stderr
        return r.stderr


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("exports")
    pw = base / "vault.password"
    write_private(pw, PASSWORD + "\n")
    exports = base / "exports.toml"
    exports.write_text(EXPORTS.replace("PASSWORD_FILE", str(pw)))
    admin = Path(tempfile.mkdtemp(prefix="gfsfs-adm-"))
    c = make_cluster(base, extra=[f"master.exports_file={str(exports)!r}"], secure=True)
    adm = Mount("", admin, base / "logs" / "mount.out", options=c.secret_sets())
    s = Site(c, admin, base, exports, [])
    try:
        c.start()
        adm.master_url = c.url
        adm.start()
        for d in ("team", "pub", "vault", "private"):
            (admin / d).mkdir()
        (admin / "private" / "secret.txt").write_text("not for the team\n")
        (admin / "pub" / "readme").write_text("hello\n")
        (admin / "team" / "rootonly").write_text("root's\n")
        (admin / "team" / "rootonly").chmod(0o600)
        (admin / "team").chmod(0o777)
        yield s
    finally:
        for m in s.mounts:
            m.stop()
            with contextlib.suppress(OSError):
                m.mountpoint.rmdir()
        adm.stop()
        c.stop()
        with contextlib.suppress(OSError):
            admin.rmdir()


def test_an_address_no_rule_allows_cannot_mount(site: Site) -> None:
    assert "no export allows / from 127.0.0.9" in site.refused(NOBODY)
    # an allowed address, but a path its rule does not cover
    assert "no export allows /private" in site.refused(TEAM, "-o", "export=/private")
    secret = site.cluster.secret()
    assert secret is not None
    metrics = httpx.get(f"{site.cluster.url}/metrics", timeout=10, headers={
        "authorization": Signer(secret).header("GET", "/metrics", None)}).text
    refused = [line for line in metrics.splitlines()
               if line.startswith("gfs_master_export_opens_refused")]
    assert refused and float(refused[0].split()[-1]) >= 2, refused


def test_a_whole_tree_export_reads_and_writes_without_the_secret(site: Site) -> None:
    mp = site.mount(ADMIN_NET)
    data = os.urandom(3 << 20)                  # three chunks of the test size
    (mp / "from-session").write_bytes(data)
    assert (site.admin / "from-session").read_bytes() == data
    assert (mp / "private" / "secret.txt").read_text() == "not for the team\n"
    (mp / "from-session").unlink()


def test_a_subtree_export_cannot_be_left_and_squashes_root(site: Site) -> None:
    mp = site.mount(TEAM, "-o", "export=/team")
    assert sorted(os.listdir(mp)) == ["rootonly"]
    assert os.stat(mp).st_ino == 1
    (mp / "new").write_text("made by the team's root\n")
    st = os.stat(site.admin / "team" / "new")
    assert (st.st_uid, st.st_gid) == (65534, 65534)           # root squashed
    with pytest.raises(PermissionError):
        (mp / "rootonly").read_text()          # 0600 root's: the squashed root may not read
    os.mkdir(mp / "sub")
    assert os.stat(mp / "sub" / "..").st_ino == 1
    assert (site.admin / "team" / "sub").is_dir()
    # df of the export shows its quota as the size
    admin_rpc(site, "quota_set", ino=os.stat(site.admin / "team").st_ino, bytes=50 << 20)
    st = os.statvfs(mp)
    assert st.f_blocks * st.f_frsize == 50 << 20
    admin_rpc(site, "quota_rm", ino=os.stat(site.admin / "team").st_ino)


def admin_rpc(site: Site, name: str, **body: Any) -> Any:
    """An RPC signed with the cluster secret (what the gfs CLI sends)."""
    secret = site.cluster.secret()
    assert secret is not None
    raw = msgpack.packb(body)
    r = httpx.post(f"{site.cluster.url}/rpc/{name}", content=raw, timeout=10,
                   headers={"authorization": Signer(secret).header("POST", f"/rpc/{name}", raw)})
    assert r.status_code == 200, r.content
    return msgpack.unpackb(r.content)


def session_client(address: str, cluster: Cluster, export: str = "/", **kw: Any) -> Any:
    cfg = ClientConfig(master_url=cluster.url, source_address=address, export=export,
                       short_circuit=False, failover_timeout=5, **kw)
    return Client.open(cfg, session=True)


def test_crafted_requests_cannot_reach_above_the_root(site: Site) -> None:
    outside = os.stat(site.admin / "private" / "secret.txt").st_ino
    private = os.stat(site.admin / "private").st_ino
    real_root_child = os.stat(site.admin / "pub").st_ino

    async def go() -> None:
        async with session_client(TEAM, site.cluster, "/team") as client:
            root = client.root
            for name, body in [("getattr", {"ino": outside}), ("chunks", {"ino": outside,
                                                                         "first": 0, "count": 1}),
                               ("readdir", {"ino": private}),
                               ("lookup", {"parent": private, "name": b"secret.txt"}),
                               ("lease", {"ino": outside, "index": 0}),
                               ("rename", {"parent": 1, "name": b"new", "new_parent": private,
                                           "new_name": b"stolen"}),
                               ("link", {"ino": outside, "parent": 1, "name": b"mine"}),
                               ("snapshot", {"src": real_root_child, "parent": 1,
                                             "name": b"copy"})]:
                with pytest.raises(GFSError) as info:
                    await client.call(name, body)
                assert info.value.code == Code.ENOENT, (name, info.value)
            up = await client.call("lookup", {"parent": 1, "name": b".."})
            assert up["ino"] == 1                   # the root's parent is the root
            # what only the secret may do: refused outright
            for name, body in [("fsck", {}), ("quota_list", {}), ("register", {"id": "x"}),
                               ("trash_list", {})]:
                with pytest.raises(GFSError) as info:
                    await client.call(name, body)
                assert info.value.code == Code.UNAUTHORIZED, (name, info.value)
            assert root != 1
    trio.run(go)


def test_a_ticket_is_good_only_from_its_address(site: Site) -> None:
    async def go() -> tuple[str, bytes]:
        async with session_client(TEAM, site.cluster, "/team") as client:
            signer = client.http.rpc_pool.signer
            return signer.secret.keys[0].kid, signer.secret.keys[0].material
    ticket, key = trio.run(go)
    body = msgpack.packb({"ino": os.stat(site.admin / "team").st_ino})    # its root
    for address, want in [(ADMIN_NET, 401), (TEAM, 200)]:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as http:
            r = http.post(f"{site.cluster.url}/rpc/getattr", content=body,
                          headers={"authorization": Signer(session_secret(ticket, key))
                                   .header("POST", "/rpc/getattr", body)})
            assert r.status_code == want, (address, r.content)


def test_a_read_only_export_answers_erofs(site: Site) -> None:
    mp = site.mount(PUB, "-o", "export=/pub")
    assert (mp / "readme").read_text() == "hello\n"
    for attempt in (lambda: (mp / "x").write_text("no"), lambda: (mp / "readme").unlink(),
                    lambda: os.mkdir(mp / "d")):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS

    async def go() -> None:             # the master refuses too, not only the kernel
        async with session_client(PUB, site.cluster, "/pub") as client:
            with pytest.raises(GFSError) as info:
                await client.call("mkdir", {"parent": 1, "name": b"d", "mode": 0o755,
                                            "uid": 0, "gid": 0})
            assert info.value.code == Code.EROFS
    trio.run(go)


def test_a_password_export_wants_the_password(site: Site, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    write_private(wrong, "not the password\n")
    assert "no export allows /vault" in site.refused(VAULT, "-o", "export=/vault")
    assert "no export allows /vault" in site.refused(VAULT, "-o",
                                                     f"export=/vault,password_file={wrong}")
    right = tmp_path / "right"
    write_private(right, PASSWORD + "\n")
    mp = site.mount(VAULT, "-o", f"export=/vault,password_file={right}")
    (mp / "kept").write_text("safe\n")
    assert (site.admin / "vault" / "kept").read_text() == "safe\n"


def test_a_changed_rule_ends_its_sessions(site: Site) -> None:
    original = site.exports.read_text()

    async def go() -> None:
        async with session_client(PUB, site.cluster, "/pub") as client:
            first = client.session.ticket
            await client.call("getattr", {"ino": 1})
            site.exports.write_text(original.replace('access = "ro"', 'access = "rw"'))
            await trio.sleep(1.2)               # the master looks at the file once a second
            await client.call("getattr", {"ino": 1})      # refused, reopened, answered
            assert client.session.ticket != first and not client.session.readonly
            site.exports.write_text(original.replace(f'from = "{PUB}"', 'from = "10.0.0.1"'))
            await trio.sleep(1.2)
            with pytest.raises(GFSError) as info:
                await client.call("getattr", {"ino": 1})
            assert info.value.code == Code.EACCES
    try:
        trio.run(go)
    finally:
        site.exports.write_text(original)
        time.sleep(1.2)
