"""The master's web page: browse, upload, download, delete, mkdir; cluster health.

Served by the master itself:

- ``GET /`` the page (``master/api/static/index.html``, ``app.js``, ``style.css``
  under ``/web/static/``; plain HTML/CSS/JS, no build step, no external assets);
- ``GET /web/api/list?path=DIR``, ``GET /web/api/file?path=FILE``,
  ``GET /web/api/cluster`` (chunk servers, replication state, traffic, trash, quotas):
  JSON for the page, which polls ``cluster`` (and the listing) every 2 s;
- ``POST /web/api/mkdir?path=DIR``, ``POST /web/api/delete?path=PATH``
  (a file, or an empty directory);
- ``GET /web/download?path=FILE``: the file's bytes, streamed;
- ``PUT /web/upload?path=FILE[&overwrite=1]``: the request body becomes the file,
  streamed; at most ``[master] web_upload_max_bytes`` (413 TOOBIG beyond it,
  and nothing of the upload is left, not even in trash).

Data goes through a :class:`gfsfs.client.core.Client` that the master opens on its
own URL (lazily, on the first request that needs it, in a task of the master's
nursery: :func:`run_client`): downloads read the file piece by piece from the
chunkds, uploads write the body into a hidden temporary file as it arrives and
rename it over the target once every byte is committed -- the master never
holds a whole file. Reads of the namespace (listings, replication state) look at
the master's in-memory state directly; changes go through the client, so they
take the same path (op log, permissions as root) as every other client's.

Every failure is a JSON ``{"error": {"code", "message"}}`` with the status from
:mod:`gfsfs.common.errors` (404 for a missing path, 400 for a malformed one, 409 for a
file where a directory should be...). Requests that change anything must carry
the header ``X-GFS-Web: 1`` (the page sets it): a cross-site form cannot, so a
page elsewhere cannot make a visitor's browser delete files here.

On a secured cluster (``[cluster] secret_file``) the JSON API, downloads and
uploads need a login (:mod:`master.api.weblogin`: a session cookie, the admin
token, or the cluster signature; else 401 and nothing else), and changes made
with a session need its CSRF token and the admin role. The page itself
(``/``, ``/web/static/``) and the login routes are open: they hold no data.

Paths (``?path=``) must be absolute, without ``..`` components or NUL, with
names of at most 255 bytes and at most 4096 bytes in all: else 400 (EINVAL,
ENAMETOOLONG) before anything is looked at.

Traffic: :class:`Traffic` counts requests (the App's observers) and body bytes in
and out (:func:`wrap`, an ASGI wrapper around the App) per second over the last
minute.
"""
from __future__ import annotations

import json
import logging
import secrets
import ssl
import stat
import time
import urllib.parse
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from gfsfs.common.config import ClientConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.protocol import MAX_NAME
from gfsfs.common.rpc import OPEN, WEB, App, Request, Response

from master.api import weblogin
from master.core import Master
from master.state.namespace import ROOT_INO, Inode
from master.services import queries
from master.services import quotas
from master.services.trash import trash_purge

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
WEB_HEADER = "x-gfs-web"          # required on requests that change something
PIECE = 1 << 20                   # bytes per read while streaming a download
MAX_LIST = 5000                   # directory entries listed at once
MAX_TRASH = 100                   # trash entries shown
MAX_PROBLEMS = 50                 # unhealthy chunks shown
MAX_PATH = 4096                   # bytes in a path given to the page's API
UPLOAD_BUFFER = 4 << 20           # the web client's upload_chunk_size
CLIENT_START_TIMEOUT = 10.0
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml"}

_UIS: weakref.WeakKeyDictionary[App, WebUI] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------- traffic

