"""gfs-fuzz: seeded malformed and hostile requests against every route of a
running master and its chunkds (issue 10).

Each request is one of: an RPC whose fields are mostly plausible and partly
hostile (wrong types, boundary and huge integers, NaN/inf, huge strings and
lists, bad addresses, nested maps), an RPC body that is not a msgpack map, a
raw route with hostile paths, queries and headers, or a request whose body is
shorter than its Content-Length (then a half-close). The verdict: no answer
with status 500 (a daemon's own failure), every error reply a msgpack map with
a code, every daemon still answering ``GET /status`` at the end.

It never touches what it did not create: mutations name only inodes inside
its own sandbox directory (or numbers no inode has), chunk handles far above
any real one, and peers that are not chunkds of the cluster.

    gfs-fuzz --master URL --chunkd URL [--chunkd URL ...] --seed 1 --count 5000
"""
from __future__ import annotations

import argparse
import collections
import random
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack

from gfsfs.common.auth.hmac import Signer
from gfsfs.common.auth.secret import Secret
from gfsfs.common.rpc import Signing

FAR = 1 << 40                   # chunk handles and inode numbers no cluster reaches
INTS = [0, 1, -1, 2, 255, 4096, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
        (1 << 53) + 1, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1]
# what anyone may ask without credentials (an unsigned request is let in)
OPEN_PATHS = ("/rpc/session_open", "/web/static/", "/web/login", "/web/logout",
              "/web/api/session")


def _open(path: str) -> bool:
    return path == "/" or path.startswith(OPEN_PATHS)


FLOATS = [float("nan"), float("inf"), float("-inf"), 1e300, -1e300, -0.0, 0.5, 1e-300]
ADDRS = ["http://127.0.0.1:1", "http://127.0.0.1:99999", "http://127.0.0.1:0",
         "http://127.0.0.1:1,http://127.0.0.1:2", "ftp://127.0.0.1:21", "http://", "",
         "http://[::1:1", "http://a b:1", "http://127.0.0.1:1/path", "http://user@h:1",
         "x" * 5000, "http://127.0.0.1:-5"]

