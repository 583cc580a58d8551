"""The mount used with real shell tools, the way people use it."""
from __future__ import annotations

import errno
import hashlib
import mmap
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import TEST_CHUNK_SIZE, needs_fuse

pytestmark = [needs_fuse, pytest.mark.mount]


def sh(cmd: str, cwd: Path | None = None, check: bool = True, user: str | None = None,
       timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = ["bash", "-c", cmd]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + argv
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while piece := f.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 4 << 20)
            f.write(os.urandom(n))
            left -= n


@pytest.mark.parametrize("size", [0, 1, 64 * 1024 + 1, TEST_CHUNK_SIZE * 3 + 17, 64 * 2**20 + 1])
def test_cp_in_and_out(mnt: Path, tmp_path: Path, size: int) -> None:
    src = tmp_path / "src"
    write_random(src, size)
    sh(f"cp {src} {mnt}/f && cp {mnt}/f {tmp_path}/back")
    assert (mnt / "f").stat().st_size == size
    assert sha(mnt / "f") == sha(src) == sha(tmp_path / "back")


def test_ls_stat_mkdir_rmdir_rm(mnt: Path) -> None:
    sh("mkdir -p a/b/c && touch a/b/c/f && echo hi > a/x", cwd=mnt)
    out = sh("ls -la a", cwd=mnt).stdout
    assert " b" in out and " x" in out and " ." in out and " .." in out
    assert sh("stat -c '%F %s' a/x", cwd=mnt).stdout.strip() == "regular file 3"
    assert sh("stat -c %F a/b", cwd=mnt).stdout.strip() == "directory"
    r = sh("rmdir a/b", cwd=mnt, check=False)
    assert r.returncode != 0 and "not empty" in r.stderr.lower()
    sh("rm a/b/c/f && rmdir a/b/c && rmdir a/b", cwd=mnt)
    sh("mkdir -p t/u/v && for i in $(seq 50); do echo $i > t/u/v/f$i; done && rm -rf t", cwd=mnt)
    assert not (mnt / "t").exists()
    assert sorted(os.listdir(mnt / "a")) == ["x"]


def test_mv_files_and_directories(mnt: Path) -> None:
    sh("echo one > a && echo two > b && mkdir d && echo in > d/f", cwd=mnt)
    ino_a = (mnt / "a").stat().st_ino
    sh("mv a b", cwd=mnt)  # atomic replace
    assert (mnt / "b").read_text() == "one\n" and not (mnt / "a").exists()
    assert (mnt / "b").stat().st_ino == ino_a
    sh("mkdir e && mv d e/ && mv e/d e/dd", cwd=mnt)
    assert (mnt / "e/dd/f").read_text() == "in\n"
    assert sh("mv e e/dd/x", cwd=mnt, check=False).returncode != 0


def test_symlinks_and_hard_links(mnt: Path) -> None:
    sh("echo data > f && ln -s f s && ln f h && ln -s /nowhere dangling", cwd=mnt)
    assert sh("readlink s", cwd=mnt).stdout.strip() == "f"
    assert (mnt / "s").read_text() == "data\n"
    st_f, st_h = (mnt / "f").stat(), (mnt / "h").stat()
    assert st_f.st_ino == st_h.st_ino and st_f.st_nlink == 2
    assert stat.S_ISLNK((mnt / "dangling").lstat().st_mode)
    sh("rm f", cwd=mnt)
    assert (mnt / "h").read_text() == "data\n" and (mnt / "h").stat().st_nlink == 1


def test_chmod_chown_touch(mnt: Path) -> None:
    sh("touch f && chmod 640 f && chown 1234:5678 f && touch -d '2001-02-03 04:05:06' f", cwd=mnt)
    st = (mnt / "f").stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert int(st.st_mtime) == int(sh("date -d '2001-02-03 04:05:06' +%s").stdout)


def test_truncate_and_sparse(mnt: Path) -> None:
    f = mnt / "t"
    f.write_bytes(b"x" * 1000)
    sh(f"truncate -s 10 {f}")
    assert f.read_bytes() == b"x" * 10
    sh(f"truncate -s 5000 {f}")
    assert f.read_bytes() == b"x" * 10 + b"\0" * 4990
    sh(f"dd if=/dev/urandom of={mnt}/sp bs=4096 count=1 seek=1000 status=none")
    data = (mnt / "sp").read_bytes()
    assert len(data) == 1001 * 4096 and data[:4096000] == b"\0" * 4096000
    big = mnt / "huge"
    sh(f"truncate -s 1T {big}")
    assert big.stat().st_size == 1 << 40
    with open(big, "rb") as fh:
        fh.seek((1 << 40) - 5)
        assert fh.read() == b"\0" * 5


