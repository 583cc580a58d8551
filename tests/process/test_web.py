"""The master's web page (master/api/web.py), end to end.

- in real headless Chromium (Debian's ``chromium`` + ``chromium-driver``,
  installed with apt-get if missing) driven by Selenium, against a real cluster
  and a mount of it: upload through the page's file input, read the bytes back
  through the mount and through the page's download link, mkdir and delete on
  the page, kill -9 a chunkd and watch the page show it dead;
- the JSON API's errors over plain HTTP (the master keeps serving);
- :class:`master.api.web.Traffic` on its own.

The browser test saves a screenshot under its tmp dir; it refreshes
docs/web.png when that is missing or GFSFS_UPDATE_SCREENSHOT=1.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gfsfs.tools.localcluster import Cluster
from master.api.web import Traffic

from conftest import needs_fuse

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MIB = 1 << 20
WEB = {"X-GFS-Web": "1"}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _ensure_chromium() -> str | None:
    """Install Debian's chromium + chromium-driver if missing; the reason to
    skip when that is impossible, else None."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return None
    if shutil.which("apt-get") is None:
        return "no /usr/bin/chromium and no apt-get to install it"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
        try:
            res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{' '.join(argv)} failed: {exc}"
        if res.returncode != 0:
            return (f"{' '.join(argv)} exited {res.returncode}: "
                    f"{(res.stderr or res.stdout).strip()[-500:]}")
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return "apt-get installed chromium, but /usr/bin/chromium or /usr/bin/chromedriver is missing"
    return None


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """Headless Chromium through /usr/bin/chromedriver (never selenium-manager)."""
    reason = _ensure_chromium()
    if reason is not None:
        pytest.skip(reason)
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")       # no driver/browser downloads, ever
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1400,1000",
                f"--user-data-dir={tmp_path / 'chrome-profile'}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "safebrowsing.enabled": False})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    driver.downloads = downloads          # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()                      # stops the chromedriver it started (and Chromium)


