"""The master's HTTP face: thin handlers over :class:`master.core.Master`.

Each handler validates its fields (``need``/``opt``: a missing or mistyped
field is BADREQ), calls one Master method -- or, for a read-only report, one
:mod:`master.services.queries` function -- and returns its reply. Mutations
return only after their op-log record is fsync'd (``Master.mutate``).
"""
from __future__ import annotations

import functools
import time
from typing import Any

from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import INLINE_MAX, MAX_NAME, PROTOCOL_VERSION, check_version
from gfsfs.common.rpc import CLUSTER, OPEN, SESSION, App, Request, Response, need, opt
from gfsfs.common.validate import check_addr, check_bytes, check_id, check_server_id, opt_float

from master.state import image, records
from master.api import ha as ha_api, metrics, web
from master.api.exports import Exports
from master.exports import guard
from master.ha.service import HA
from master.services import queries, quotas, trash
from master.core import FirstWrite, Master
from master.state.namespace import MAX_GOAL, ROOT_INO, Record
from master.state.quota import DEFAULT_GRACE_NS
from master.state.perms import R, X, Ctx, require, xattr_access

Req = dict[str, Any]
U32 = (1 << 32) - 1
I63 = (1 << 63) - 1
MAX_READDIR = 4096
MAX_CHUNKS = 1 << 16


def _u32(req: Req, name: str, default: int | None = None) -> int:
    value = need(req, name, int) if default is None else opt(req, name, int, default)
    if not 0 <= value <= U32:
        raise GFSError(Code.EINVAL, f"field {name!r} out of range")
    return value


def _nat(req: Req, name: str, default: int | None = None) -> int:
    value = need(req, name, int) if default is None else opt(req, name, int, default)
    if value < 0:
        raise GFSError(Code.EINVAL, f"field {name!r} must not be negative")
    return value


def _id(req: Req, name: str, default: int | None = None) -> int:
    """A uid or gid (2**32-1, the kernel's "no id", is refused)."""
    if default is not None and req.get(name) is None:
        return default
    return check_id(name, need(req, name, int))


def _chunkd_id(req: Req) -> str:
    return check_server_id(need(req, "id", str))


def _space(req: Req) -> tuple[int, int, int]:
    """A chunkd's capacity, used and free bytes, each within what sums can carry."""
    return tuple(check_bytes(k, need(req, k, int))          # type: ignore[return-value]
                 for k in ("capacity_bytes", "used_bytes", "free_bytes"))


def _name(req: Req, name: str = "name") -> bytes:
    value = need(req, name, (bytes, str))
    return value.encode() if isinstance(value, str) else value


def _rid(req: Req, rec: Record) -> Record:
    """``rec`` with the request's ``rid`` (applied once; a retry answers the same)."""
    rid = opt(req, "rid", int)
    if rid is not None and not 0 < rid <= I63:
        raise GFSError(Code.BADREQ, "rid must be 1..2**63-1")
    return records.with_rid(rec, rid)


def _ctx(req: Req) -> Ctx | None:
    raw = opt(req, "ctx", dict)
    if raw is None:
        return None
    gids = opt(raw, "gids", list, [])
    for g in gids:
        if isinstance(g, bool) or not isinstance(g, int):
            raise GFSError(Code.BADREQ, "ctx.gids must be integers")
    return Ctx(_id(raw, "uid"), _id(raw, "gid"), frozenset(gids))


def _pairs(req: Req, name: str) -> list[tuple[int, int]]:
    out = []
    for item in opt(req, name, list, []):
        if (not isinstance(item, (list, tuple)) or len(item) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= I63
                           for x in item)):
            raise GFSError(Code.BADREQ, f"{name} must be [[handle, version], ...] "
                                     f"(integers 0..2**63-1)")
        out.append((item[0], item[1]))
    return out


def _ints(req: Req, name: str) -> list[int]:
    items = opt(req, name, list, [])
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in items):
        raise GFSError(Code.BADREQ, f"{name} must be a list of integers")
    return items


