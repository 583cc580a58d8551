"""``mount.fuse.gfsfs``: the mount(8) helper, so gfsfs mounts like any file system.

``mount -t fuse.gfsfs http://master:5000 /mnt/gfs -o ro`` (or an /etc/fstab line
``http://master:5000 /mnt/gfs fuse.gfsfs defaults,_netdev 0 0``) makes mount(8)
run ``/sbin/mount.fuse.gfsfs SOURCE MOUNTPOINT [-sfnv] [-N NS] -o OPTS [-t TYPE]``.
This translates that into ``mount.py SOURCE MOUNTPOINT -o ...``, which checks the
master, goes to the background once the file system is mounted and exits 0 (1
with a message on stderr when it cannot mount). ``umount MOUNTPOINT`` unmounts.

Options:

- dropped (meant for mount(8), systemd or fstab, not for us): ``rw``,
  ``defaults``, ``auto``, ``noauto``, ``_netdev``, ``nofail``, ``user``, ``users``,
  ``nouser``, ``owner``, ``group``, ``comment=...``, ``x-*`` (``x-systemd.*``);
- ours: ``config=FILE`` (the TOML config, default /etc/gfsfs/config.toml if it
  exists) and ``log_dir=DIR`` (default /var/log/gfsfs unless a config is used);
- everything else goes to mount.py: ``ro``, ``allow_other``, ``debug``,
  ``attr_timeout=S``, ``entry_timeout=S`` and any libfuse mount option
  (``noatime``, ``nosuid``, ``nodev``, ...).

Install (as root): ``make install-helper`` (a symlink /sbin/mount.fuse.gfsfs to
this console script in .venv).
"""
from __future__ import annotations

import json
import os
import sys

USAGE = ("usage: mount.fuse.gfsfs MASTER_URL MOUNTPOINT [-sfnv] [-N NAMESPACE] "
         "[-o OPTIONS] [-t fuse.gfsfs]")

DROP = {"rw", "defaults", "auto", "noauto", "_netdev", "nofail", "user", "users", "nouser",
        "owner", "group", "sloppy"}
DROP_PREFIXES = ("x-", "comment=")
DEFAULT_CONFIG = "/etc/gfsfs/config.toml"
DEFAULT_LOG_DIR = "/var/log/gfsfs"


class UsageError(Exception):
    pass


def parse(argv: list[str]) -> tuple[list[str], list[str], set[str]]:
    """(positional args, raw option words from every -o, single-letter flags)."""
    positional: list[str] = []
    options: list[str] = []
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-o", "-t", "-N"):
            if i + 1 >= len(argv):
                raise UsageError(f"{arg} needs a value")
            if arg == "-o":
                options += argv[i + 1].split(",")
            i += 2
            continue
        if arg.startswith("-o") and len(arg) > 2:
            options += arg[2:].split(",")
        elif arg.startswith(("-t", "-N")) and len(arg) > 2:
            pass
        elif arg.startswith("-") and len(arg) > 1 and arg != "--":
            for letter in arg[1:]:
                if letter not in "sfnvh":
                    raise UsageError(f"unknown flag -{letter}")
                flags.add(letter)
        elif arg != "--":
            positional.append(arg)
        i += 1
    return positional, [o.strip() for o in options if o.strip()], flags


def translate(source: str, mountpoint: str, options: list[str]) -> list[str]:
    """mount.py's argv for mount(8)'s SOURCE, MOUNTPOINT and -o words."""
    keep: list[str] = []
    config = log_dir = None
    for opt in options:
        key, _, value = opt.partition("=")
        if opt in DROP or opt.startswith(DROP_PREFIXES):
            continue
        if key == "config":
            config = value
        elif key == "log_dir":
            log_dir = value
        elif opt not in keep:
            keep.append(opt)
    if not any(o.startswith("fsname=") for o in keep):
        # /proc/mounts shows the fstab source, so `mount -a` and findmnt match it;
        # the commas of several masters are escaped (libfuse unescapes them)
        escaped = source.replace(",", "\\,")
        keep.append(f"fsname={escaped}")
    argv = [source, mountpoint]
    if keep:
        argv += ["-o", ",".join(keep)]
    if config is None and os.path.exists(DEFAULT_CONFIG):
        config = DEFAULT_CONFIG
    if config is not None:
        argv += ["--config", config]
    if log_dir is None and config is None:
        log_dir = DEFAULT_LOG_DIR
    if log_dir is not None:
        argv += ["--set", f"client.log_dir={json.dumps(os.path.abspath(log_dir))}"]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        positional, options, flags = parse(args)
        if "h" in flags:
            print(USAGE)
            print(__doc__)
            return 0
        if len(positional) != 2:
            raise UsageError("expected MASTER_URL and MOUNTPOINT")
    except UsageError as exc:
        print(f"mount.fuse.gfsfs: {exc}\n{USAGE}", file=sys.stderr)
        return 1                # mount(8): 1 = incorrect invocation
    source, mountpoint = positional
    if source.startswith("gfsfs#"):          # the old fuse "type#source" spelling
        source = source[len("gfsfs#"):]
    mount_argv = translate(source, mountpoint, options)
    if "v" in flags or "f" in flags:
        print("mount.fuse.gfsfs: mount.py " + " ".join(mount_argv), file=sys.stderr)
    if "f" in flags:                         # -f: fake, do everything but mount
        return 0
    import gfsfs.fuse.mount as gfs_mount
    rc = gfs_mount.main(mount_argv)
    return 32 if rc else 0                  # mount(8): 32 = mount failure


if __name__ == "__main__":
    sys.exit(main())