def _wait(driver: object, cond: object, timeout: float = 30.0, what: str = "") -> object:
    """Wait for ``cond(driver)``; the page redraws its tables every 2 s, so an
    element going stale under a condition just means: look again."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, timeout, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,
                                             NoSuchElementException)).until(cond, message=what)


def _act(driver: object, action: object, what: str) -> object:
    """Run ``action(driver)`` (find an element and use it), again if the element
    went stale between finding and using it."""
    def attempt(drv: object) -> object:
        return action(drv) or True                 # type: ignore[operator]
    return _wait(driver, attempt, 10, what)


def _poll(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():                         # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s: {what}")


@pytest.mark.mount
@pytest.mark.slow
@needs_fuse
def test_web_page_end_to_end(cluster: Cluster, mounted: Path, browser: object,
                             tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    d = browser
    url = cluster.url
    d.get(url + "/")                                                     # type: ignore[attr-defined]

    def server_states(drv: object) -> dict[str, str]:
        rows = drv.find_elements(By.CSS_SELECTOR, "#servers tr[data-chunkd]")  # type: ignore[attr-defined]
        return {r.get_attribute("data-chunkd"): r.find_element(By.CSS_SELECTOR, "td.state").text
                for r in rows}

    _wait(d, lambda drv: server_states(drv) == {"chunk1": "alive", "chunk2": "alive",
                                                "chunk3": "alive"},
          what="three live chunk servers on the page")
    ha = d.find_element(By.CSS_SELECTOR, '#summary [data-ha="primary"]')  # type: ignore[attr-defined]
    assert "primary, epoch 0; no shadow" in ha.text

    # ---- upload two files at once through the file input
    big = tmp_path / "big upload.bin"          # a space: the name must survive URLs
    big_data = os.urandom(4 * MIB + 4321)      # 5 chunks of 1 MiB
    big.write_bytes(big_data)
    scratch = tmp_path / "scratch.txt"
    scratch.write_bytes(b"to be deleted\n")
    d.find_element(By.ID, "upload-input").send_keys(f"{big}\n{scratch}")  # type: ignore[attr-defined]

    def row(drv: object, name: str) -> object | None:
        found = drv.find_elements(By.CSS_SELECTOR, f'#listing tr[data-name="{name}"]')  # type: ignore[attr-defined]
        return found[0] if found else None

    def uploaded(drv: object) -> bool:
        status = drv.find_element(By.ID, "upload-status")  # type: ignore[attr-defined]
        return (status.get_attribute("data-state") == "done" and "scratch.txt" in status.text
                and row(drv, big.name) is not None and row(drv, scratch.name) is not None)

    _wait(d, uploaded, 90, "both uploads finished and listed")
    _wait(d, lambda drv: "healthy" in row(drv, big.name).text, 10,  # type: ignore[union-attr]
          "the big file listed as healthy")

    # the same bytes through the mount
    _poll(lambda: (mounted / big.name).exists(), 10, "the upload visible in the mount")
    assert sha256((mounted / big.name).read_bytes()) == sha256(big_data)
    assert (mounted / scratch.name).read_bytes() == b"to be deleted\n"
    assert not [p for p in os.listdir(mounted) if p.startswith(".gfs-upload-")]

    # ... and back through the page's download link: httpx, then the browser itself
    href = _act(d, lambda drv: row(drv, big.name).find_element(  # type: ignore[union-attr]
        By.CSS_SELECTOR, "a.download").get_attribute("href"), "the download link")
    with httpx.stream("GET", href, timeout=60) as resp:
        assert resp.status_code == 200
        assert int(resp.headers["content-length"]) == len(big_data)
        h = hashlib.sha256()
        for piece in resp.iter_bytes():
            h.update(piece)
    assert h.hexdigest() == sha256(big_data)
    _act(d, lambda drv: row(drv, big.name).find_element(  # type: ignore[union-attr]
        By.CSS_SELECTOR, "a.download").click(), "click the download link")
    target = d.downloads / big.name                                     # type: ignore[attr-defined]
    _poll(lambda: target.exists() and target.stat().st_size == len(big_data), 30,
          "the browser's download finished")
    assert sha256(target.read_bytes()) == sha256(big_data)

    # the file's chunks and replicas
    _act(d, lambda drv: row(drv, big.name).find_element(  # type: ignore[union-attr]
        By.CSS_SELECTOR, "button.info").click(), "click info")
    _wait(d, lambda drv: drv.find_element(By.ID, "fileinfo").is_displayed()  # type: ignore[attr-defined]
          and len(drv.find_elements(By.CSS_SELECTOR, "#fileinfo tbody tr")) == 5, 10,  # type: ignore[attr-defined]
          "five chunks in the file's info")
    assert "chunk1" in d.find_element(By.ID, "fileinfo").text           # type: ignore[attr-defined]

    # ---- mkdir through the page, visit it, come back
    d.find_element(By.ID, "mkdir-name").send_keys("reports")            # type: ignore[attr-defined]
    d.find_element(By.ID, "mkdir-btn").click()                          # type: ignore[attr-defined]
    _wait(d, lambda drv: row(drv, "reports") is not None, 10, "the new directory listed")
    assert _act(d, lambda drv: row(drv, "reports").get_attribute("data-type"),  # type: ignore[union-attr]
                "the directory's type") == "dir"
    _poll(lambda: (mounted / "reports").is_dir(), 10, "the directory visible in the mount")
    _act(d, lambda drv: row(drv, "reports").find_element(  # type: ignore[union-attr]
        By.CSS_SELECTOR, "a.dir").click(), "open the directory")
    _wait(d, lambda drv: "empty directory" in drv.find_element(By.ID, "listing").text  # type: ignore[attr-defined]
          and "reports" in drv.find_element(By.ID, "crumbs").text, 10, "inside /reports")
    assert d.current_url.endswith("#/reports")                          # type: ignore[attr-defined]
    _act(d, lambda drv: drv.find_element(By.CSS_SELECTOR, "#crumbs a").click(),  # type: ignore[attr-defined]
         "back to the root")
    _wait(d, lambda drv: row(drv, big.name) is not None, 10, "back at the root")

    # ---- delete through the page (a confirm() dialog)
    _act(d, lambda drv: row(drv, scratch.name).find_element(  # type: ignore[union-attr]
        By.CSS_SELECTOR, "button.delete").click(), "click delete")
    _wait(d, lambda drv: drv.switch_to.alert, 5, "the confirm dialog").accept()  # type: ignore[attr-defined]
    _wait(d, lambda drv: row(drv, scratch.name) is None, 10, "the deleted file gone from the page")
    _poll(lambda: not (mounted / scratch.name).exists(), 10, "the deleted file gone from the mount")
    _wait(d, lambda drv: "/scratch.txt" in drv.find_element(By.ID, "trash").text, 10,  # type: ignore[attr-defined]
          "the deleted file shown in the trash")

    # ---- kill -9 a chunkd: dead on the page within the heartbeat timeout (+ one poll)
    cluster.servers[2].kill()
    killed = time.monotonic()
    timeout = 0.5 * 3                     # heartbeat_interval x dead_after_heartbeats
    _wait(d, lambda drv: server_states(drv).get("chunk3") == "dead", timeout + 2 + 3,
          "chunk3 shown dead")
    seen_after = time.monotonic() - killed
    assert seen_after < timeout + 2 + 3, seen_after
    assert _act(d, server_states, "server states") == {"chunk1": "alive", "chunk2": "alive",
                                                       "chunk3": "dead"}
    _wait(d, lambda drv: "under goal" in row(drv, big.name).text, 10,  # type: ignore[union-attr]
          "the big file shown under-replicated")
    _wait(d, lambda drv: "1 dead" in drv.find_element(By.ID, "summary").text, 5)  # type: ignore[attr-defined]

    # ---- a screenshot of the whole page
    d.execute_script("document.getElementById('toast').hidden = true")  # type: ignore[attr-defined]
    height = d.execute_script("return document.documentElement.scrollHeight")  # type: ignore[attr-defined]
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {         # type: ignore[attr-defined]
        "width": 1400, "height": max(900, int(height)), "deviceScaleFactor": 1, "mobile": False})
    time.sleep(0.5)
    shot = tmp_path / "web.png"
    assert d.save_screenshot(str(shot))                                 # type: ignore[attr-defined]
    assert shot.stat().st_size > 10_000
    docs_png = ROOT / "docs" / "web.png"
    if not docs_png.exists() or os.environ.get("GFSFS_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(shot, docs_png)
    print(f"screenshot: {shot}")


def test_web_api_errors(cluster: Cluster) -> None:
    """Bad paths and requests get JSON errors with 4xx codes; the master lives on."""
    url = cluster.url
    with httpx.Client(base_url=url, timeout=30) as http:
        def err(resp: httpx.Response) -> tuple[int, str]:
            assert resp.headers["content-type"] == "application/json", resp.text
            return resp.status_code, resp.json()["error"]["code"]

        assert err(http.get("/web/api/list", params={"path": "/nope"})) == (404, "ENOENT")
        assert err(http.get("/web/api/list", params={"path": "relative"})) == (400, "EINVAL")
        assert err(http.get("/web/api/list", params={"path": "/a/../b"})) == (400, "EINVAL")
        assert err(http.get("/web/api/list", params={"path": "/" + "x" * 300})) == \
            (400, "ENAMETOOLONG")
        assert err(http.get("/web/api/file", params={})) == (400, "BADREQ")
        assert err(http.get("/web/download", params={"path": "/"})) == (409, "EISDIR")
        assert err(http.get("/web/download", params={"path": "/missing"})) == (404, "ENOENT")
        assert err(http.get("/web/static/nope.js")) == (404, "ENOENT")
        assert err(http.get("/web/nothing/here")) == (404, "NOROUTE")
        assert err(http.get("/web/static/..%2Fweb.py")) == (404, "ENOENT")
        # changes need the page's header
        assert err(http.post("/web/api/mkdir", params={"path": "/d"})) == (403, "EPERM")
        assert err(http.put("/web/upload", params={"path": "/f"}, content=b"x")) == \
            (403, "EPERM")
        assert http.post("/web/api/mkdir", params={"path": "/d"}, headers=WEB).status_code == 201
        assert err(http.post("/web/api/mkdir", params={"path": "/d"}, headers=WEB)) == \
            (409, "EEXIST")
        assert err(http.post("/web/api/mkdir", params={"path": "/no/such/d"}, headers=WEB)) \
            == (404, "ENOENT")
        assert err(http.put("/web/upload", params={"path": "/d"}, content=b"x", headers=WEB)) \
            == (409, "EISDIR")
        assert err(http.post("/web/api/delete", params={"path": "/"}, headers=WEB)) == \
            (400, "EINVAL")
        assert http.put("/web/upload", params={"path": "/d/f"}, content=b"abc",
                        headers=WEB).status_code == 201
        assert err(http.post("/web/api/delete", params={"path": "/d"}, headers=WEB)) == \
            (409, "ENOTEMPTY")
        assert err(http.put("/web/upload", params={"path": "/d/f"}, content=b"new",
                            headers=WEB)) == (409, "EEXIST")
        r = http.put("/web/upload", params={"path": "/d/f", "overwrite": "1"},
                     content=b"new!", headers=WEB)
        assert r.status_code == 201 and r.json()["size"] == 4
        assert http.get("/web/download", params={"path": "/d/f"}).content == b"new!"

        # an upload whose sender goes away mid-body leaves no file behind
        def body() -> Iterator[bytes]:
            yield os.urandom(MIB)
            raise RuntimeError("sender gives up")

        with pytest.raises(Exception):
            http.put("/web/upload", params={"path": "/d/partial"}, content=body(), headers={
                **WEB, "content-length": str(8 * MIB)})
        _poll(lambda: [e["name"] for e in http.get("/web/api/list", params={"path": "/d"})
                       .json()["entries"]] == ["f"], 15, "no partial upload left")

        # the page and the rest of the master still answer
        assert http.get("/").status_code == 200
        assert "gfsfs" in http.get("/").text
        assert http.get("/status").status_code == 200
        cluster_info = http.get("/web/api/cluster").json()
        assert cluster_info["status"]["chunkds_alive"] == 3
        assert cluster_info["traffic"]["total_requests"] > 10
        assert cluster_info["trash"]["count"] >= 1       # the replaced /d/f


def test_traffic_rates() -> None:
    now = [100.0]
    t = Traffic(window=60, clock=lambda: now[0])
    for _ in range(20):
        t.observe("/rpc/lookup", 200, 0.001)
    t.observe("/web/upload", 503, 0.5)
    t.add_in(10_000)
    t.add_out(5_000)
    now[0] = 101.0
    snap = t.snapshot(span=10)
    assert snap["requests_per_sec"] == 2.1
    assert snap["errors_per_sec"] == 0.1
    assert snap["bytes_in_per_sec"] == 1000 and snap["bytes_out_per_sec"] == 500
    assert snap["top_routes"][0] == ["/rpc/lookup", 2.0]
    assert len(snap["history"]) == 60 and snap["history"][-1] == [21, 10_000, 5_000]
    now[0] = 200.0                          # a quiet minute later
    assert t.snapshot()["requests_per_sec"] == 0