# rpc -> {field: kind}; "ino*" kinds name only sandbox inodes in mutations
MASTER_RPCS: dict[str, dict[str, str]] = {
    "lookup": {"parent": "ino", "name": "name", "ctx": "ctx"},
    "getattr": {"ino": "ino"}, "readlink": {"ino": "ino"}, "listxattr": {"ino": "ino"},
    "getxattr": {"ino": "ino", "name": "name", "ctx": "ctx"},
    "readdir": {"ino": "ino", "offset": "int", "limit": "int", "ctx": "ctx"},
    "statfs": {"ino": "ino"}, "cluster_status": {}, "fsck": {}, "trash_list": {}, "fileinfo": {"ino": "ino"},
    "chunks": {"ino": "ino", "first": "int", "count": "int", "ctx": "ctx"},
    "setattr": {"ino": "mine", "mode": "int", "uid": "id", "gid": "id", "size": "int",
                "atime_ns": "int", "mtime_ns": "int", "write_handle": "bool", "ctx": "ctx"},
    "create": {"parent": "mine", "name": "name", "mode": "int", "uid": "id", "gid": "id",
               "rdev": "int", "ctx": "ctx"},
    "mkdir": {"parent": "mine", "name": "name", "mode": "int", "uid": "id", "gid": "id"},
    "symlink": {"parent": "mine", "name": "name", "target": "name", "uid": "id", "gid": "id"},
    "link": {"ino": "mine", "parent": "mine", "name": "name"},
    "unlink": {"parent": "mine", "name": "name"}, "rmdir": {"parent": "mine", "name": "name"},
    "rename": {"parent": "mine", "name": "name", "new_parent": "mine", "new_name": "name",
               "flags": "int"},
    "setxattr": {"ino": "mine", "name": "name", "value": "bytes", "flags": "int"},
    "removexattr": {"ino": "mine", "name": "name"},
    "lease": {"ino": "mine", "index": "int", "avoid": "list", "offset": "int", "data": "bytes",
              "size": "int", "sync": "bool", "mtime_ns": "int", "ctx": "ctx"},
    "append_lease": {"ino": "mine", "index": "int", "ctx": "ctx"},
    "extend": {"ino": "mine", "size": "int", "mtime_ns": "int", "ctx": "ctx"},
    "session_open": {"path": "str", "ts": "str", "nonce": "str", "proof": "str"},
    "register": {"id": "fakeid", "addr": "addr", "rack": "str", "capacity_bytes": "int",
                 "used_bytes": "int", "free_bytes": "int", "chunks": "pairs"},
    "heartbeat": {"id": "fakeid", "capacity_bytes": "int", "used_bytes": "int",
                  "free_bytes": "int", "chunk_count": "int", "extend": "handles"},
    "report_chunks": {"id": "fakeid", "added": "pairs", "removed": "handles",
                      "corrupt": "handles"},
    "setgoal": {"ino": "mine", "goal": "int", "recursive": "bool"},
    "drain": {"id": "fakeid", "cancel": "bool", "status": "bool"},
    "snapshot": {"src": "mine", "parent": "mine", "name": "name"},
    "trash_restore": {"ino": "far", "parent": "mine", "name": "name"},
    "trash_purge": {"older_than": "float", "inos": "handles"},
    "ha_status": {}, "shadow_ack": {"shadow": "addr", "seq": "int"},
    "quota_set": {"ino": "mine", "bytes": "int", "inodes": "int", "soft_bytes": "int",
                  "soft_inodes": "int", "grace": "float"},
    "quota_rm": {"ino": "mine"}, "quota_list": {"ino": "ino"},
}
CHUNKD_RPCS: dict[str, dict[str, str]] = {
    "commit": {"handle": "handle", "version": "int", "offset": "int", "data_id": "data_id",
               "data": "bytes", "sync": "bool", "secondaries": "addrs"},
    "apply": {"handle": "handle", "version": "int", "offset": "int", "data_id": "data_id",
              "data": "bytes"},
    "append": {"handle": "handle", "version": "int", "data": "bytes", "data_id": "data_id",
               "chunk_size": "int", "min_offset": "int", "secondaries": "addrs"},
    "truncate": {"handle": "handle", "version": "int", "length": "int", "secondaries": "addrs"},
    "sync": {"handles": "handles", "relay": "addr"},
    "set_version": {"handle": "handle", "version": "int", "create": "bool", "data": "bytes",
                    "offset": "int", "sync": "bool"},
    "delete": {"handles": "handles"},
    "replicate": {"handle": "handle", "version": "int", "source": "addr"},
    "copy": {"handle": "handle", "version": "int", "new_handle": "handle", "new_version": "int"},
    "set_versions": {"versions": "pairs"},
}


@dataclass
class Tally:
    counts: collections.Counter[tuple[str, int]] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    sent: int = 0

    def note(self, where: str, status: int, body: bytes, ctype: str) -> None:
        self.counts[(where, status)] += 1
        if status == 500:
            self.failures.append(f"{where}: 500 {body[:300]!r}")
        elif status >= 400 and "msgpack" in ctype:
            try:
                reply = msgpack.unpackb(body)
                assert isinstance(reply["error"]["code"], str)
            except Exception:
                self.failures.append(f"{where}: {status} without an error code: {body[:200]!r}")

    def summary(self) -> str:
        by_status = collections.Counter()
        for (_w, status), n in self.counts.items():
            by_status[status] += n
        fives = sorted(((w, s), n) for (w, s), n in self.counts.items() if s >= 500)
        return (f"{self.sent} requests; statuses "
                + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items()))
                + f"; {len(self.failures)} failures"
                + ("; 5xx from " + ", ".join(f"{w} {s} x{n}" for (w, s), n in fives)
                   if fives else ""))