class Handlers:
    def __init__(self, master: Master) -> None:
        self.m = master

    # ------------------------------------------------------------ namespace reads

    async def lookup(self, req: Req) -> Req:
        parent, name, ctx = need(req, "parent", int), _name(req), _ctx(req)
        if len(name) > MAX_NAME:
            raise GFSError(Code.ENAMETOOLONG, "name too long")
        require(self.m.ns.get_dir(parent), ctx, X)
        return self.m.ns.attr(self.m.ns.lookup(parent, name))

    async def getattr(self, req: Req) -> Req:
        return self.m.ns.attr(self.m.ns.get(need(req, "ino", int)))

    async def readdir(self, req: Req) -> Req:
        ino, offset = need(req, "ino", int), _nat(req, "offset")
        limit = min(max(1, opt(req, "limit", int, 1024)), MAX_READDIR)
        ctx = _ctx(req)
        require(self.m.ns.get_dir(ino), ctx, R)
        ns = self.m.ns
        return {"entries": [[name, ns.attr(ns.inodes[child]), cookie]
                            for name, child, cookie in ns.readdir(ino, offset, limit)]}

    async def readlink(self, req: Req) -> Req:
        return {"target": self.m.ns.readlink(need(req, "ino", int))}

    async def getxattr(self, req: Req) -> Req:
        inode = self.m.ns.get(need(req, "ino", int))
        name, ctx = _name(req), _ctx(req)
        xattr_access(inode, name, ctx, R)
        if name not in inode.xattrs:
            raise GFSError(Code.ENODATA, f"no xattr {name!r}")
        return {"value": inode.xattrs[name]}

    async def listxattr(self, req: Req) -> Req:
        inode = self.m.ns.get(need(req, "ino", int))
        return {"names": sorted(inode.xattrs)}

    async def statfs(self, req: Req) -> Req:
        check_version(req.get("protocol"), "the client", "the master")    # a mount's first call
        return {**self.m.statfs(opt(req, "ino", int, ROOT_INO)), "protocol": PROTOCOL_VERSION}

    # ------------------------------------------------------------ namespace writes

    async def setattr(self, req: Req) -> Req:
        ino = need(req, "ino", int)
        fields: dict[str, int] = {}
        if req.get("mode") is not None:
            fields["mode"] = _u32(req, "mode")
        for key in ("uid", "gid"):
            if req.get(key) is not None:
                fields[key] = _id(req, key)
        for key in ("size", "atime_ns", "mtime_ns"):
            if req.get(key) is not None:
                fields[key] = need(req, key, int)
        # write_handle (ftruncate): checked by perms, never logged
        rec = records.setattr(ino, **fields,
                              write_handle=opt(req, "write_handle", bool, False))
        return await self.m.mutate_attr(_rid(req, rec), _ctx(req))

    async def create(self, req: Req) -> Req:
        rec = records.create(need(req, "parent", int), _name(req), _u32(req, "mode"),
                             _id(req, "uid"), _id(req, "gid"), _u32(req, "rdev", 0),
                             self.m.ns.next_ino)
        return await self.m.mutate_attr(_rid(req, rec), _ctx(req))

    async def mkdir(self, req: Req) -> Req:
        rec = records.mkdir(need(req, "parent", int), _name(req), _u32(req, "mode"),
                            _id(req, "uid"), _id(req, "gid"), self.m.ns.next_ino)
        return await self.m.mutate_attr(_rid(req, rec), _ctx(req))

    async def symlink(self, req: Req) -> Req:
        rec = records.symlink(need(req, "parent", int), _name(req), _name(req, "target"),
                              _id(req, "uid"), _id(req, "gid"), self.m.ns.next_ino)
        return await self.m.mutate_attr(_rid(req, rec), _ctx(req))

    async def link(self, req: Req) -> Req:
        rec = records.link(need(req, "ino", int), need(req, "parent", int), _name(req))
        return await self.m.mutate_attr(_rid(req, rec), _ctx(req))

    async def unlink(self, req: Req) -> Req:
        rec = _rid(req, records.unlink(need(req, "parent", int), _name(req)))
        await self.m.mutate(rec, _ctx(req))
        return self.m.parent_attr(rec)

    async def rmdir(self, req: Req) -> Req:
        rec = _rid(req, records.rmdir(need(req, "parent", int), _name(req)))
        await self.m.mutate(rec, _ctx(req))
        return self.m.parent_attr(rec)

    async def rename(self, req: Req) -> Req:
        await self.m.rename(_rid(req, records.rename(need(req, "parent", int), _name(req),
                                                     need(req, "new_parent", int),
                                                     _name(req, "new_name"),
                                                     _nat(req, "flags", 0))),
                            _ctx(req))
        return {}

    async def setxattr(self, req: Req) -> Req:
        await self.m.mutate(_rid(req, records.setxattr(need(req, "ino", int), _name(req),
                                                       need(req, "value", bytes),
                                                       _nat(req, "flags", 0))),
                            _ctx(req))
        return {}

    async def removexattr(self, req: Req) -> Req:
        await self.m.mutate(_rid(req, records.removexattr(need(req, "ino", int), _name(req))),
                            _ctx(req))
        return {}

    # ------------------------------------------------------------ data path

    # the data path's ``ctx`` (an export session's opener) is checked by
    # master.exports.guard; here it is only validated

    async def chunks(self, req: Req) -> Req:
        _ctx(req)
        count = min(_nat(req, "count"), MAX_CHUNKS)
        return self.m.chunks(need(req, "ino", int), _nat(req, "first"), count)

    async def lease(self, req: Req) -> Req:
        _ctx(req)
        avoid = opt(req, "avoid", list, [])
        if not all(isinstance(a, str) for a in avoid):
            raise GFSError(Code.BADREQ, "avoid must be a list of chunkd ids")
        first = None
        if "data" in req:
            data = need(req, "data", bytes)
            if len(data) > INLINE_MAX:
                raise GFSError(Code.TOOBIG, f"{len(data)} bytes in a lease; at most {INLINE_MAX}")
            size = req.get("size")
            first = FirstWrite(_nat(req, "offset"), data, opt(req, "sync", bool, False),
                               None if size is None else _nat(req, "size"),
                               opt(req, "mtime_ns", int, time.time_ns()))
        return await self.m.lease(need(req, "ino", int), need(req, "index", int),
                                  frozenset(avoid), first)

    async def append_lease(self, req: Req) -> Req:
        _ctx(req)
        return await self.m.append_lease(need(req, "ino", int), _nat(req, "index", 0))

    async def extend(self, req: Req) -> Req:
        _ctx(req)
        rec = records.extend(need(req, "ino", int), _nat(req, "size"),
                             need(req, "mtime_ns", int))
        return await self.m.mutate_attr(rec, None)

    # ------------------------------------------------------------ chunkd -> master

    async def register(self, req: Req) -> Req:
        cid = _chunkd_id(req)
        check_version(req.get("protocol"), f"chunkd {cid}", "the master")
        reply = await self.m.register(
            cid, check_addr(need(req, "addr", str), "addr"),
            opt(req, "rack", str, "default"), *_space(req), _pairs(req, "chunks"))
        return {**reply, "protocol": PROTOCOL_VERSION}

    async def heartbeat(self, req: Req) -> Req:
        delete, again = self.m.registry.heartbeat(
            _chunkd_id(req), *_space(req), _nat(req, "chunk_count", 0))
        seen = _nat(req, "epoch", 0)
        if seen > self.m.ns.epoch:          # another master was promoted after us
            self.m.role.superseded(seen, opt(req, "primary_url", str, ""))
        if not self.m.role.rules():          # a shadow's replies are not acted upon
            return {"delete": [], "reregister": again, "extended": [], **self.m.role.reply()}
        extend = _ints(req, "extend")
        extended = [] if again or not extend else self.m.leases.extend(_chunkd_id(req),
                                                                       extend)
        return {"delete": delete, "reregister": again, "extended": extended,
                **self.m.role.reply()}

    async def report_chunks(self, req: Req) -> Req:
        return await self.m.report_chunks(_chunkd_id(req), _pairs(req, "added"),
                                          _ints(req, "removed"), _ints(req, "corrupt"))

    # ------------------------------------------------------------ admin

    async def checkpoint(self, req: Req) -> Req:
        return {"seq": await self.m.checkpoint()}

    async def dump_metadata(self, req: Req) -> Req:
        return image.to_json(self.m.ns)

    async def setgoal(self, req: Req) -> Req:
        goal = need(req, "goal", int)
        if not 1 <= goal <= MAX_GOAL:
            raise GFSError(Code.EINVAL, f"goal must be 1..{MAX_GOAL}, got {goal}")
        return await self.m.setgoal(need(req, "ino", int), goal,
                                    opt(req, "recursive", bool, False), _ctx(req))

    async def fileinfo(self, req: Req) -> Req:
        return queries.fileinfo(self.m, need(req, "ino", int))

    async def cluster_status(self, req: Req) -> Req:
        return queries.cluster_status(self.m)

    async def fsck(self, req: Req) -> Req:
        return queries.fsck(self.m)

    async def drain(self, req: Req) -> Req:
        """Start (or with ``cancel`` stop) draining a chunkd; its progress."""
        cid, cancel = need(req, "id", str), opt(req, "cancel", bool, False)
        reg = self.m.registry
        srv = reg.servers.get(cid)
        if srv is None:
            raise GFSError(Code.ENOENT, f"no chunk server {cid!r}")
        if cancel:
            reg.draining.discard(cid)
        elif not opt(req, "status", bool, False):
            reg.draining.add(cid)
        srv.draining = cid in reg.draining
        return queries.drain_status(self.m, srv)

    # ------------------------------------------------------------ snapshots, trash

    async def snapshot(self, req: Req) -> Req:
        return await self.m.snapshots.take(need(req, "src", int), need(req, "parent", int),
                                           _name(req), _ctx(req))

    # ------------------------------------------------------------ quotas (docs/quotas.md)

    async def quota_set(self, req: Req) -> Req:
        limits = {}
        for key in ("bytes", "inodes", "soft_bytes", "soft_inodes"):
            limits[key] = _nat(req, key, 0)
            if limits[key] > I63:
                raise GFSError(Code.EINVAL, f"field {key!r} out of range")
        grace = opt_float(req, "grace", 0.0, 1e10, DEFAULT_GRACE_NS / 1e9)
        assert grace is not None
        return await quotas.set_quota(self.m, need(req, "ino", int), limits, int(grace * 1e9))

    async def quota_rm(self, req: Req) -> Req:
        await quotas.remove_quota(self.m, need(req, "ino", int))
        return {}

    async def quota_list(self, req: Req) -> Req:
        return {"quotas": quotas.rows(self.m.ns, opt(req, "ino", int))}

    async def trash_list(self, req: Req) -> Req:
        return queries.trash_list(self.m)

    async def trash_restore(self, req: Req) -> Req:
        parent = opt(req, "parent", int)
        name = opt(req, "name", (bytes, str))
        if isinstance(name, str):
            name = name.encode()
        if (parent is None) != (name is None):
            raise GFSError(Code.BADREQ, "give both parent and name, or neither")
        return await trash.trash_restore(self.m, need(req, "ino", int), parent, name)

    async def trash_purge(self, req: Req) -> Req:
        # seconds; at most ~317 years (time.time_ns() - older_than stays an int64)
        older = opt_float(req, "older_than", 0.0, 1e10)
        inos = opt(req, "inos", list)
        if inos is not None and not all(isinstance(i, int) for i in inos):
            raise GFSError(Code.BADREQ, "inos must be integers")
        return await trash.trash_purge(self.m, older, inos)

    async def status(self, req: Request) -> Response:
        return Response.msgpack(queries.status(self.m))