class Traffic:
    """Requests and body bytes per second, for the last ``window`` seconds."""

    def __init__(self, window: int = 60, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        # [second, requests, errors (status >= 500), bytes in, bytes out, Counter(route)]
        self.buckets: deque[list[Any]] = deque(maxlen=window + 1)
        self.total_requests = 0
        self.total_in = 0
        self.total_out = 0

    def _bucket(self) -> list[Any]:
        sec = int(self.clock())
        if not self.buckets or self.buckets[-1][0] != sec:
            self.buckets.append([sec, 0, 0, 0, 0, Counter()])
        return self.buckets[-1]

    def observe(self, route: str, status: int, seconds: float) -> None:
        b = self._bucket()
        b[1] += 1
        if status >= 500:
            b[2] += 1
        b[5][route] += 1
        self.total_requests += 1

    def add_in(self, n: int) -> None:
        if n:
            self._bucket()[3] += n
            self.total_in += n

    def add_out(self, n: int) -> None:
        if n:
            self._bucket()[4] += n
            self.total_out += n

    def snapshot(self, span: int = 10) -> dict[str, Any]:
        """Rates over the last ``span`` whole seconds, and per-second history."""
        now = int(self.clock())
        by_sec = {b[0]: b for b in self.buckets}
        history = []
        for sec in range(now - self.window, now):
            b = by_sec.get(sec)
            history.append([b[1], b[3], b[4]] if b else [0, 0, 0])
        recent = [by_sec[s] for s in range(now - span, now) if s in by_sec]
        routes: Counter[str] = Counter()
        for b in recent:
            routes.update(b[5])
        return {
            "span": span,
            "requests_per_sec": round(sum(b[1] for b in recent) / span, 2),
            "errors_per_sec": round(sum(b[2] for b in recent) / span, 2),
            "bytes_in_per_sec": round(sum(b[3] for b in recent) / span),
            "bytes_out_per_sec": round(sum(b[4] for b in recent) / span),
            "top_routes": [[r, round(n / span, 2)] for r, n in routes.most_common(8)],
            "history": history,     # oldest first: [requests, bytes in, bytes out]
            "total_requests": self.total_requests, "total_bytes_in": self.total_in,
            "total_bytes_out": self.total_out}


class _Counted:
    """ASGI wrapper counting request and response body bytes."""

    def __init__(self, app: App, traffic: Traffic) -> None:
        self.app = app
        self.traffic = traffic

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        traffic = self.traffic

        async def counted_receive() -> dict[str, Any]:
            msg = await receive()
            if msg["type"] == "http.request":
                traffic.add_in(len(msg.get("body", b"")))
            return msg

        async def counted_send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.body":
                traffic.add_out(len(msg.get("body", b"")))
            await send(msg)

        await self.app(scope, counted_receive, counted_send)


# ---------------------------------------------------------------- wiring

def install(master: Master, app: App) -> WebUI:
    """Register the page and its API on ``app``. Register it last: its ``/``
    route sees every GET no other route took (it hands paths other than the
    page itself on to routes registered after it)."""
    ui = WebUI(master, app)
    _UIS[app] = ui
    app.observers.append(ui.traffic.observe)
    ui.login = weblogin.install(master.web_cfg, app)    # /web/login, sessions, admin token
    app.route("GET", "/web/api/list", ui.api(ui.list_dir), access=WEB)
    app.route("GET", "/web/api/file", ui.api(ui.file_info), access=WEB)
    app.route("GET", "/web/api/cluster", ui.api(ui.cluster), access=WEB)
    app.route("POST", "/web/api/mkdir", ui.api(ui.mkdir, change=True), access=WEB)
    app.route("POST", "/web/api/delete", ui.api(ui.delete, change=True), access=WEB)
    app.route("GET", "/web/download", ui.api(ui.download), access=WEB)
    app.route("PUT", "/web/upload", ui.api(ui.upload, change=True), access=WEB)
    app.route("GET", "/web/static/", ui.api(ui.static), access=OPEN)
    app.route("GET", "/", ui.index, access=OPEN)   # other paths: checked in index
    return ui


def wrap(app: App) -> Any:
    """The ASGI app to serve: ``app`` with its body bytes counted for the page."""
    ui = _UIS.get(app)
    return app if ui is None else _Counted(app, ui.traffic)


async def run_client(app: App, host: str, port: int, tls: ssl.SSLContext | None = None,
                     scheme: str = "http") -> None:
    """Keep the page's :class:`Client` (on the master's own URL) while the
    master runs; it is opened when a request first needs it. Run this in the
    master's nursery once the port is bound. ``tls``: the master's client
    context (``[tls]``), with ``scheme`` "https" when the master serves TLS."""
    ui = _UIS.get(app)
    if ui is not None:
        await ui.run_client(self_url(host, port, scheme), tls)


def self_url(host: str, port: int, scheme: str = "http") -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host in ("::", "[::]"):
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def json_response(obj: Any, status: int = 200) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, "application/json",
                    {"cache-control": "no-store", "x-content-type-options": "nosniff"})