class Fuzzer:
    def __init__(self, master: str, chunkds: list[str], seed: int,
                 secret: Secret | None = None) -> None:
        self.master, self.chunkds = master, chunkds
        self.rng = random.Random(seed)
        self.seed = seed
        # a secured cluster: requests are signed (to reach the handlers), and
        # one in ten is sent unsigned, which must get 401 and nothing else
        self.secret = secret
        self.http = httpx.Client(timeout=15.0,
                                 auth=Signing(Signer(secret)) if secret is not None else None)
        self.mine: list[int] = []       # inodes of the sandbox
        self.tally = Tally()

    # ------------------------------------------------------------ values

    def hostile(self) -> Any:
        r = self.rng
        pick = r.randrange(9)
        if pick == 0:
            return r.choice(INTS)
        if pick == 1:
            return r.choice(FLOATS)
        if pick == 2:
            return r.choice(ADDRS)
        if pick == 3:
            return r.randbytes(r.choice([0, 1, 300, 70000]))
        if pick == 4:
            return [r.choice(INTS)] * r.choice([0, 3, 100000])
        if pick == 5:
            return {"uid": r.choice(INTS), "gid": r.choice(FLOATS), "x": [None]}
        if pick == 6:
            return r.choice([None, True, False])
        if pick == 7:
            return [[r.choice(INTS), r.choice(INTS + FLOATS)]] * r.randrange(1, 4)
        return "é" * r.choice([1, 300, 5000])

    def plausible(self, kind: str) -> Any:
        r = self.rng
        mine = r.choice(self.mine) if self.mine else FAR
        values: dict[str, Any] = {
            "ino": r.choice([1, mine, FAR + r.randrange(100)]),
            "mine": r.choice([mine, mine, FAR + r.randrange(100)]),
            "far": FAR + r.randrange(100),
            "name": r.choice([b"f%d" % r.randrange(20), b"x" * 256, b"a/b", b".", b"..", b""]),
            "int": r.choice([0, 1, 7, 4096, 1 << 20, 1 << 26, r.randrange(1 << 30)]),
            "id": r.choice([0, 1000, 65534]),
            "bool": r.choice([True, False]),
            "bytes": r.randbytes(r.choice([0, 5, 1000])),
            "str": r.choice(["default", "r1", ""]),
            "list": [r.choice(["chunk1", "x"])],
            "ctx": {"uid": r.choice([0, 1000]), "gid": 0, "gids": [0, 5]},
            "fakeid": f"fuzz-{self.seed}-{r.randrange(4)}",
            "addr": r.choice(["http://127.0.0.1:1", "http://127.0.0.9:2"]),
            "addrs": [r.choice(["http://127.0.0.1:1", "http://127.0.0.9:2"])],
            "handle": FAR + r.randrange(1000),
            "handles": [FAR + r.randrange(1000) for _ in range(r.randrange(3))],
            "pairs": [[FAR + r.randrange(1000), r.randrange(5)] for _ in range(r.randrange(3))],
            "data_id": r.choice(["ab" * 8, "zz", "0" * 65]),
            "float": r.choice([0, 1.5, 3600]),
        }
        return values[kind]

    def body(self, fields: dict[str, str]) -> dict[str, Any]:
        r = self.rng
        out: dict[str, Any] = {}
        for name, kind in fields.items():
            roll = r.random()
            if roll < 0.15:
                continue                            # missing
            hostile_ok = kind not in ("mine",)      # never aim a mutation at others' files
            out[name] = self.hostile() if hostile_ok and roll > 0.75 else self.plausible(kind)
            if kind == "mine" and roll > 0.9:
                out[name] = r.choice(INTS[2:] + [FAR])  # numbers no inode has, or 0/-1
                if out[name] in (1,):
                    out[name] = FAR
        if r.random() < 0.1:
            out[r.choice(["zzz", "", "\x00"])] = self.hostile()
        return out

    # ------------------------------------------------------------ requests

    def setup(self) -> None:
        """The sandbox: a directory with a few files of its own."""
        root = self._call(self.master, "mkdir", {"parent": 1, "name": b"fuzz-%d-%d" % (
            self.seed, time.time_ns()), "mode": 0o40755, "uid": 0, "gid": 0})
        self.mine.append(root["ino"])
        for i in range(4):
            attr = self._call(self.master, "create", {"parent": root["ino"], "name": b"s%d" % i,
                                                      "mode": 0o100644, "uid": 0, "gid": 0})
            self.mine.append(attr["ino"])

    def _call(self, base: str, name: str, body: dict[str, Any]) -> Any:
        resp = self.http.post(f"{base}/rpc/{name}", content=msgpack.packb(body))
        resp.raise_for_status()
        return msgpack.unpackb(resp.content, strict_map_key=False)

    def one(self) -> None:
        r = self.rng
        roll = r.random()
        self.tally.sent += 1
        if roll < 0.55:
            name = r.choice(sorted(MASTER_RPCS))
            self.rpc(self.master, "master", name, self.body(MASTER_RPCS[name]))
        elif roll < 0.80:
            name = r.choice(sorted(CHUNKD_RPCS))
            self.rpc(r.choice(self.chunkds), "chunkd", name, self.body(CHUNKD_RPCS[name]))
        elif roll < 0.86:
            base = r.choice([self.master] + self.chunkds)
            name = r.choice(sorted(MASTER_RPCS) + sorted(CHUNKD_RPCS) + ["nope"])
            raw = r.choice([b"", b"\xc1", b"\x92\x01\x02", b"\x81\xa1a", r.randbytes(50),
                            msgpack.packb([1, 2]), msgpack.packb("s"), b"\xdf\xff\xff\xff\xff"])
            self.send("POST", f"{base}/rpc/{name}", content=raw, where=f"raw {name}")
        elif roll < 0.97:
            self.raw_route()
        else:
            self.short_body()

    def rpc(self, base: str, who: str, name: str, body: dict[str, Any]) -> None:
        try:
            content = msgpack.packb(body, use_bin_type=True)
        except (OverflowError, ValueError):
            content = msgpack.packb({k: v for k, v in body.items()
                                     if not isinstance(v, int) or -(1 << 63) <= v < 1 << 64})
        self.send("POST", f"{base}/rpc/{name}", content=content, where=f"{who} {name}")

    def raw_route(self) -> None:
        r = self.rng
        m, c = self.master, r.choice(self.chunkds)
        sand = f"/{urllib.parse.quote('fuzz')}"
        choices = [
            ("GET", f"{c}/chunk/{r.choice(['', 'zz', '-1', str(FAR), '1' * 40])}",
             {"offset": r.choice(["0", "-1", "x", str(1 << 70)]),
              "length": r.choice(["0", "10", str(1 << 40), "nan"]),
              "version": r.choice(["0", "99", "-3"])}, None),
            ("PUT", f"{c}/data/{r.choice(['ab', 'zz', 'a' * 70])}", {},
             {"x-gfs-chain": r.choice(ADDRS)}),
            ("GET", f"{r.choice([m, c])}/status", {}, None),
            ("GET", f"{r.choice([m, c])}/metrics", {}, None),
            ("GET", f"{m}/web/api/list", {"path": r.choice(["/", "", "../..", "\x00", "a" * 5000])},
             None),
            ("GET", f"{m}/web/api/file", {"path": r.choice(["/", "/nope", "//", "%zz"])}, None),
            ("GET", f"{m}/web/download", {"path": r.choice(["/", "/nope", sand, ""])}, None),
            ("GET", f"{m}/web/static/{r.choice(['../../etc/passwd', 'app.js', '%00'])}", {}, None),
            ("POST", f"{m}/web/api/mkdir", {"path": r.choice([f"/nope/{r.randrange(9)}", "",
                                                              "/"])}, {"x-gfs-web": "1"}),
            ("POST", f"{m}/web/api/delete", {"path": r.choice(["/nope", "", "/"])},
             {"x-gfs-web": r.choice(["1", "0"])}),
            ("PUT", f"{m}/web/upload", {"path": r.choice(["/nope/x", "", "/"]),
                                        "overwrite": "1"}, {"x-gfs-web": "1"}),
            ("GET", f"{m}/{r.choice(['x', 'rpc/lookup', '..%2f'])}",
             {}, {"upgrade": "websocket", "connection": "Upgrade",
                  "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==", "sec-websocket-version": "13"}),
        ]
        method, url, params, headers = r.choice(choices)
        self.send(method, url, params=params, headers=headers,
                  content=r.randbytes(r.choice([0, 10, 5000])) if method != "GET" else None,
                  where=f"{method} {urllib.parse.urlsplit(url).path[:20]}")

    def send(self, method: str, url: str, where: str, **kw: Any) -> None:
        unsigned = self.secret is not None and self.rng.random() < 0.1
        if unsigned:
            kw["auth"] = None
        try:
            resp = self.http.request(method, url, **kw)
        except httpx.TimeoutException:
            self.tally.counts[(where, -1)] += 1     # slow answer (e.g. a lease that waits)
            return
        except httpx.TransportError as exc:
            self.tally.failures.append(f"{where}: {type(exc).__name__}: {exc}")
            return
        # (the server itself refuses a protocol upgrade, 400, before any app sees it)
        path = urllib.parse.urlsplit(url).path
        if unsigned and resp.status_code != 401 and not _open(path) and not (
                resp.status_code == 400 and "upgrade" in (kw.get("headers") or {})):
            self.tally.failures.append(f"{where}: unsigned, answered {resp.status_code}")
        self.tally.note(where, resp.status_code, resp.content,
                        resp.headers.get("content-type", ""))

    def short_body(self) -> None:
        """A body shorter than its Content-Length, then a half-close."""
        r = self.rng
        base = urllib.parse.urlsplit(r.choice([self.master] + self.chunkds))
        path = r.choice(["/rpc/lookup", "/rpc/commit", "/data/abcd", "/web/upload?path=/nope/x"])
        method = "PUT" if path.startswith(("/data", "/web")) else "POST"
        with socket.create_connection((base.hostname, base.port), timeout=10) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nX-GFS-Web: 1\r\n"
                      f"Content-Length: {r.choice([10, 100000])}\r\n\r\n".encode() + b"\x81")
            s.shutdown(socket.SHUT_WR)
            try:
                head = s.recv(64)
            except OSError:
                head = b""
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0
        self.tally.counts[("short body", status)] += 1
        if status >= 500:
            self.tally.failures.append(f"short body {path}: {head!r}")

    def alive(self) -> list[str]:
        dead = []
        for base in [self.master] + self.chunkds:
            try:       # any answer but a 5xx (a session's signature gets 401 there)
                status = self.http.get(f"{base}/status").status_code
                if status >= 500:
                    dead.append(f"{base}: {status}")
            except httpx.HTTPError as exc:
                dead.append(f"{base}: {exc}")
        return dead


