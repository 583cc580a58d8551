"""Logins for the web page and the admin token (docs/security.md, "Web page
and admin login").

On a cluster with a secret (``[cluster] secret_file``) the page's data routes
are :data:`gfsfs.common.rpc.WEB`: a request needs the cluster signature, the
admin token (``Authorization: Bearer``) or a session cookie. Without any: 401
``UNAUTHORIZED`` and nothing else. An open cluster (no secret) stays open.

- ``POST /web/login`` (open; JSON ``{"user", "password"}``, or ``{"token"}``
  with the admin token; the header ``X-GFS-Web: 1``): checks the password
  against the users file (scrypt, :mod:`gfsfs.common.auth.web`) and answers
  ``{"user", "role", "csrf", "expires"}`` with the cookie
  ``gfs_session=<random>; Path=/; HttpOnly; SameSite=Strict; Max-Age=...``
  (``; Secure`` when the request came over TLS or ``[web] secure_cookies``).
  At most ``[web] login_attempts`` failed tries a minute per client address
  (then 429 with Retry-After).
- ``POST /web/logout`` (the session's CSRF token in ``X-GFS-CSRF``): the
  session is forgotten and the cookie cleared.
- ``GET /web/api/session`` (open): who the cookie says you are and your
  CSRF token, so a reloaded page need not log in again.

Sessions live in the master's memory: a restart (or a failover to a shadow)
logs everyone out. A session ends at logout, after ``[web] session_seconds``,
or when its user is removed from the users file or gets a new password or
role (the file is read again when it changes).

Every change (mkdir, delete, upload) made with a session cookie needs the
session's CSRF token in ``X-GFS-CSRF`` (compared in constant time; 403 EPERM
without it), and an ``admin`` role (a ``viewer`` gets 403 EACCES). The admin
token and the cluster signature are not ambient credentials a browser sends
by itself, so they need no CSRF token.

The admin token is also accepted by the RPCs in :data:`ADMIN_RPCS` (what
the ``gfs`` CLI calls) and by ``/metrics``; the RPCs of daemons and mounts
(register, heartbeat, create, lease, ...) still need the cluster secret.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from gfsfs.common import rpc
from gfsfs.common.auth import web as webauth
from gfsfs.common.auth.attempts import Attempts
from gfsfs.common.config import WebConfig
from gfsfs.common.errors import Code, GFSError
from gfsfs.common.rpc import ADMIN, OPEN, SESSION, SESSION_ADMIN, App, Request, Response

log = logging.getLogger(__name__)

COOKIE = "gfs_session"
CSRF_HEADER = "x-gfs-csrf"
WEB_HEADER = "x-gfs-web"
MAX_SESSIONS = 10_000
MAX_LOGIN_BODY = 8192
HASHERS = trio.CapacityLimiter(2)   # scrypt runs in threads, two at a time

# the master RPCs the admin token may call (the gfs CLI's); every other RPC
# keeps the default, CLUSTER: the cluster secret only
ADMIN_RPCS = frozenset({
    "lookup", "getattr", "readdir", "readlink", "statfs", "fileinfo", "cluster_status",
    "fsck", "dump_metadata", "checkpoint", "setgoal", "drain", "snapshot", "trash_list",
    "trash_restore", "trash_purge", "ha_status", "promote"})


@dataclass
class Session:
    user: str
    role: str
    csrf: str
    expires: float
    hash: str | None            # the password hash it logged in with (None: the admin token)


def check_config(cfg: WebConfig) -> None:
    """Raise :class:`gfsfs.common.auth.web.WebAuthError` if the users file or
    the token file named cannot be used (the master refuses to start)."""
    if cfg.users_file:
        webauth.load_users(cfg.users_file)
    if cfg.admin_token_file:
        webauth.load_tokens(cfg.admin_token_file)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return Response(status, body, "application/json",
                    {"cache-control": "no-store", "x-content-type-options": "nosniff",
                     **(headers or {})})


def _err(code: str, message: str, status: int,
         headers: dict[str, str] | None = None) -> Response:
    return _json({"error": {"code": code, "message": message}}, status, headers)


def cookies(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in req.headers.get("cookie", "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq and name not in out:
            out[name] = value.strip().strip('"')
    return out


class WebLogin:
    def __init__(self, cfg: WebConfig, clock: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.clock = clock
        self.tokens: tuple[str, ...] = ()
        if cfg.admin_token_file:
            try:
                self.tokens = webauth.load_tokens(cfg.admin_token_file)
            except webauth.WebAuthError as exc:       # checked at start: gone meanwhile
                log.error("%s; the admin token is refused", exc)
        self._users: dict[str, webauth.User] = {}
        self._users_stat: tuple[int, int, int] | None = None
        self.sessions: dict[str, Session] = {}        # sha256(cookie) -> session
        self.attempts = Attempts(cfg.login_attempts, clock)
        self.failures = 0

    # ------------------------------------------------------------ credentials

    def users(self) -> dict[str, webauth.User]:
        """The users file, read again when it changed (``gfs web passwd``
        takes effect without a restart); a broken file keeps the last good one."""
        path = self.cfg.users_file
        if not path:
            return {}
        try:
            st = os.stat(path)
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            sig = (0, 0, 0)
        except OSError as exc:
            log.warning("users file %s: %s", path, exc)
            return self._users
        if sig != self._users_stat:
            try:
                self._users = webauth.load_users(path)
            except webauth.WebAuthError as exc:
                log.error("%s; keeping the accounts read before", exc)
            self._users_stat = sig
        return self._users

    def bearer_role(self, token: str) -> str | None:
        """App.bearer: the admin token's role."""
        return "admin" if self.tokens and webauth.token_matches(self.tokens, token) else None

    @staticmethod
    def _key(sid: str) -> str:
        return hashlib.sha256(sid.encode("utf-8", "surrogateescape")).hexdigest()

    def session_of(self, req: Request) -> Session | None:
        sid = cookies(req).get(COOKIE)
        if not sid or len(sid) > 128:
            return None
        key = self._key(sid)
        s = self.sessions.get(key)
        if s is None:
            return None
        if s.expires <= self.clock():
            del self.sessions[key]
            return None
        if s.hash is not None:          # a password login: the account as it is now
            u = self.users().get(s.user)
            if u is None or u.hash != s.hash or u.role != s.role:
                del self.sessions[key]
                return None
        return s

    def session_role(self, req: Request) -> str | None:
        """App.web_session: the role of the request's session cookie."""
        s = self.session_of(req)
        return s.role if s is not None else None

    def check_change(self, req: Request) -> None:
        """A change's check (mkdir, delete, upload): signed callers and the
        admin token pass; a session needs its CSRF token and the admin role."""
        who = rpc.caller()
        if who.signed:
            return
        if not who.bearer:
            s = self.session_of(req)
            given = req.headers.get(CSRF_HEADER, "")
            if s is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                    s.csrf.encode()):
                raise GFSError(Code.EPERM, "a change needs the session's CSRF token "
                                           "(header X-GFS-CSRF)")
        if who.session != "admin":
            raise GFSError(Code.EACCES, "read-only login (viewer): changes need an admin")

    # ------------------------------------------------------------ routes

    def _cookie(self, req: Request, value: str, max_age: int) -> str:
        out = f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        if self.cfg.secure_cookies or req.scheme == "https":
            out += "; Secure"
        return out

    async def login(self, req: Request) -> Response:
        try:
            if req.headers.get(WEB_HEADER) != "1" or \
                    not req.headers.get("content-type", "").startswith("application/json"):
                return _err("BADREQ", "log in with a JSON body and the header X-GFS-Web: 1",
                            400)
            wait = self.attempts.allow(req.client)
            if wait:
                return _err("EAGAIN", f"too many login attempts: try again in {wait:.0f} s",
                            429, {"retry-after": str(int(wait + 0.999))})
            req.max_body = MAX_LOGIN_BODY
            try:
                body = json.loads(await req.body())
            except ValueError:
                return _err("BADREQ", "the body is not JSON", 400)
            if not isinstance(body, dict):
                return _err("BADREQ", "the body must be a JSON object", 400)
            user, password, token = body.get("user"), body.get("password"), body.get("token")
            session = None
            if isinstance(token, str) and token:
                if self.bearer_role(token):
                    session = self._open("admin token", "admin", None)
            elif isinstance(user, str) and isinstance(password, str):
                account = self.users().get(user)
                ok = await trio.to_thread.run_sync(
                    webauth.check_password, account.hash if account else None, password,
                    limiter=HASHERS)
                if ok and account is not None:
                    session = self._open(account.name, account.role, account.hash)
            else:
                return _err("BADREQ", "give \"user\" and \"password\" (or \"token\")", 400)
        except GFSError as exc:
            return _err(exc.code, exc.message, exc.status)
        if session is None:
            self.failures += 1
            log.warning("web login refused for %r from %s",
                        (user if isinstance(user, str) else "(token)")[:64], req.client)
            return _err("UNAUTHORIZED", "wrong user name or password", 401)
        sid, s = session
        self.attempts.forgive(req.client)
        log.info("web login: %s (%s) from %s", s.user, s.role, req.client)
        max_age = int(s.expires - self.clock())
        return _json({"user": s.user, "role": s.role, "csrf": s.csrf, "expires": s.expires},
                     200, {"set-cookie": self._cookie(req, sid, max_age)})

    def _open(self, user: str, role: str, hashed: str | None) -> tuple[str, Session]:
        now = self.clock()
        if len(self.sessions) >= MAX_SESSIONS:
            for k in [k for k, s in self.sessions.items() if s.expires <= now]:
                del self.sessions[k]
            while len(self.sessions) >= MAX_SESSIONS:       # the oldest go first
                del self.sessions[next(iter(self.sessions))]
        sid = secrets.token_urlsafe(32)
        s = Session(user, role, secrets.token_urlsafe(32), now + self.cfg.session_seconds,
                    hashed)
        self.sessions[self._key(sid)] = s
        return sid, s

    async def logout(self, req: Request) -> Response:
        s = self.session_of(req)
        if s is not None:
            given = req.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                       s.csrf.encode()):
                return _err("EPERM", "logging out needs the session's CSRF token "
                                     "(header X-GFS-CSRF)", 403)
            sid = cookies(req)[COOKIE]
            self.sessions.pop(self._key(sid), None)
            log.info("web logout: %s from %s", s.user, req.client)
        return _json({"logged_out": s is not None}, 200,
                     {"set-cookie": self._cookie(req, "", 0)})

    def whoami(self, app: App) -> Callable[[Request], Any]:
        async def handler(req: Request) -> Response:
            if app.verifier is None:
                return _json({"secured": False, "user": None, "role": "admin", "csrf": None})
            s = self.session_of(req)
            return _json({"secured": True, "user": s.user if s else None,
                          "role": s.role if s else None, "csrf": s.csrf if s else None,
                          "expires": s.expires if s else None,
                          "logins": bool(self.cfg.users_file or self.tokens)})
        return handler


def install(cfg: WebConfig, app: App) -> WebLogin:
    """The login routes on ``app``, its session and bearer hooks, and the
    admin token on :data:`ADMIN_RPCS` (call it once every RPC is registered)."""
    login = WebLogin(cfg)
    app.web_session = login.session_role
    app.bearer = login.bearer_role
    for name in ADMIN_RPCS & set(app.rpc_access):
        app.rpc_access[name] = SESSION_ADMIN if app.rpc_access[name] == SESSION else ADMIN
    app.route("POST", "/web/login", login.login, access=OPEN)
    app.route("POST", "/web/logout", login.logout, access=OPEN)
    app.route("GET", "/web/api/session", login.whoami(app), access=OPEN)
    return login
