"""The ``gfs`` admin CLI against real processes, plus the master RPCs behind it
(setgoal, fileinfo, cluster_status) in process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse
from gfsfs.tools.cli import fs_path
from gfsfs.tools.localcluster import ROOT, Cluster
from master.core import Master
from test_master_http import Harness, run


def gfs(*args: str, master: str | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gfsfs.tools.cli"]
    if master is not None:
        argv += ["--master", master]
    full_env = {k: v for k, v in os.environ.items() if k != "GFS_MASTER"}
    full_env.update(env or {})
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=60,
                          cwd=cwd or ROOT, env=full_env)


def gfs_json(cluster: Cluster, *args: str) -> Any:
    env = {"GFS_SECRET_FILE": str(cluster.secret_file)} if cluster.secret_file else None
    r = gfs(*args, "--json", master=cluster.url, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def rpc(url: str, rpc_name: str, /, **body: Any) -> Any:
    r = httpx.post(f"{url}/rpc/{rpc_name}", content=msgpack.packb(body, use_bin_type=True))
    reply = msgpack.unpackb(r.content, raw=False, strict_map_key=False)
    assert r.status_code == 200, reply
    return reply


def make_tree(url: str) -> dict[str, int]:
    """/a, /a/b, /a/f, /a/b/g, /other through RPCs (no mount needed)."""
    a = rpc(url, "mkdir", parent=1, name=b"a", mode=0o755, uid=0, gid=0)["ino"]
    b = rpc(url, "mkdir", parent=a, name=b"b", mode=0o755, uid=0, gid=0)["ino"]
    f = rpc(url, "create", parent=a, name=b"f", mode=0o644, uid=0, gid=0)["ino"]
    g = rpc(url, "create", parent=b, name=b"g", mode=0o644, uid=0, gid=0)["ino"]
    o = rpc(url, "create", parent=1, name=b"other", mode=0o644, uid=0, gid=0)["ino"]
    return {"/a": a, "/a/b": b, "/a/f": f, "/a/b/g": g, "/other": o}


# ---------------------------------------------------------------- real processes

@needs_fuse
def test_fileinfo_ls_status_on_a_mount(cluster: Cluster, mounted: Path) -> None:
    data = os.urandom(TEST_CHUNK_SIZE * 5 // 2)          # 2.5 chunks
    (mounted / "d" / "sub").mkdir(parents=True)
    (mounted / "d" / "f").write_bytes(data)
    (mounted / "d" / "sub" / "g").write_bytes(b"small")
    os.symlink("sub", mounted / "d" / "ln")
    ids = {f"chunk{i}" for i in (1, 2, 3)}

    # a path under the local mount point and the same path inside the fs
    for path in (str(mounted / "d" / "f"), "/d/f"):
        info = gfs_json(cluster, "fileinfo", path)
        assert info["path"] == "/d/f"
        assert info["attr"]["size"] == len(data) and info["attr"]["goal"] == 3
        assert [c["index"] for c in info["chunks"]] == [0, 1, 2]
        assert len({c["handle"] for c in info["chunks"]}) == 3
        for c in info["chunks"]:
            assert c["version"] >= 1
            assert {r["id"] for r in c["replicas"]} == ids
            assert all(r["addr"].startswith("http://127.0.0.1:") for r in c["replicas"])
            if c["primary"] is not None:
                assert c["primary"]["id"] in ids and c["lease_expires_ns"] > 0
        assert info["min_replicas"] == 3 and info["under_goal"] == 0 and info["lost"] == 0
    # relative to a working directory inside the mount
    r = gfs("fileinfo", "f", master=cluster.url, cwd=mounted / "d")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("/d/f: file")
    assert "chunk 2:" in r.stdout and r.stdout.count("copy 3:") == 3
    assert fs_path(str(mounted)) == "/"

    listing = gfs_json(cluster, "ls", "-l", str(mounted / "d"))
    rows = {e["name"]: e for e in listing["entries"]}
    assert sorted(rows) == ["f", "ln", "sub"]
    assert rows["f"]["goal"] == 3 and rows["f"]["min_replicas"] == 3
    assert rows["f"]["chunk_count"] == 3 and rows["f"]["size"] == len(data)
    assert rows["sub"]["type"] == "dir" and rows["ln"]["target"] == "sub"
    r = gfs("ls", "-l", "/d", master=cluster.url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["MODE", "LINKS", "UID", "GID", "SIZE", "GOAL", "LIVE",
                                "CHUNKS", "MODIFIED", "NAME"]
    fline = next(line for line in lines if line.endswith(" f"))
    assert fline.split()[4:8] == [str(len(data)), "3", "3", "3"]
    goal_end = lines[0].index("GOAL") + len("GOAL")     # numbers are right-aligned
    assert all(line[goal_end - 1] == "3" and line[goal_end] == " " for line in lines[1:])
    # a symlink followed with a trailing slash, and plain ls names
    assert gfs("ls", "/d/ln/", master=cluster.url).stdout.split() == ["g"]
    assert gfs("ls", "/d", master=cluster.url).stdout.split() == ["f", "ln", "sub"]

    st = gfs_json(cluster, "status")
    assert st["chunkds_alive"] == 3 and st["chunkds_dead"] == 0
    assert st["files"] == 2 and st["chunks"] == 4
    assert st["under_goal"] == 0 and st["lost"] == 0
    assert st["total_bytes"] > 0 and len(st["servers"]) == 3
    text = gfs("status", master=cluster.url).stdout
    assert "3 live, 0 dead" in text and "under goal" in text

    # a goal above the number of chunkds: every chunk of the file is under its goal
    r = gfs("setgoal", "5", str(mounted / "d" / "f"), master=cluster.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "/d/f: goal 5 (1 changed)"
    st = gfs_json(cluster, "status")
    assert st["under_goal"] == 3 and st["lost"] == 0
    assert gfs_json(cluster, "fileinfo", "/d/f")["under_goal"] == 3
    assert "UNDER GOAL (3/5)" in gfs("fileinfo", "/d/f", master=cluster.url).stdout

    # missing paths: exit 1, the path and errno on stderr
    for path in ("/d/nope", str(mounted / "d" / "nope")):
        r = gfs("fileinfo", path, master=cluster.url)
        assert r.returncode == 1 and r.stdout == ""
        assert "/d/nope" in r.stderr and "ENOENT" in r.stderr
    r = gfs("ls", "/d/f/x", master=cluster.url)
    assert r.returncode == 1 and "ENOTDIR" in r.stderr


def test_setgoal_recursive_survives_master_restart(cluster: Cluster) -> None:
    inos = make_tree(cluster.url)
    r = gfs("setgoal", "-r", "2", "/a", master=cluster.url)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "/a: goal 2 (4 inodes, 4 changed)"
    reply = gfs_json(cluster, "setgoal", "-r", "2", "/a")
    assert reply["changed"] == 0 and reply["inodes"] == 4

    def goals() -> dict[str, int]:
        return {path: gfs_json(cluster, "fileinfo", path)["attr"]["goal"] for path in inos}

    want = {"/a": 2, "/a/b": 2, "/a/f": 2, "/a/b/g": 2, "/other": 3}
    assert goals() == want
    rows = {e["name"]: e["goal"] for e in gfs_json(cluster, "ls", "-l", "/a")["entries"]}
    assert rows == {"b": 2, "f": 2}
    # non-recursive: only the one inode
    assert gfs("setgoal", "1", "/a/b", master=cluster.url).returncode == 0
    want["/a/b"] = 1
    assert goals() == want
    # a new file takes its directory's goal
    rpc(cluster.url, "create", parent=inos["/a/b"], name=b"h", mode=0o644, uid=0, gid=0)
    assert gfs_json(cluster, "fileinfo", "/a/b/h")["attr"]["goal"] == 1

    cluster.restart_master(kill=True)           # replayed from the op log
    assert goals() == want
    assert gfs_json(cluster, "fileinfo", "/a/b/h")["attr"]["goal"] == 1
    assert gfs_json(cluster, "checkpoint")["seq"] > 0
    cluster.restart_master(kill=False)          # from the checkpoint
    assert goals() == want
    dump = gfs_json(cluster, "dump-metadata")
    by_ino = {i["ino"]: i for i in dump["inodes"]}
    assert by_ino[inos["/a/f"]]["goal"] == 2 and by_ino[inos["/other"]]["goal"] == 3
    assert by_ino[1]["entries"]["a"] == inos["/a"]


def test_chunkd_list_df_checkpoint_and_errors(cluster: Cluster, tmp_path: Path) -> None:
    servers = gfs_json(cluster, "chunkd", "list")["servers"]
    assert [s["id"] for s in servers] == ["chunk1", "chunk2", "chunk3"]
    assert all(s["alive"] and s["capacity_bytes"] > 0 for s in servers)
    assert all(s["last_heartbeat_age"] < 5 for s in servers)
    text = gfs("chunkd", "list", master=cluster.url).stdout.splitlines()
    assert text[0].split()[:4] == ["ID", "ADDR", "RACK", "STATE"]
    assert len(text) == 4 and all(" alive " in line for line in text[1:])
    # columns line up: every row's ADDR starts where the header's does
    col = text[0].index("ADDR")
    assert all(line[col:col + 7] == "http://" for line in text[1:])

    df = gfs_json(cluster, "df")
    assert df["chunkds"] == 3 and df["total_bytes"] == sum(s["capacity_bytes"]
                                                            for s in df["servers"])
    assert gfs("df", master=cluster.url).stdout.splitlines()[-1].startswith("total (3 live)")

    seq = gfs_json(cluster, "checkpoint")["seq"]
    assert gfs("checkpoint", master=cluster.url).stdout.startswith("checkpoint written at")
    assert gfs_json(cluster, "status")["checkpoint_seq"] >= seq
    dump = json.loads(gfs("dump-metadata", "--json", master=cluster.url).stdout)
    assert dump["chunk_size"] == TEST_CHUNK_SIZE

    # the master from $GFS_MASTER, and --master after the subcommand
    r = gfs("status", "--json", env={"GFS_MASTER": cluster.url})
    assert r.returncode == 0 and json.loads(r.stdout)["chunkds_alive"] == 3
    r = gfs("status", "--master", cluster.url, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["chunkds_alive"] == 3
    # ... and from the config file's [client] master_url
    conf = tmp_path / "c.toml"
    conf.write_text(f'[client]\nmaster_url = "{cluster.url}"\n')
    r = gfs("--config", str(conf), "df", env={"GFS_MASTER": ""})
    assert r.returncode == 0, r.stderr

    # failures: 1; usage errors: 2
    r = gfs("fileinfo", "/missing", master=cluster.url)
    assert r.returncode == 1 and "/missing" in r.stderr and "ENOENT" in r.stderr
    r = gfs("setgoal", "-r", "2", "/missing", master=cluster.url)
    assert r.returncode == 1 and "/missing" in r.stderr
    r = gfs("status", "--set", "client.failover_timeout=1", master="http://127.0.0.1:1")
    assert r.returncode == 1 and "cannot reach the master" in r.stderr
    for args in ([], ["setgoal", "0", "/"], ["setgoal", "x", "/"], ["frobnicate"],
                 ["fileinfo"], ["chunkd", "remove"], ["--set", "nope.x=1", "status"]):
        r = gfs(*args, master=cluster.url)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr


# ---------------------------------------------------------------- in process

def test_setgoal_rpc_validation_perms_and_replay(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        d = await h.call("mkdir", parent=1, name=b"d", mode=0o755, uid=7, gid=7)
        f = await h.call("create", parent=d["ino"], name=b"f", mode=0o644, uid=8, gid=8)
        await h.fails("EINVAL", "setgoal", ino=d["ino"], goal=0)
        await h.fails("EINVAL", "setgoal", ino=d["ino"], goal=17)
        await h.fails("BADREQ", "setgoal", ino=d["ino"])
        await h.fails("BADREQ", "setgoal", ino=d["ino"], goal=2, recursive=1)
        await h.fails("ENOENT", "setgoal", ino=999, goal=2)
        owner = {"uid": 7, "gid": 7, "gids": []}
        await h.fails("EPERM", "setgoal", ino=f["ino"], goal=2, ctx=owner)
        await h.fails("EPERM", "setgoal", ino=d["ino"], goal=2, recursive=True, ctx=owner)
        reply = await h.call("setgoal", ino=d["ino"], goal=2, ctx=owner)
        assert reply == {"ino": d["ino"], "goal": 2, "inodes": 1, "changed": 1}
        reply = await h.call("setgoal", ino=d["ino"], goal=4, recursive=True)
        assert reply["inodes"] == 2 and reply["changed"] == 2
        assert (await h.call("getattr", ino=f["ino"]))["goal"] == 4
        info = await h.call("fileinfo", ino=d["ino"])
        assert info["attr"]["goal"] == 4 and info["chunks"] == []
        # replay from the op log rebuilds the goals
        h.master.close()
        again = Master.open(h.cfg, h.chunkds, clock=h.clock)
        assert again.ns.get(f["ino"]).goal == 4 and again.ns.get(d["ino"]).goal == 4
        h.master = again     # closed by the harness

    run(tmp_path, body)


def test_fileinfo_and_cluster_status_counts(tmp_path: Path) -> None:
    async def body(h: Harness) -> None:
        for cid in ("c1", "c2", "c3"):
            await h.register(cid, rack=cid)
        f = await h.call("create", parent=1, name=b"f", mode=0o644, uid=0, gid=0)
        lease = await h.call("lease", ino=f["ino"], index=1)
        info = await h.call("fileinfo", ino=f["ino"])
        (chunk,) = info["chunks"]
        assert chunk["index"] == 1 and chunk["handle"] == lease["handle"]
        assert chunk["version"] == lease["version"] and chunk["refcount"] == 1
        assert {r["id"] for r in chunk["replicas"]} == {"c1", "c2", "c3"}
        assert chunk["primary"] == lease["primary"]
        assert chunk["lease_expires_ns"] == lease["expires_ns"]
        st = await h.call("cluster_status")
        assert (st["chunks"], st["under_goal"], st["lost"], st["files"]) == (1, 0, 0, 1)
        assert (st["chunkds_alive"], st["chunkds_dead"]) == (3, 0)
        assert {s["id"]: s["rack"] for s in st["servers"]} == {"c1": "c1", "c2": "c2",
                                                             "c3": "c3"}
        # c1 and c2 die: under goal; then c3 too: lost
        h.clock.t += 100
        await h.heartbeat("c3")
        h.master.registry.check_liveness()
        st = await h.call("cluster_status")
        assert (st["chunkds_alive"], st["chunkds_dead"]) == (1, 2)
        assert (st["under_goal"], st["lost"]) == (1, 0)
        assert [r["id"] for r in (await h.call("fileinfo", ino=f["ino"]))["chunks"][0]
                ["replicas"]] == ["c3"]
        h.clock.t += 100
        h.master.registry.check_liveness()
        st = await h.call("cluster_status")
        assert (st["under_goal"], st["lost"], st["chunkds_alive"]) == (1, 1, 0)
        # an unlinked file waits in trash: not counted among files, still inspectable
        assert not (await h.call("fileinfo", ino=f["ino"]))["in_trash"]
        await h.call("unlink", parent=1, name=b"f")
        st = await h.call("cluster_status")
        assert (st["files"], st["trash_files"], st["chunks"]) == (0, 1, 1)
        assert (await h.call("fileinfo", ino=f["ino"]))["in_trash"]

    run(tmp_path, body)


def test_fs_path_translation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mounts = ["/mnt/gfs x", "/mnt/gfs"]
    assert fs_path("/mnt/gfs/a/b", mounts) == "/a/b"
    assert fs_path("/mnt/gfs x/a", mounts) == "/a"
    assert fs_path("/mnt/gfs", mounts) == "/"
    assert fs_path("/mnt/gfsy/a", mounts) == "/mnt/gfsy/a"
    assert fs_path("/a//b/./c/../d", mounts) == "/a/b/d"
    real = os.path.realpath(tmp_path)
    monkeypatch.chdir(real)
    assert fs_path("a/b", mounts) == "/a/b"
    assert fs_path("a/b", [real]) == "/a/b"
    assert fs_path(".", [real]) == "/"
    # a local symlink leading to a mount point
    os.mkdir(os.path.join(real, "m"))
    os.symlink(os.path.join(real, "m"), os.path.join(real, "link"))
    assert fs_path(os.path.join(real, "link", "x"), [os.path.join(real, "m")]) == "/x"
