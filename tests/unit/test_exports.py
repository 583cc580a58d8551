"""Exports, the pure parts (docs/security.md#exports): the rules file, the
session tickets, and the guard every session request passes."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gfsfs.client.session import from_master, to_master
from gfsfs.common.auth import session as sessions
from gfsfs.common.auth.private import write_private
from gfsfs.common.auth.secret import Secret
from gfsfs.common.config import ConfigError
from gfsfs.common.errors import Code, GFSError
from master.exports import guard
from master.exports.rules import Export, parse
from master.state import records
from master.state.namespace import Namespace

SECRET = Secret.of(b"k" * 32)


def rules(text: str, tmp: Path = Path(".")) -> list[Export]:
    return parse(text, tmp)


def test_rules_parse_and_bad_keys_are_named(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    write_private(pw, "a long password\n")
    (e, f) = rules(f'''
[[export]]
name = "a"
from = ["10.0.0.0/8", "127.0.0.5"]
path = "/x//y/"
maproot = "65534:100"
[[export]]
from = "*"
access = "ro"
password_file = "{pw}"
''')
    assert (e.name, e.path, e.maproot, e.readonly) == ("a", "/x/y", (65534, 100), False)
    assert e.allows("10.1.2.3") and e.allows("127.0.0.5") and not e.allows("127.0.0.6")
    assert e.allows("::ffff:10.0.0.1")            # IPv4-mapped: as IPv4
    assert e.covers("/x/y") and e.covers("/x/y/z") and not e.covers("/x/yz")
    assert (f.name, f.path, f.readonly, f.password) == ("export1", "/", True,
                                                      b"a long password")
    assert f.allows("192.0.2.1") and f.covers("/anything")
    for text, words in [('[[export]]\nfrom = "*"\nmapall = "1"', "unknown key 'mapall'"),
                        ('[[export]]\naccess = "rx"', "access"),
                        ('[[export]]\npath = "/a/../b"', "may not contain"),
                        ('[[export]]\npath = "rel"', "absolute"),
                        ('[[export]]\nfrom = "300.0.0.1"', "from"),
                        ('[[export]]\nmaproot = "root"', "maproot"),
                        ('[[export]]\nname = "a b"', "name"),
                        ('[[export]]\npassword_file = "/nonexistent/pw"', "does not exist"),
                        ('[[export]]\nname = "x"\n[[export]]\nname = "x"', "two exports"),
                        ('[exports]\nx = 1', "unknown key 'exports'")]:
        with pytest.raises(ConfigError, match=words):
            rules(text)
    loose = tmp_path / "loose"
    loose.write_text("a long password\n")
    loose.chmod(0o644)
    with pytest.raises(ConfigError, match="readable or writable by others"):
        rules(f'[[export]]\npassword_file = "{loose}"')


def test_the_first_matching_rule_wins_and_passwords_must_be_proven(tmp_path: Path) -> None:
    from master.exports.rules import ExportTable
    pw = tmp_path / "pw"
    write_private(pw, "a long password\n")
    f = tmp_path / "exports.toml"
    f.write_text(f'''
[[export]]
name = "vault"
from = "127.0.0.8"
path = "/v"
password_file = "{pw}"
[[export]]
name = "lan"
from = "127.0.0.0/8"
path = "/"
access = "ro"
''')
    t = ExportTable(str(f))
    assert t.match("127.0.0.8", "/v").name == "lan"             # no proof: the next rule
    assert t.match("127.0.0.8", "/v", {"vault"}).name == "vault"
    assert t.match("10.0.0.1", "/") is None


def test_tickets_bind_the_rule_the_address_and_the_secret() -> None:
    t = sessions.make_ticket(SECRET, "team", "fp1", 42, "127.0.0.6", now=1000)
    ticket = sessions.parse_ticket(t)
    assert ticket is not None and (ticket.export, ticket.root, ticket.address) == \
        ("team", 42, "127.0.0.6")
    key = sessions.check_ticket(SECRET, ticket, "fp1")
    assert key == sessions.key_of(SECRET, t) and len(key) == 32
    assert sessions.check_ticket(SECRET, ticket, "fp2") is None          # the rule changed
    assert sessions.check_ticket(Secret.of(b"o" * 32), ticket, "fp1") is None
    for forged in (t.replace(".42.", ".1."), t.replace("7f000006", "7f000005"),
                   t[:-1] + ("0" if t[-1] != "0" else "1")):
        parsed = sessions.parse_ticket(forged)
        assert parsed is not None and sessions.check_ticket(SECRET, parsed, "fp1") is None
    assert sessions.parse_ticket("S1.a.b") is None and sessions.parse_ticket("x" * 300) is None
    password = b"pw"
    wrapped = sessions.wrap(key, password, t)
    assert wrapped != key and sessions.wrap(wrapped, password, t) == key
    assert sessions.wrap(wrapped, b"other", t) != key


class Tree:
    """/team/{sub/file, rootonly} and /private/secret, built through records."""

    def __init__(self) -> None:
        self.ns = ns = Namespace(1 << 20)
        self.team = self.mkdir(1, b"team")
        self.private = self.mkdir(1, b"private")
        self.sub = self.mkdir(self.team, b"sub")
        self.file = self.create(self.sub, b"file", 0o100644, uid=1000)
        self.rootonly = self.create(self.team, b"rootonly", 0o100600)
        self.secret = self.create(self.private, b"secret", 0o100644)
        ns.apply(records.link(self.file, self.private, b"shared-link"))

    def mkdir(self, parent: int, name: bytes) -> int:
        return self.ns.apply(records.mkdir(parent, name, 0o40777, 0, 0, self.ns.next_ino))

    def create(self, parent: int, name: bytes, mode: int, uid: int = 0) -> int:
        return self.ns.apply(records.create(parent, name, mode, uid, uid, 0, self.ns.next_ino))


TEAM = Export("team", (), "/team", maproot=(65534, 65534))


def apply(tree: Tree, rpc: str, export: Export = TEAM, /, **req: Any) -> dict[str, Any]:
    return guard.apply(tree.ns, rpc, req, export, tree.team)


def refused(code: Code, tree: Tree, rpc: str, export: Export = TEAM, /, **req: Any) -> None:
    with pytest.raises(GFSError) as info:
        apply(tree, rpc, export, **req)
    assert info.value.code == code, info.value


def test_the_guard_keeps_a_session_inside_its_root() -> None:
    t = Tree()
    assert guard.within(t.ns, t.file, t.team) and guard.within(t.ns, t.sub, t.team)
    assert not guard.within(t.ns, t.secret, t.team) and not guard.within(t.ns, 1, t.team)
    assert guard.within(t.ns, 10**9, t.team)       # absent: the handler says ENOENT
    refused(Code.ENOENT, t, "getattr", ino=t.secret)
    refused(Code.ENOENT, t, "readdir", ino=t.private)
    refused(Code.ENOENT, t, "rename", parent=t.team, name=b"sub", new_parent=t.private,
            new_name=b"x")
    refused(Code.ENOENT, t, "link", ino=t.secret, parent=t.team, name=b"x")
    refused(Code.ENOENT, t, "snapshot", src=t.private, parent=t.team, name=b"x")
    refused(Code.EPERM, t, "fsck")
    refused(Code.EPERM, t, "quota_set", ino=t.team)
    assert apply(t, "lookup", parent=t.team, name=b"..")["name"] == b"."
    assert apply(t, "statfs")["ino"] == t.team
    # a file with a name inside (and one outside) is inside
    assert apply(t, "getattr", ino=t.file)["ino"] == t.file


def test_the_guard_squashes_root_and_owns_new_inodes_by_the_caller() -> None:
    t = Tree()
    req = apply(t, "create", parent=t.team, name=b"n", mode=0o100644, uid=0, gid=0)
    assert req["ctx"] == {"uid": 65534, "gid": 65534, "gids": []}
    assert (req["uid"], req["gid"]) == (65534, 65534)
    req = apply(t, "mkdir", parent=t.team, name=b"d", mode=0o40755, uid=0, gid=7,
                ctx={"uid": 1000, "gid": 1000, "gids": [7]})
    assert (req["uid"], req["gid"]) == (1000, 7)          # a group it is in: kept
    req = apply(t, "mkdir", parent=t.team, name=b"d", mode=0o40755, uid=5, gid=5,
                ctx={"uid": 1000, "gid": 1000})
    assert (req["uid"], req["gid"]) == (1000, 1000)
    refused(Code.BADREQ, t, "getattr", ino=t.team, ctx={"uid": "0", "gid": 0})
    refused(Code.BADREQ, t, "create", parent=[t.team], name=b"x", mode=0o644, uid=0, gid=0)
    refused(Code.BADREQ, t, "lease", ino={"x": 1}, index=0)
    refused(Code.BADREQ, t, "getattr", ino=True)
    refused(Code.BADREQ, t, "getattr", ino=t.team, ctx=[0, 0])
    # data: the squashed root may not read root's 0600 file; its owner may
    refused(Code.EACCES, t, "chunks", ino=t.rootonly, first=0, count=1)
    refused(Code.EACCES, t, "lease", ino=t.rootonly, index=0)
    apply(t, "chunks", ino=t.file, first=0, count=1)
    apply(t, "lease", ino=t.file, index=0, ctx={"uid": 1000, "gid": 1000})
    refused(Code.EACCES, t, "lease", ino=t.file, index=0, ctx={"uid": 2000, "gid": 2000})
    # an export without maproot: root stays root
    whole = Export("w", (), "/")
    assert guard.apply(t.ns, "chunks", {"ino": t.rootonly}, whole, 1)["ctx"]["uid"] == 0


def test_a_read_only_export_allows_only_reads() -> None:
    t = Tree()
    ro = Export("pub", (), "/team", readonly=True)
    for rpc in guard.SESSION_RPCS - guard.READ_RPCS:
        refused(Code.EROFS, t, rpc, ro, ino=t.file, parent=t.team)
    for rpc in guard.READ_RPCS:
        apply(t, rpc, ro, ino=t.file, parent=t.team, name=b"x")


def test_the_client_shows_the_session_root_as_inode_one() -> None:
    assert to_master(42, {"ino": 1, "x": 1}) == {"ino": 42, "x": 1}
    assert to_master(42, {"parent": 1, "new_parent": 7}) == {"parent": 42, "new_parent": 7}
    body = {"ino": 5}
    assert to_master(42, body) is body
    reply = {"ino": 42, "parent_attr": {"ino": 42}, "mode": 1}
    assert from_master(42, reply) == {"ino": 1, "parent_attr": {"ino": 1}, "mode": 1}
    entries = {"entries": [[b"a", {"ino": 42}, 1], [b"b", {"ino": 9}, 2]]}
    assert from_master(42, entries) == {"entries": [[b"a", {"ino": 1}, 1],
                                                    [b"b", {"ino": 9}, 2]]}