def test_truncate_down_then_up_reads_zeros_across_chunks(mnt: Path) -> None:
    f = mnt / "z"
    f.write_bytes(b"y" * (TEST_CHUNK_SIZE * 2 + 100))
    sh(f"truncate -s {TEST_CHUNK_SIZE + 7} {f} && truncate -s {TEST_CHUNK_SIZE * 3} {f}")
    data = f.read_bytes()
    assert data[:TEST_CHUNK_SIZE + 7] == b"y" * (TEST_CHUNK_SIZE + 7)
    assert data[TEST_CHUNK_SIZE + 7:] == b"\0" * (TEST_CHUNK_SIZE * 2 - 7)


def test_append(mnt: Path) -> None:
    sh("echo a > log && echo b >> log && for i in 1 2 3; do echo $i >> log; done", cwd=mnt)
    assert (mnt / "log").read_text() == "a\nb\n1\n2\n3\n"


def test_tar_rsync_diff_find_du(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    for i in range(5):
        d = src / f"d{i}" / "sub"
        d.mkdir(parents=True)
        for j in range(6):
            (d / f"f{j}.txt").write_bytes(os.urandom(1000 * j + i))
    (src / "link").symlink_to("d0/sub/f1.txt")
    sh(f"tar -C {tmp_path} -cf {mnt}/t.tar tree && mkdir x && tar -C x -xf t.tar", cwd=mnt)
    sh(f"diff -r {src} {mnt}/x/tree")
    sh(f"tar -C {mnt}/x -cf {tmp_path}/back.tar tree && mkdir {tmp_path}/out "
       f"&& tar -C {tmp_path}/out -xf {tmp_path}/back.tar && diff -r {src} {tmp_path}/out/tree")
    sh(f"rsync -a {src}/ {mnt}/r/ && diff -r {src} {mnt}/r")
    assert sh(f"rsync -a --itemize-changes {src}/ {mnt}/r/").stdout.strip() == ""
    names = sh(f"find {mnt}/r -name 'f3.txt'").stdout.split()
    assert len(names) == 5
    du = int(sh(f"du -sk {mnt}/r").stdout.split()[0])
    assert du > 0


def test_df_shows_capacity(mnt: Path) -> None:
    out = sh(f"df -T -B1 {mnt}").stdout.splitlines()[-1].split()
    assert "gfsfs" in out[1]
    total, used, avail = int(out[2]), int(out[3]), int(out[4])
    local = os.statvfs(mnt.parent.parent)  # the disk all three chunkds share
    disk = local.f_blocks * local.f_frsize
    assert 0.99 * 3 * disk <= total <= 1.01 * 3 * disk   # summed from the chunkds
    assert avail > 0 and used >= 0 and used + avail <= total


def test_xattrs(mnt: Path) -> None:
    sh("touch f && setfattr -n user.color -v blue f && setfattr -n user.bin -v 0x00ff f", cwd=mnt)
    assert sh("getfattr --only-values -n user.color f", cwd=mnt).stdout == "blue"
    names = sh("getfattr -d f", cwd=mnt).stdout
    assert "user.color" in names and "user.bin" in names
    sh("setfattr -x user.color f", cwd=mnt)
    r = sh("getfattr -n user.color f", cwd=mnt, check=False)
    assert r.returncode != 0
    assert os.getxattr(mnt / "f", "user.bin") == b"\x00\xff"


def test_odd_names(mnt: Path) -> None:
    names = ["with space", "ünïcødé ✓", "a" * 255, "tab\tand\nnewline"]
    for n in names:
        (mnt / n).write_text(n)
    assert sorted(os.listdir(mnt)) == sorted(names)
    for n in names:
        assert (mnt / n).read_text() == n
    with pytest.raises(OSError) as e:
        (mnt / ("b" * 256)).write_text("x")
    assert e.value.errno == errno.ENAMETOOLONG


def test_mmap_read_write(mnt: Path) -> None:
    f = mnt / "m"
    f.write_bytes(b"\0" * 3 * 4096)
    with open(f, "r+b") as fh:
        mm = mmap.mmap(fh.fileno(), 0)
        mm[4096:4101] = b"hello"
        mm.flush()
        assert mm[4096:4101] == b"hello"
        mm.close()
    data = f.read_bytes()
    assert data[4096:4101] == b"hello" and len(data) == 3 * 4096


def test_sqlite(mnt: Path) -> None:
    db = sqlite3.connect(mnt / "db.sqlite")
    db.execute("create table t (k integer primary key, v text)")
    with db:
        db.executemany("insert into t (v) values (?)", [(f"row{i}" * 10,) for i in range(5000)])
    db.execute("create index tv on t (v)")
    db.commit()
    db.close()
    db = sqlite3.connect(mnt / "db.sqlite")
    assert db.execute("select count(*) from t").fetchone()[0] == 5000
    assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
    db.close()


def test_git(mnt: Path) -> None:
    sh("git init -q repo && cd repo && echo hello > README && mkdir src && echo 'print(1)' > src/a.py"
       " && git add . && git -c user.name=t -c user.email=t@t commit -qm first"
       " && echo more >> README && git -c user.name=t -c user.email=t@t commit -qam second",
       cwd=mnt)
    log = sh("git log --oneline", cwd=mnt / "repo").stdout.splitlines()
    assert len(log) == 2
    sh("git fsck --strict", cwd=mnt / "repo")
    assert sh("git status --porcelain", cwd=mnt / "repo").stdout == ""


def test_posix_errors(mnt: Path) -> None:
    cases = [
        (lambda: os.stat(mnt / "missing"), errno.ENOENT),
        (lambda: os.mkdir(mnt), errno.EEXIST),
        (lambda: os.rmdir(mnt / "full"), errno.ENOTEMPTY),
        (lambda: os.unlink(mnt / "full"), errno.EISDIR),
        (lambda: open(mnt / "full", "w"), errno.EISDIR),
        (lambda: os.mkdir(mnt / "file" / "x"), errno.ENOTDIR),
        (lambda: os.rename(mnt / "file", mnt / "full"), errno.EISDIR),
        (lambda: os.rename(mnt / "full", mnt / "file"), errno.ENOTDIR),
        (lambda: os.mkdir(mnt / ("n" * 256)), errno.ENAMETOOLONG),
    ]
    (mnt / "full").mkdir()
    (mnt / "full" / "x").write_text("x")
    (mnt / "file").write_text("f")
    for fn, want in cases:
        with pytest.raises(OSError) as e:
            fn()
        assert e.value.errno == want, (fn, e.value)


def test_permissions_for_a_non_root_user(mnt: Path) -> None:
    sh("mkdir -m 755 locked && echo secret > locked/f && chmod 600 locked/f && mkdir -m 777 open",
       cwd=mnt)
    r = sh(f"cat {mnt}/locked/f", user="65534", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = sh(f"touch {mnt}/locked/new", user="65534", check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = sh(f"chmod 777 {mnt}/locked/f", user="65534", check=False)
    assert r.returncode != 0 and "not permitted" in r.stderr
    sh(f"echo mine > {mnt}/open/n", user="65534")
    st = (mnt / "open" / "n").stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_open_file_survives_unlink(mnt: Path) -> None:
    path = mnt / "tmpfile"
    with open(path, "w+b") as f:
        f.write(b"before")
        f.flush()
        os.unlink(path)
        assert not path.exists()
        f.write(b" after unlink")
        f.flush()
        os.fsync(f.fileno())
        f.seek(0)
        assert f.read() == b"before after unlink"
        assert os.fstat(f.fileno()).st_nlink == 0


@pytest.mark.slow
def test_cp_one_gib(mnt: Path, tmp_path: Path) -> None:
    src = tmp_path / "big"
    write_random(src, 1 << 30)
    sh(f"cp {src} {mnt}/big && cp {mnt}/big {tmp_path}/back")
    assert sha(src) == sha(mnt / "big") == sha(tmp_path / "back")
    (mnt / "big").unlink()


def test_rewrite_shorter_truncates(mnt: Path) -> None:
    (mnt / "r").write_bytes(b"x" * 100)
    sh("echo short > r", cwd=mnt)                  # open(O_TRUNC)
    assert (mnt / "r").read_bytes() == b"short\n"
    assert (mnt / "r").stat().st_size == 6