def run(master: str, chunkds: list[str], seed: int, count: int,
        progress: int = 0, secret: Secret | None = None) -> Tally:
    fz = Fuzzer(master, chunkds, seed, secret)
    fz.setup()
    for i in range(count):
        fz.one()
        if progress and (i + 1) % progress == 0:
            print(f"seed {seed}: {i + 1} requests; {fz.tally.summary()}", flush=True)
    fz.tally.failures += [f"not answering: {d}" for d in fz.alive()]
    return fz.tally


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gfs-fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--master", help="master URL (default: start a cluster of its own)")
    p.add_argument("--chunkd", action="append", default=[], help="a chunkd URL (repeat)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--progress", type=int, default=0)
    args = p.parse_args(argv)
    if args.master is None:
        return _with_cluster(args)
    tally = run(args.master, args.chunkd, args.seed, args.count, args.progress)
    return _report(tally)


def _report(tally: Tally) -> int:
    print(tally.summary())
    for f in tally.failures[:50]:
        print("FAIL", f)
    return 1 if tally.failures else 0


def _with_cluster(args: argparse.Namespace) -> int:
    """Bring up master + 3 chunkds in a temp dir, fuzz them, check their logs."""
    import tempfile

    from gfsfs.tools.localcluster import Cluster
    with tempfile.TemporaryDirectory(prefix="gfs-fuzz-") as tmp:
        c = Cluster(Path(tmp), 3, extra=["master.heartbeat_interval=0.5",
                                          "chunk_server.heartbeat_interval=0.5"])
        try:
            c.start()
            tally = run(c.url, [d.url for d in c.servers], args.seed, args.count, args.progress)
            tally.failures += log_problems(c.logs)
        finally:
            c.stop()
    return _report(tally)


def log_problems(logs: Path) -> list[str]:
    """Lines of the daemons' logs (``*.out`` in ``logs``) that mean a request
    hit a bug: a traceback, or hypercorn's report of an exception in the app."""
    bad = ("Traceback", "Error in ASGI", "BusyResourceError")
    return [f"{p.name}: {line}" for p in sorted(logs.glob("*.out"))
            for line in p.read_text(errors="replace").splitlines()
            if any(b in line for b in bad)]


if __name__ == "__main__":
    sys.exit(main())