# The master's RPC table: every ``POST /rpc/NAME`` is the Handlers method NAME
# (each typed in gfsfs.common.protocol.client_master or .chunkd_master).
RPCS = (
    # namespace
    "lookup", "getattr", "setattr", "create", "mkdir", "symlink", "link", "unlink",
    "rmdir", "rename", "readdir", "readlink", "setxattr", "getxattr", "listxattr",
    "removexattr", "statfs",
    # data path
    "chunks", "lease", "append_lease", "extend",
    # chunkd -> master
    "register", "heartbeat", "report_chunks",
    # admin
    "checkpoint", "dump_metadata", "setgoal", "fileinfo", "cluster_status", "fsck", "drain",
    "snapshot", "trash_list", "trash_restore", "trash_purge",
    # quotas
    "quota_set", "quota_rm", "quota_list",
)


# what only the primary may do: a shadow (or a primary whose lease lapsed)
# answers NOTPRIMARY before looking at anything -- not EACCES from its copy
# of the namespace, nor UNAVAILABLE for replicas it has not heard of
PRIMARY_ONLY = frozenset({
    "setattr", "create", "mkdir", "symlink", "link", "unlink", "rmdir", "rename",
    "setxattr", "removexattr", "lease", "append_lease", "extend", "setgoal", "drain",
    "snapshot", "trash_restore", "trash_purge", "quota_set", "quota_rm"})


