"""gfsfs mounted the way any file system is: mount(8) and umount(8) with
``-t fuse.gfsfs``, and an fstab line (``mount --fstab FILE``, so the real
/etc/fstab is never touched), through the /sbin/mount.fuse.gfsfs helper."""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gfsfs.tools.localcluster import Cluster, is_mounted, unmount
from gfsfs.tools.mount_helper import parse, translate

from conftest import needs_fuse

SBIN_HELPER = Path("/sbin/mount.fuse.gfsfs")
VENV_HELPER = Path(sys.executable).parent / "mount.fuse.gfsfs"


# ---------------------------------------------------------------- option translation

def test_translate_drops_mount8_options_and_keeps_ours() -> None:
    pos, opts, flags = parse(["http://m:5000", "/mnt/x", "-n", "-o",
                              "rw,defaults,_netdev,noauto,nofail,x-systemd.automount,"
                              "x-systemd.mount-timeout=30,user,comment=foo,ro,allow_other,"
                              "debug,attr_timeout=2,entry_timeout=3,noatime",
                              "-t", "fuse.gfsfs"])
    assert pos == ["http://m:5000", "/mnt/x"] and flags == {"n"}
    argv = translate(pos[0], pos[1], opts + ["log_dir=/tmp/gl"])
    assert argv[:4] == ["http://m:5000", "/mnt/x", "-o",
                        "ro,allow_other,debug,attr_timeout=2,entry_timeout=3,noatime,"
                        "fsname=http://m:5000"]
    assert argv[4:] == ["--set", 'client.log_dir="/tmp/gl"'] or "--config" in argv


def test_translate_config_option() -> None:
    argv = translate("http://m:5000", "/mnt/x", ["defaults", "config=/etc/g.toml"])
    assert argv == ["http://m:5000", "/mnt/x", "-o", "fsname=http://m:5000",
                    "--config", "/etc/g.toml"]


def test_translate_escapes_the_commas_of_several_masters() -> None:
    from gfsfs.fuse.mount import split_options
    argv = translate("http://a:1,http://b:2", "/mnt/x", ["ro", "config=/etc/g.toml"])
    assert argv[:4] == ["http://a:1,http://b:2", "/mnt/x", "-o", "ro,fsname=http://a:1\\,http://b:2"]
    assert split_options([argv[3]]) == {"ro": None, "fsname": "http://a:1\\,http://b:2"}


def test_parse_joined_forms() -> None:
    pos, opts, flags = parse(["-sv", "src", "dir", "-oro,debug", "-tfuse.gfsfs"])
    assert pos == ["src", "dir"] and opts == ["ro", "debug"] and flags == {"s", "v"}


# ---------------------------------------------------------------- real mounts

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mount(8) of FUSE needs root here")


@pytest.fixture
def helper() -> Iterator[Path]:
    """/sbin/mount.fuse.gfsfs, installed for the test if missing (and then removed)."""
    if not VENV_HELPER.exists():
        pytest.skip(f"{VENV_HELPER} missing: pip install -e . first")
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount(8)")
    ours = False
    if not SBIN_HELPER.exists() and not SBIN_HELPER.is_symlink():
        SBIN_HELPER.symlink_to(VENV_HELPER)
        ours = True
    elif SBIN_HELPER.resolve() != VENV_HELPER.resolve():
        pytest.skip(f"{SBIN_HELPER} is installed from elsewhere ({SBIN_HELPER.resolve()})")
    try:
        yield SBIN_HELPER
    finally:
        if ours and SBIN_HELPER.is_symlink() and SBIN_HELPER.resolve() == VENV_HELPER.resolve():
            SBIN_HELPER.unlink()


