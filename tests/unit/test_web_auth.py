"""The web page's accounts and admin token (gfsfs.common.auth.web) and the
login bookkeeping of master.api.weblogin, without a master."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gfsfs.common.auth import web as webauth
from gfsfs.common.config import ConfigError, WebConfig, load
from gfsfs.common.rpc import Request
from master.api.weblogin import COOKIE, WebLogin


def test_password_hash_round_trip_and_salt() -> None:
    h1, h2 = webauth.hash_password("correct horse"), webauth.hash_password("correct horse")
    assert h1 != h2 and h1.startswith("scrypt$16384$8$1$")       # salted, parameters kept
    assert webauth.check_password(h1, "correct horse")
    assert not webauth.check_password(h1, "correct horsE")
    assert not webauth.check_password(None, "correct horse")      # unknown user: still hashed
    assert not webauth.check_password(h1, "")
    assert not webauth.check_password("garbage", "x")
    with pytest.raises(ValueError):
        webauth.hash_password("")


def test_users_file(tmp_path: Path) -> None:
    f = tmp_path / "users"
    assert webauth.set_user(f, "alice", "admin", "pw-alice-1")
    assert webauth.set_user(f, "bob", "viewer", "pw-bob-12")
    assert not webauth.set_user(f, "bob", "admin", "pw-bob-34")      # changed, not new
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    users = webauth.load_users(f)
    assert {u.name: u.role for u in users.values()} == {"alice": "admin", "bob": "admin"}
    assert webauth.check_password(users["bob"].hash, "pw-bob-34")
    assert webauth.remove_user(f, "alice") and not webauth.remove_user(f, "alice")
    for bad, why in [("eve:root:" + users["bob"].hash, "role"), ("e/ve:admin:x", "user name"),
                     ("eve:admin:plain", "hash")]:
        with pytest.raises(webauth.WebAuthError, match=why):
            webauth.parse_users(bad)
    with pytest.raises(webauth.WebAuthError, match="user name"):
        webauth.set_user(f, "../x", "admin", "pw")
    assert webauth.load_users(tmp_path / "none") == {}


def test_token_file(tmp_path: Path) -> None:
    f = tmp_path / "token"
    tok = webauth.generate_token(f)
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert webauth.load_tokens(f) == (tok,) and webauth.ensure_token(f) == tok
    with pytest.raises(webauth.WebAuthError, match="exists"):
        webauth.generate_token(f)
    assert webauth.token_matches((tok,), tok) and not webauth.token_matches((tok,), tok + "x")
    os.chmod(f, 0o644)
    with pytest.raises(webauth.WebAuthError, match="chmod 600"):
        webauth.load_tokens(f)
    with pytest.raises(webauth.WebAuthError, match="does not exist"):
        webauth.load_tokens(tmp_path / "missing")


def test_web_config_keys() -> None:
    assert load(None, ["web.session_seconds=120"]).web.session_seconds == 120
    with pytest.raises(ConfigError, match=r"\[web\] 'users'"):
        load(None, ["web.users=x"])
    with pytest.raises(ConfigError, match="session_seconds"):
        load(None, ["web.session_seconds=1"])


def _req(cookie: str = "", client: str = "10.0.0.1") -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}
    headers = {"cookie": f"{COOKIE}={cookie}"} if cookie else {}
    return Request("GET", "/web/api/list", {}, headers, client, receive, 1 << 20)


def test_sessions_expire_and_follow_the_users_file(tmp_path: Path) -> None:
    users = tmp_path / "users"
    webauth.set_user(users, "alice", "admin", "pw-alice-1")
    now = [1000.0]
    login = WebLogin(WebConfig(users_file=str(users), session_seconds=60), clock=lambda: now[0])
    account = login.users()["alice"]
    sid, s = login._open("alice", "admin", account.hash)
    assert login.session_role(_req(sid)) == "admin"
    assert login.session_role(_req(sid + "x")) is None and login.session_role(_req()) is None
    webauth.set_user(users, "alice", "viewer", "pw-alice-2")         # new password: out
    assert login.session_role(_req(sid)) is None
    sid, s = login._open("alice", "viewer", login.users()["alice"].hash)
    assert login.session_role(_req(sid)) == "viewer"
    now[0] += 61
    assert login.session_role(_req(sid)) is None and not login.sessions


def test_login_rate_limit_per_address() -> None:
    now = [0.0]
    login = WebLogin(WebConfig(login_attempts=3), clock=lambda: now[0])
    assert [login.attempts.allow("a") for _ in range(3)] == [0, 0, 0]
    assert login.attempts.allow("a") > 0 and login.attempts.allow("b") == 0
    login.attempts.forgive("a")                      # a success is not held against it
    assert login.attempts.allow("a") == 0 and login.attempts.allow("a") > 0
    now[0] += 61
    assert login.attempts.allow("a") == 0