def primary_only(master: Master, handler: Any) -> Any:
    @functools.wraps(handler)
    async def gated(req: Req) -> Req:
        master.role.check_primary()
        return await handler(req)
    return gated


def build_app(master: Master, ha: HA | None = None) -> App:
    """``ha``: the master's HA duties (a primary without shadows-to-be needs
    none: one that cannot follow or tell anyone to step down is made)."""
    app = App("master", max_rpc_body=master.cfg.max_request_bytes,
              body_timeout=master.cfg.body_timeout)
    handlers = Handlers(master)
    shares = Exports(master, master.exports)
    app.session_key = shares.session_key
    for name in RPCS:
        handler = getattr(handlers, name)
        if name in guard.SESSION_RPCS:      # a mount's session may call it, under its export
            handler = shares.guarded(name, handler)
        app.rpc(name, primary_only(master, handler) if name in PRIMARY_ONLY else handler,
                access=SESSION if name in guard.SESSION_RPCS else CLUSTER)
    app.rpc("session_open", shares.session_open, access=OPEN)
    master.shares = shares
    app.route("GET", "/status", handlers.status)
    ha_api.install(master, ha or HA(master, None), app)   # /rpc/promote, /ha/follow, ...
    metrics.install(master, app)            # GET /metrics (Prometheus)
    web.install(master, app)                # GET / (the web page), /web/...; keep last
    return app