def _error(exc: GFSError) -> Response:
    return json_response(exc.to_wire(), exc.status)


async def _read_piece(client: Any, ino: int, offset: int, size: int, of: Any,
                      path: str | None) -> bytes:
    """``client.read``; a read no replica could answer (the client's EIO after
    its retries) is UNAVAILABLE (503): the data may be back once a chunkd is."""
    try:
        return await client.read(ino, offset, size, of)  # type: ignore[no-any-return]
    except GFSError as exc:
        if exc.code != "EIO":
            raise
        raise GFSError(Code.UNAVAILABLE, f"{path}: no replica could be read at {offset}: "
                                      f"{exc.message}") from None


def _text(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def _kind(inode: Inode) -> str:
    if inode.dir is not None:
        return "dir"
    if inode.chunks is not None and stat.S_ISREG(inode.mode):
        return "file"
    if stat.S_ISLNK(inode.mode):
        return "symlink"
    return "other"


class WebUI:
    def __init__(self, master: Master, app: App) -> None:
        self.m = master
        self.app = app
        self.traffic = Traffic()
        self.url: str | None = None
        self.client: Any = None
        self._wanted = trio.Event()
        self._ready = trio.Event()
        self.started = time.time()
        self.pages = {p.name: p for p in STATIC.iterdir() if p.is_file()} \
            if STATIC.is_dir() else {}
        self.login: weblogin.WebLogin | None = None

    # ------------------------------------------------------------ plumbing

    def api(self, handler: Callable[[Request], Awaitable[Response]],
            change: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """``handler`` with JSON errors (and the header check for changes)."""
        async def wrapped(req: Request) -> Response:
            try:
                if change and req.headers.get(WEB_HEADER) != "1":
                    raise GFSError(Code.EPERM, "changes need the header X-GFS-Web: 1")
                if change and self.login is not None:
                    self.login.check_change(req)     # CSRF token, admin role
                return await handler(req)
            except GFSError as exc:
                if exc.code == "INTERNAL":
                    log.error("%s %s: %s", req.method, req.path, exc)
                with trio.move_on_after(5):     # let a sender see the answer
                    await req.drain(64 << 20)
                return _error(exc)
            except Exception as exc:            # never let the page crash the master
                log.exception("web %s %s failed", req.method, req.path)
                return _error(GFSError(Code.INTERNAL, f"{type(exc).__name__}: {exc}"))
        return wrapped

    async def run_client(self, url: str, tls: ssl.SSLContext | None = None) -> None:
        from gfsfs.client.core import Client
        self.url = url
        while True:
            await self._wanted.wait()
            try:
                cfg = ClientConfig(master_url=url, upload_chunk_size=UPLOAD_BUFFER)
                async with Client.open(cfg, self.m.security.secret, tls=tls) as client:
                    self.client = client
                    self._ready.set()
                    await trio.sleep_forever()
            except Exception:
                log.exception("the web page's client failed; reopening on demand")
            finally:
                self.client = None
                self._ready = trio.Event()
                self._wanted = trio.Event()
            await trio.sleep(1.0)

    async def get_client(self) -> Any:
        if self.client is not None:
            return self.client
        if self.url is None:
            raise GFSError(Code.UNAVAILABLE, "the web page's data client is not running")
        self._wanted.set()
        ready = self._ready
        with trio.move_on_after(CLIENT_START_TIMEOUT):
            await ready.wait()
        if self.client is None:
            raise GFSError(Code.UNAVAILABLE, "the web page's data client did not start")
        return self.client

    # ------------------------------------------------------------ paths

    @staticmethod
    def split(path: str | None) -> list[bytes]:
        """``/a/b`` -> [b"a", b"b"]; EINVAL for anything but an absolute path
        of valid names."""
        if path is None:
            raise GFSError(Code.BADREQ, "missing query parameter 'path'")
        if len(path.encode("utf-8", "surrogateescape")) > MAX_PATH:
            raise GFSError(Code.ENAMETOOLONG, f"path over {MAX_PATH} bytes")
        if not path.startswith("/"):
            raise GFSError(Code.EINVAL, f"path must start with '/': {path[:80]!r}")
        if "\0" in path:
            raise GFSError(Code.EINVAL, "path contains a NUL byte")
        parts = []
        for part in path.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise GFSError(Code.EINVAL, "'..' is not allowed in paths")
            name = part.encode("utf-8", "surrogateescape")
            if len(name) > MAX_NAME:
                raise GFSError(Code.ENAMETOOLONG, f"name over {MAX_NAME} bytes: {part[:40]!r}...")
            parts.append(name)
        return parts

    def walk(self, parts: list[bytes]) -> Inode:
        ns = self.m.ns
        inode = ns.get(ROOT_INO)
        for i, name in enumerate(parts):
            if inode.dir is None:
                raise GFSError(Code.ENOTDIR, "/" + "/".join(_text(p) for p in parts[:i])
                               + " is not a directory")
            child = ns.child(inode.ino, name)
            if child is None:
                raise GFSError(Code.ENOENT, "no such file or directory: /"
                               + "/".join(_text(p) for p in parts[:i + 1]))
            inode = child
        return inode

    def resolve(self, path: str | None) -> Inode:
        return self.walk(self.split(path))

    def parent_of(self, path: str | None) -> tuple[Inode, bytes]:
        parts = self.split(path)
        if not parts:
            raise GFSError(Code.EINVAL, "the root directory has no parent")
        parent = self.walk(parts[:-1])
        if parent.dir is None:
            raise GFSError(Code.ENOTDIR, f"{path!r}: the parent is not a directory")
        return parent, parts[-1]

    def entry(self, name: bytes, inode: Inode) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": _text(name), "type": _kind(inode), "ino": inode.ino, "size": inode.size,
            "mode": stat.filemode(inode.mode), "uid": inode.uid, "gid": inode.gid,
            "mtime": inode.mtime_ns / 1e9, "goal": inode.goal, "nlink": inode.nlink}
        if out["name"].encode("utf-8", "surrogateescape") != name:
            out["raw_name"] = True          # not UTF-8: shown, but not addressable here
        if inode.chunks is not None:
            out.update(queries.file_replication(self.m.registry, inode))
        if stat.S_ISLNK(inode.mode):
            out["target"] = _text(inode.target)
        return out

    # ------------------------------------------------------------ pages

    async def index(self, req: Request) -> Response:
        if req.path in ("/", "/index.html"):
            return self._file("index.html")
        # any other path: say there is nothing only to those who may know
        self.app.admit(WEB, req.method, req.target, req.headers.get("authorization"),
                       None, None, req)
        if req.path.startswith("/web/"):       # the page's own namespace answers JSON
            return _error(GFSError(Code.NOROUTE, f"no route {req.method} {req.path}"))
        raise GFSError(Code.NOROUTE, f"no route {req.method} {req.path}")

    async def static(self, req: Request) -> Response:
        name = req.path[len("/web/static/"):]
        if name not in self.pages or name == "index.html":
            raise GFSError(Code.ENOENT, f"no static file {name!r}")
        return self._file(name)

    def _file(self, name: str) -> Response:
        path = self.pages.get(name)
        if path is None:
            raise GFSError(Code.ENOENT, f"{name} is not installed (master/api/static)")
        ctype = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
        return Response(200, path.read_bytes(), ctype,
                        {"cache-control": "no-cache", "x-content-type-options": "nosniff"})

    # ------------------------------------------------------------ API: namespace

    async def list_dir(self, req: Request) -> Response:
        path = req.query.get("path", "/")
        inode = self.resolve(path)
        if inode.dir is None:
            raise GFSError(Code.ENOTDIR, f"{path} is not a directory")
        ns = self.m.ns
        entries = []
        for name, (child, _cookie) in list(inode.dir.entries.items())[:MAX_LIST]:
            cinode = ns.inodes.get(child)
            if cinode is not None:
                entries.append(self.entry(name, cinode))
        entries.sort(key=lambda e: (e["type"] != "dir", e["name"]))
        parts = self.split(path)
        return json_response({"path": "/" + "/".join(_text(p) for p in parts),
                              "ino": inode.ino, "entries": entries,
                              "truncated": len(inode.dir.entries) > MAX_LIST,
                              "count": len(inode.dir.entries)})

    async def file_info(self, req: Request) -> Response:
        path = req.query.get("path")
        inode = self.resolve(path)
        info = queries.fileinfo(self.m, inode.ino)
        parts = self.split(path)
        name = parts[-1] if parts else b"/"
        chunks = [{"index": c["index"], "handle": c["handle"], "version": c["version"],
                   "replicas": [r["id"] for r in c["replicas"]],
                   "primary": c["primary"]["id"] if c["primary"] else None}
                  for c in info["chunks"]]
        return json_response({"path": path, "entry": self.entry(name, inode),
                              "chunk_size": info["chunk_size"], "chunks": chunks})

    async def mkdir(self, req: Request) -> Response:
        parent, name = self.parent_of(req.query.get("path"))
        client = await self.get_client()
        attr = await client.mkdir(parent.ino, name, stat.S_IFDIR | 0o755, 0, 0)
        return json_response({"ino": attr["ino"], "path": req.query["path"]}, 201)

    async def delete(self, req: Request) -> Response:
        parent, name = self.parent_of(req.query.get("path"))
        victim = self.m.ns.child(parent.ino, name)
        if victim is None:
            raise GFSError(Code.ENOENT, f"no such file or directory: {req.query['path']}")
        client = await self.get_client()
        if victim.dir is not None:
            await client.rmdir(parent.ino, name)
        else:
            await client.unlink(parent.ino, name)
        return json_response({"deleted": req.query["path"],
                              "trashed": victim.ino in self.m.ns.trash})

    # ------------------------------------------------------------ API: data

    async def download(self, req: Request) -> Response:
        """The file's bytes with a Content-Length. No replica of the first
        piece readable: 503 UNAVAILABLE. A piece failing later (after the 200
        went out): the transfer is aborted -- the error is raised out of the
        body, hypercorn closes the connection without ending the body, and the
        client sees fewer bytes than the Content-Length it was promised (an
        error in any HTTP client), never a short file that looks whole."""
        path = req.query.get("path")
        inode = self.resolve(path)
        if inode.dir is not None:
            raise GFSError(Code.EISDIR, f"{path} is a directory")
        if inode.chunks is None:
            raise GFSError(Code.EINVAL, f"{path} is not a regular file")
        client = await self.get_client()
        ino, size = inode.ino, inode.size
        of = client.open_file(ino)
        first = await _read_piece(client, ino, 0, min(PIECE, size), of, path) if size else b""
        name = _text(self.split(path)[-1])
        quoted = urllib.parse.quote(name, safe="")
        ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\'
                             else "_" for c in name)
        headers = {"content-length": str(size), "cache-control": "no-store",
                   "content-disposition":
                       f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}",
                   "x-content-type-options": "nosniff"}

        async def body() -> AsyncIterator[bytes]:
            off = 0
            data = first
            try:
                while True:
                    if data:
                        off += len(data)
                        yield data
                    if off >= size or not data:
                        break
                    data = await _read_piece(client, ino, off, min(PIECE, size - off), of, path)
                if off < size:          # the file shrank meanwhile: end with zeros
                    log.warning("download of %s: file shrank to %d of %d bytes", path, off, size)
                    while off < size:
                        n = min(PIECE, size - off)
                        off += n
                        yield bytes(n)
            except GFSError as exc:
                log.error("download of %s failed after %d of %d bytes: %s; aborting the "
                          "transfer", path, off, size, exc)
                raise           # out of the ASGI app: the connection is dropped mid-body
            finally:
                of.ahead.pieces.clear()

        return Response(200, body(), "application/octet-stream", headers)

    async def upload(self, req: Request) -> Response:
        """The body, streamed into a hidden temporary file, renamed over
        ``path`` once all of it is committed. Over ``[master]
        web_upload_max_bytes`` (by its Content-Length, before anything is
        created, or while it arrives): 413 TOOBIG, and the temporary file is
        removed and purged from trash."""
        path = req.query.get("path")
        parent, name = self.parent_of(path)
        limit = self.m.cfg.web_upload_max_bytes
        expected = req.content_length()
        if expected is not None and expected > limit:
            raise GFSError(Code.TOOBIG, f"upload of {expected} bytes; at most {limit} "
                                     "([master] web_upload_max_bytes)")
        overwrite = req.query.get("overwrite") in ("1", "true", "yes")
        existing = self.m.ns.child(parent.ino, name)
        if existing is not None:
            if existing.dir is not None:
                raise GFSError(Code.EISDIR, f"{path} is a directory")
            if not overwrite:
                raise GFSError(Code.EEXIST, f"{path} exists (add overwrite=1 to replace it)")
            if existing.chunks is None:
                raise GFSError(Code.EINVAL, f"{path} is not a regular file")
        client = await self.get_client()
        tmp = f".gfs-upload-{secrets.token_hex(6)}".encode()
        attr = await client.create(parent.ino, tmp, stat.S_IFREG | 0o644, 0, 0)
        ino, written = attr["ino"], 0
        req.max_body = limit             # it streams through; TOOBIG beyond the limit
        try:
            async for piece in req.stream():
                await client.write(ino, written, piece)
                written += len(piece)
            if expected is not None and expected != written:
                raise GFSError(Code.EIO, f"got {written} of {expected} bytes")
            await client.flush(ino)
            await client.rename(parent.ino, tmp, parent.ino, name)
        except BaseException as exc:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await self._discard_upload(client, parent.ino, tmp, ino, path, exc)
            raise
        client.forget(ino)
        log.info("web upload: %s, %d bytes", path, written)
        return json_response({"path": path, "ino": ino, "size": written}, 201)

    async def _discard_upload(self, client: Any, parent: int, tmp: bytes, ino: int,
                              path: str | None, exc: BaseException) -> None:
        """Remove a failed upload's temporary file, and purge it from trash at
        once (its chunks become garbage): nothing of it stays visible."""
        log.warning("web upload of %s failed (%s); removing %r", path, exc, tmp)
        try:
            await client.discard(ino)       # its unsent bytes would fail to write back
            await client.unlink(parent, tmp)
            if ino in self.m.ns.trash:
                await trash_purge(self.m, inos=[ino])
        except Exception as err:
            log.warning("upload of %s failed; removing %r failed too: %s", path, tmp, err)
        client.forget(ino)

    # ------------------------------------------------------------ API: cluster

    async def cluster(self, req: Request) -> Response:
        m = self.m
        status = queries.cluster_status(m)
        interval, dead_after = m.cfg.heartbeat_interval, m.cfg.dead_after_heartbeats
        for s in status["servers"]:
            age = s.get("last_heartbeat_age", 0)
            s["state"] = ("dead" if not s["alive"]
                          else "late" if age > 1.5 * interval else "alive")
        referenced = status["chunks"]       # chunks the namespace references
        status["healthy"] = max(0, referenced - status["under_goal"] - status["over_goal"])
        return json_response({
            "now": time.time(), "started": self.started,
            "heartbeat_interval": interval, "dead_after_heartbeats": dead_after,
            "status": status, "problems": self._problems(),
            "traffic": self.traffic.snapshot(), "trash": self._trash(),
            "quotas": quotas.rows(m.ns)})

    def _problems(self) -> list[dict[str, Any]]:
        """Unhealthy chunks with the files they belong to (from fsck)."""
        try:
            report = queries.fsck(self.m)
        except Exception:           # the page goes on without the list
            log.exception("fsck for the web page failed")
            return []
        out = []
        for p in report.get("problems", [])[:MAX_PROBLEMS]:
            out.append({"handle": p.get("handle"), "goal": p.get("goal"),
                        "live": p.get("live"), "states": p.get("states", []),
                        "files": [f.get("path") or (f"(in trash: ino {f.get('ino')})"
                                                    if f.get("in_trash")
                                                    else f"(ino {f.get('ino')}, no name)")
                                  for f in p.get("files", [])][:5]})
        return out

    def _trash(self) -> dict[str, Any]:
        """The newest MAX_TRASH trashed files (queries.trash_entries)."""
        ns, ttl = self.m.ns, self.m.cfg.trash_time
        shown = queries.trash_items(ns, newest_first=True, limit=MAX_TRASH)
        try:
            dirs = queries.trash_dirs(ns, shown)
        except Exception:           # paths are a nicety
            dirs = {ROOT_INO: ""}
        entries = []
        for e in queries.trash_entries(ns, shown, dirs):
            name = _text(e.name or b"")
            entries.append({
                "ino": e.ino, "name": name,
                "path": None if e.dir_path is None else f"{e.dir_path}/{name}",
                "size": e.size, "deleted": e.deleted_ns / 1e9,
                "purge_at": e.deleted_ns / 1e9 + ttl})
        return {"count": len(ns.trash), "bytes": queries.trash_bytes(ns), "trash_time": ttl,
                "entries": entries}

def of(app: App) -> WebUI | None:
    return _UIS.get(app)
