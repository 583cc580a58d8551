"""The web page's login on a secured cluster (master.api.weblogin), end to end:
one cluster with a secret (``make run``'s admin account and admin token, plus
a viewer) for the whole module.

- over plain HTTP: every data route refuses a request without credentials
  (401, a short error, nothing else); login, wrong passwords, the cookie's
  attributes; CSRF tokens on changes; the viewer is read-only; logout ends the
  session; the admin token on /metrics, the web API and the gfs CLI; paths;
- in headless Chromium: log in through the form, log out with the button, a
  change without the CSRF token refused, the viewer cannot delete.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest

from gfsfs.common.auth import web as webauth
from gfsfs.tools.localcluster import Cluster

from conftest import make_cluster
from test_web import _act, _wait, browser  # noqa: F401  (the fixture)

WEB = {"X-GFS-Web": "1"}
VIEWER_PASSWORD = "viewer-password-1"
UNAUTHORIZED = {"error": {"code": "UNAUTHORIZED", "message": "authentication required"}}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = make_cluster(tmp_path_factory.mktemp("web-login"), chunkds=1, secure=True,
                     extra=["master.replication_factor=1"])
    try:
        c.web_login()
        assert c.web_users_file is not None
        webauth.set_user(c.web_users_file, "viewer", "viewer", VIEWER_PASSWORD)
        c.start()
        yield c
    finally:
        c.stop()


def admin_password(c: Cluster) -> str:
    assert c.admin_password_file is not None
    return c.admin_password_file.read_text().strip()


def admin_token(c: Cluster) -> str:
    assert c.admin_token_file is not None
    return webauth.load_tokens(c.admin_token_file)[0]


def login(http: httpx.Client, user: str, password: str) -> tuple[str, str, httpx.Response]:
    """(the session cookie, the CSRF token, the response)."""
    r = http.post("/web/login", json={"user": user, "password": password}, headers=WEB)
    assert r.status_code == 200, r.text
    sid = r.cookies["gfs_session"]
    http.cookies.clear()                # each request says which cookie it sends
    return sid, r.json()["csrf"], r


def cookie(sid: str) -> dict[str, str]:
    return {"cookie": f"gfs_session={sid}"}


def test_no_credentials_is_401_and_nothing_else(secured: Cluster) -> None:
    with httpx.Client(base_url=secured.url, timeout=30) as http:
        for method, path in [("GET", "/web/api/list?path=/"), ("GET", "/web/api/file?path=/x"),
                             ("GET", "/web/api/cluster"), ("POST", "/web/api/mkdir?path=/d"),
                             ("POST", "/web/api/delete?path=/d"),
                             ("GET", "/web/download?path=/f"), ("PUT", "/web/upload?path=/f"),
                             ("GET", "/metrics"), ("GET", "/status"), ("GET", "/web/nothing"),
                             ("GET", "/etc/passwd")]:
            for headers in ({}, WEB, cookie("forged"), {"authorization": "Bearer wrong" * 4},
                            {"authorization": "GFS-HMAC kid=1"}):
                r = http.request(method, path, headers=headers, content=b"x" * 10)
                assert r.status_code == 401, (method, path, headers, r.text)
                assert msgpack.unpackb(r.content) == UNAUTHORIZED, (method, path)
                assert set(r.headers) <= {"content-type", "content-length", "date", "server",
                                          "connection"}, r.headers
        # the page and its files hold no data: open, so that it can show the login form
        assert http.get("/").status_code == 200
        assert http.get("/web/static/app.js").status_code == 200
        who = http.get("/web/api/session").json()
        assert who["secured"] and who["user"] is None and who["csrf"] is None


def test_login_logout_csrf_and_roles(secured: Cluster) -> None:
    with httpx.Client(base_url=secured.url, timeout=30) as http:
        for user, pw in [("admin", "wrong"), ("nobody", "wrong"), ("viewer", admin_password(secured))]:
            r = http.post("/web/login", json={"user": user, "password": pw}, headers=WEB)
            assert r.status_code == 401 and "set-cookie" not in r.headers, r.text
        # a cross-site form cannot log anyone in: JSON and the page's header only
        r = http.post("/web/login", data={"user": "admin", "password": admin_password(secured)})
        assert r.status_code == 400

        sid, csrf, r = login(http, "admin", admin_password(secured))
        set_cookie = r.headers["set-cookie"]
        for attr in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="):
            assert attr in set_cookie, set_cookie
        assert "Secure" not in set_cookie                   # plain HTTP here
        assert r.json()["role"] == "admin"
        assert http.get("/web/api/session", headers=cookie(sid)).json()["csrf"] == csrf
        assert http.get("/web/api/list", params={"path": "/"}, headers=cookie(sid)).status_code \
            == 200

        # changes: the CSRF token, compared exactly
        # (a changed last character: the token's last base64 digit is one of 16,
        # so "A" in its place was the same token one time in 16)
        wrong = csrf[:-1] + ("B" if csrf[-1] != "B" else "C")
        for bad in ({}, {"x-gfs-csrf": ""}, {"x-gfs-csrf": wrong}):
            r = http.post("/web/api/mkdir", params={"path": "/d"},
                          headers={**WEB, **cookie(sid), **bad})
            assert r.status_code == 403 and r.json()["error"]["code"] == "EPERM", r.text
        ok = {**WEB, **cookie(sid), "x-gfs-csrf": csrf}
        assert http.post("/web/api/mkdir", params={"path": "/d"}, headers=ok).status_code == 201
        assert http.put("/web/upload", params={"path": "/d/f"}, content=b"data",
                        headers=ok).status_code == 201

        # the viewer reads, and changes nothing, CSRF token or not
        vsid, vcsrf, r = login(http, "viewer", VIEWER_PASSWORD)
        assert r.json()["role"] == "viewer"
        v = {**WEB, **cookie(vsid), "x-gfs-csrf": vcsrf}
        assert [e["name"] for e in http.get("/web/api/list", params={"path": "/d"},
                                            headers=v).json()["entries"]] == ["f"]
        assert http.get("/web/download", params={"path": "/d/f"}, headers=v).content == b"data"
        for method, path in [("POST", "/web/api/delete"), ("POST", "/web/api/mkdir"),
                             ("PUT", "/web/upload")]:
            r = http.request(method, path, params={"path": "/d/g"}, headers=v, content=b"x")
            assert r.status_code == 403 and r.json()["error"]["code"] == "EACCES", r.text
        r = http.post("/web/api/delete", params={"path": "/d/f"}, headers=v)
        assert r.status_code == 403
        assert http.get("/web/download", params={"path": "/d/f"}, headers=v).content == b"data"

        # logout: with the CSRF token; the cookie is cleared and dead from then on
        assert http.post("/web/logout", headers=cookie(sid)).status_code == 403
        r = http.post("/web/logout", headers={**cookie(sid), "x-gfs-csrf": csrf})
        assert r.status_code == 200 and "Max-Age=0" in r.headers["set-cookie"]
        for method, path in [("GET", "/web/api/list?path=/"), ("POST", "/web/api/mkdir?path=/e")]:
            r = http.request(method, path, headers=ok)
            assert r.status_code == 401, r.text
        assert http.get("/web/api/session", headers=cookie(sid)).json()["user"] is None
        assert http.get("/web/api/list", params={"path": "/"}, headers=v).status_code == 200

        # a user removed from the users file is logged out at once
        assert secured.web_users_file is not None
        webauth.remove_user(secured.web_users_file, "viewer")
        try:
            assert http.get("/web/api/list", params={"path": "/"}, headers=v).status_code == 401
        finally:
            webauth.set_user(secured.web_users_file, "viewer", "viewer", VIEWER_PASSWORD)


def test_paths_are_validated(secured: Cluster) -> None:
    with httpx.Client(base_url=secured.url, timeout=30) as http:
        sid, csrf, _ = login(http, "admin", admin_password(secured))
        h = {**WEB, **cookie(sid), "x-gfs-csrf": csrf}
        for path, code in [("/a/../b", "EINVAL"), ("/..", "EINVAL"), ("/a\0b", "EINVAL"),
                           ("relative", "EINVAL"), ("/" + "n" * 256, "ENAMETOOLONG"),
                           ("/" + "/".join(["d" * 200] * 21), "ENAMETOOLONG")]:
            for method, route in [("GET", "/web/api/list"), ("POST", "/web/api/mkdir"),
                                  ("POST", "/web/api/delete"), ("PUT", "/web/upload")]:
                r = http.request(method, route, params={"path": path}, headers=h, content=b"")
                assert r.status_code == 400 and r.json()["error"]["code"] == code, \
                    (method, path[:20], r.text)


def test_admin_token(secured: Cluster, tmp_path: Path) -> None:
    token = admin_token(secured)
    bearer = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=secured.url, timeout=30) as http:
        r = http.get("/metrics", headers=bearer)
        assert r.status_code == 200 and "gfs_master_inodes" in r.text
        assert http.get("/web/api/cluster", headers=bearer).status_code == 200
        # not an ambient credential: no CSRF token needed
        assert http.post("/web/api/mkdir", params={"path": "/by-token"},
                         headers={**bearer, **WEB}).status_code == 201
        # the daemons' and mounts' RPCs still want the cluster secret
        for name in ("register", "create", "heartbeat"):
            assert http.post(f"/rpc/{name}", content=msgpack.packb({}),
                             headers=bearer).status_code == 401
        # the token logs in through the form too
        r = http.post("/web/login", json={"token": token}, headers=WEB)
        assert r.status_code == 200 and r.json()["role"] == "admin"

    # gfs with the token instead of the secret: the admin RPCs answer
    env = {k: v for k, v in os.environ.items() if k not in ("GFS_SECRET_FILE",)}
    gfs = [sys.executable, "-m", "gfsfs.tools.cli", "--master", secured.url]
    res = subprocess.run(gfs + ["--json", "status"], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "GFS_ADMIN_TOKEN_FILE": str(secured.admin_token_file)},
                         timeout=60)
    assert res.returncode == 0, res.stderr
    res = subprocess.run(gfs + ["ls", "/"], capture_output=True, text=True, cwd=tmp_path,
                         env={**env, "GFS_ADMIN_TOKEN_FILE": str(secured.admin_token_file)},
                         timeout=60)
    assert res.returncode == 0 and "by-token" in res.stdout, res.stderr
    res = subprocess.run(gfs + ["status"], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=60)
    assert res.returncode != 0 and "UNAUTHORIZED" in res.stderr


def test_gfs_web_passwd(tmp_path: Path) -> None:
    users = tmp_path / "users"
    pw = tmp_path / "pw"
    pw.write_text("s3cret-password\n")
    gfs = [sys.executable, "-m", "gfsfs.tools.cli", "web"]
    res = subprocess.run(gfs + ["passwd", "carol", "--role", "admin", "--users-file", str(users),
                                "--password-file", str(pw)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 0 and "added carol (admin)" in res.stdout, res.stderr
    res = subprocess.run(gfs + ["passwd", "dave", "--set", f"web.users_file={str(users)!r}"],
                         input="another-password\n", capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    got = webauth.load_users(users)
    assert {u.name: u.role for u in got.values()} == {"carol": "admin", "dave": "viewer"}
    assert webauth.check_password(got["carol"].hash, "s3cret-password")
    res = subprocess.run(gfs + ["passwd", "erin", "--users-file", str(users)], input="short\n",
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert res.returncode == 1 and "at least 8" in res.stderr


# ---------------------------------------------------------------- in Chromium

def _page_fetch(d: object, method: str, url: str, csrf: bool) -> int:
    """The status of a fetch() made by the page itself (its cookie, and its
    CSRF token if ``csrf``)."""
    return int(d.execute_async_script(  # type: ignore[attr-defined]
        """const [method, url, csrf, done] = arguments;
           const h = {"X-GFS-Web": "1"};
           if (csrf) h["X-GFS-CSRF"] = session.csrf;
           fetch(url, {method, headers: h, credentials: "same-origin"})
             .then((r) => done(r.status), () => done(-1));""", method, url, csrf))


@pytest.mark.slow
def test_web_login_in_chromium(secured: Cluster, browser: object) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By

    d = browser
    with httpx.Client(base_url=secured.url, timeout=30) as http:
        h = {"authorization": f"Bearer {admin_token(secured)}", **WEB}
        http.post("/web/api/mkdir", params={"path": "/keep"}, headers=h)

    def log_in(user: str, password: str) -> None:
        _wait(d, lambda drv: drv.find_element(By.ID, "login").is_displayed(), 15, "login form")
        _act(d, lambda drv: drv.find_element(By.ID, "login-user").clear(), "clear")
        d.find_element(By.ID, "login-user").send_keys(user)                    # type: ignore[attr-defined]
        d.find_element(By.ID, "login-password").send_keys(password)            # type: ignore[attr-defined]
        d.find_element(By.ID, "login-btn").click()                             # type: ignore[attr-defined]

    def listed(drv: object) -> list[str]:
        return [r.get_attribute("data-name")
                for r in drv.find_elements(By.CSS_SELECTOR, "#listing tr[data-name]")]  # type: ignore[attr-defined]

    d.get(secured.url + "/")                                                   # type: ignore[attr-defined]
    log_in("admin", "not the password")
    _wait(d, lambda drv: "wrong user name or password" in
          drv.find_element(By.ID, "login-error").text, 15, "the wrong password refused")
    d.find_element(By.ID, "login-password").clear()                            # type: ignore[attr-defined]
    log_in("admin", admin_password(secured))
    _wait(d, lambda drv: "keep" in listed(drv), 15, "the listing after the login")
    assert d.find_element(By.ID, "who").text == "admin (admin)"               # type: ignore[attr-defined]
    cookies = {c["name"]: c for c in d.get_cookies()}                          # type: ignore[attr-defined]
    assert cookies["gfs_session"]["httpOnly"] and cookies["gfs_session"]["sameSite"] == "Strict"
    assert d.execute_script("return document.cookie") == ""                    # type: ignore[attr-defined]
    # a change without the CSRF token is refused, with it allowed
    assert _page_fetch(d, "POST", "/web/api/mkdir?path=/no-csrf", csrf=False) == 403
    assert _page_fetch(d, "POST", "/web/api/mkdir?path=/with-csrf", csrf=True) == 201
    _wait(d, lambda drv: "with-csrf" in listed(drv) and "no-csrf" not in listed(drv), 15,
          "only the change with the CSRF token made")
    # logout: the form again, and a reload does not bring the session back
    _act(d, lambda drv: drv.find_element(By.ID, "logout-btn").click(), "logout")
    _wait(d, lambda drv: drv.find_element(By.ID, "login").is_displayed(), 15, "login after logout")
    d.refresh()                                                                # type: ignore[attr-defined]
    _wait(d, lambda drv: drv.find_element(By.ID, "login").is_displayed(), 15, "still logged out")
    assert _page_fetch(d, "GET", "/web/api/list?path=/", csrf=False) == 401

    # the viewer: sees the files, has no delete buttons, and a delete is refused
    log_in("viewer", VIEWER_PASSWORD)
    _wait(d, lambda drv: "keep" in listed(drv), 15, "the viewer's listing")
    assert not [b for b in d.find_elements(By.CSS_SELECTOR, "button.delete")  # type: ignore[attr-defined]
                if b.is_displayed()]
    assert _page_fetch(d, "POST", "/web/api/delete?path=/keep", csrf=True) == 403
    assert "keep" in listed(d)
    with httpx.Client(base_url=secured.url, timeout=30) as http:
        r = http.get("/web/api/list", params={"path": "/"},
                     headers={"authorization": f"Bearer {admin_token(secured)}"})
        assert "keep" in [e["name"] for e in r.json()["entries"]]