def mount_pids(mountpoint: Path) -> list[int]:
    """PIDs of the gfsfs mount daemons serving ``mountpoint`` (their argv names it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if os.fsencode(str(mountpoint)) in argv and any(b"mount" in a for a in argv[:2]):
            pids.append(int(entry))
    return pids


def proc_mounts_line(mountpoint: Path) -> list[str]:
    with open("/proc/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == str(mountpoint):
                return fields
    return []


def stop_mount(mountpoint: Path, pids: list[int]) -> None:
    """umount (as mount(8) users would), then fusermount3 -u/-uz; the daemons
    we started through mount(8) must then exit, else they are killed by PID."""
    if is_mounted(mountpoint):
        subprocess.run(["umount", str(mountpoint)], capture_output=True)
    unmount(mountpoint)
    deadline = time.monotonic() + 10
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@needs_fuse
@needs_root
@pytest.mark.mount
def test_mount_t_fuse_gfsfs_and_umount(cluster: Cluster, helper: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "gfs"
    mnt.mkdir()
    logs = cluster.logs
    pids: list[int] = []
    try:
        r = run(["mount", "-t", "fuse.gfsfs", "-o",
                 f"defaults,_netdev,nofail,x-systemd.automount,attr_timeout=2,"
                 f"entry_timeout=2,log_dir={logs}", cluster.url, str(mnt)])
        assert r.returncode == 0, r.stderr
        # mount(8) returned: the daemon is in the background and the mount is up
        assert is_mounted(mnt)
        pids = mount_pids(mnt)
        assert pids, "no mount daemon found"
        fields = proc_mounts_line(mnt)
        assert fields[0] == cluster.url and fields[2] == "fuse.gfsfs", fields
        (mnt / "hello.txt").write_text("hello through mount(8)\n")
        assert (mnt / "hello.txt").read_text() == "hello through mount(8)\n"
        assert "hello.txt" in os.listdir(mnt)
        r = run(["umount", str(mnt)])
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in pids), "the mount daemon outlived umount"

        # read-only, and the file is still there
        r = run(["mount", "-t", "fuse.gfsfs", "-o", f"ro,log_dir={logs}", cluster.url, str(mnt)])
        assert r.returncode == 0, r.stderr
        pids = mount_pids(mnt)
        assert "ro" in proc_mounts_line(mnt)[3].split(",")
        assert (mnt / "hello.txt").read_text() == "hello through mount(8)\n"
        with pytest.raises(OSError) as exc:
            (mnt / "nope").write_text("x")
        assert exc.value.errno == errno.EROFS
    finally:
        stop_mount(mnt, pids)
    assert not is_mounted(mnt)


@needs_fuse
@needs_root
@pytest.mark.mount
def test_mount_fails_cleanly_without_a_master(helper: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "gfs"
    mnt.mkdir()
    try:
        # port 9 (discard) on loopback: nothing listens
        r = run(["mount", "-t", "fuse.gfsfs", "-o", f"log_dir={tmp_path}",
                 "http://127.0.0.1:9", str(mnt)])
        assert r.returncode != 0
        assert "does not answer" in r.stderr
        assert not is_mounted(mnt)
    finally:
        stop_mount(mnt, mount_pids(mnt))


@needs_fuse
@needs_root
@pytest.mark.mount
def test_fstab_line(cluster: Cluster, helper: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "fstab-mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text("# a test fstab, never the real one\n"
                     f"{cluster.url} {mnt} fuse.gfsfs "
                     f"defaults,_netdev,allow_other,log_dir={cluster.logs} 0 0\n")
    pids: list[int] = []
    try:
        r = run(["mount", "--fstab", str(fstab), str(mnt)])
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt)
        pids = mount_pids(mnt)
        fields = proc_mounts_line(mnt)
        assert fields[0] == cluster.url and fields[2] == "fuse.gfsfs", fields
        assert "allow_other" in fields[3].split(","), fields
        # mount -a sees the line is mounted already (the source matches) and skips it
        r = run(["mount", "-a", "--fstab", str(fstab)])
        assert r.returncode == 0, r.stderr
        with open("/proc/mounts") as f:
            assert sum(1 for line in f if line.split()[1] == str(mnt)) == 1
        (mnt / "d").mkdir()
        (mnt / "d" / "f").write_bytes(b"x" * 100_000)
        assert (mnt / "d" / "f").stat().st_size == 100_000
        r = run(["umount", str(mnt)])
        assert r.returncode == 0, r.stderr
        assert not is_mounted(mnt)
    finally:
        stop_mount(mnt, pids)
    assert not is_mounted(mnt)
