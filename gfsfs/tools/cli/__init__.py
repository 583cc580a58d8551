"""``gfs``: the gfsfs admin command line.

Talks to the master (``--master URL``, or several comma-separated: the
primary is followed; else ``--set client.master_url=...``;
else the ``GFS_MASTER`` environment variable; else ``[client] master_url`` from
the config file; requests are signed with ``[cluster] secret_file``, else
``$GFS_SECRET_FILE``) with the msgpack RPCs of :mod:`gfsfs.common.protocol.client_master`::

    gfs status                      cluster summary
    gfs df                          capacity, per chunkd and in total
    gfs ls [-l] PATH                a directory (with -l: goal, live replicas)
    gfs fileinfo PATH               every chunk: handle, version, replicas, lease
    gfs setgoal [-r] N PATH         replication goal (recursively with -r)
    gfs chunkd list                 the chunk servers
    gfs fsck                        lost / under-goal / over-goal / stale / corrupt
                                    chunks and their files (exit 1 if any is lost)
    gfs checkpoint                  write a master checkpoint now
    gfs dump-metadata --json        the whole namespace as JSON
    gfs snapshot SRC DST            copy-on-write snapshot of a file or a tree
    gfs trash ls                    deleted files: path, size, deletion/purge time
    gfs trash restore PATH [--to NEWPATH]   undelete (also --ino N)
    gfs trash purge [--older-than SECONDS]  purge now; unshared chunks are freed
    gfs secret init FILE            a new cluster secret (mode 0600; no cluster needed)
    gfs secret add FILE             a new key in it, for a rotation (docs/security.md)
    gfs quota set PATH [--bytes 10G] [--inodes 1M] [--soft-bytes ..] [--soft-inodes ..]
                  [--grace 7d]      a directory's quota (docs/quotas.md)
    gfs quota ls [PATH]             quotas: limits and usage
    gfs quota rm PATH               remove a directory's quota

Every subcommand takes ``--json`` (machine-readable output on stdout). Exit
status: 0 on success, 1 on a failure (message on stderr), 2 on a usage error.

PATH is a path inside the file system (``/a/b``) or a local path under a
mount point of gfsfs (an entry of type ``fuse.gfsfs`` in /proc/mounts), whose
mount point prefix is stripped. It is resolved with ``lookup`` from the root
inode (:func:`gfsfs.client.paths.resolve`, shared with :mod:`gfsfs.client.api`), following
symbolic links in all but the last component.

The package: :mod:`~gfsfs.tools.cli.entry` builds the parser and runs a
command (``main``; ``python -m gfsfs.tools.cli`` runs it too); one module per
command group, each with ``add_commands(sub, common)``:
:mod:`~gfsfs.tools.cli.status` (status, df), :mod:`~gfsfs.tools.cli.files`
(ls, fileinfo, setgoal), :mod:`~gfsfs.tools.cli.chunkd` (chunkd list, drain,
undrain), :mod:`~gfsfs.tools.cli.admin` (fsck, checkpoint, dump-metadata),
:mod:`~gfsfs.tools.cli.snapshot`, :mod:`~gfsfs.tools.cli.trash`,
:mod:`~gfsfs.tools.cli.quota`; and what they
share: :mod:`~gfsfs.tools.cli.common` (``Failure``, the ``Master`` RPC stub),
:mod:`~gfsfs.tools.cli.output` (``emit``, tables, sizes, times),
:mod:`~gfsfs.tools.cli.paths` (PATH arguments, mount points),
:mod:`~gfsfs.tools.cli.args` (common options, argument types). Only the entry
point imports :mod:`~gfsfs.tools.cli.entry`.
"""
from __future__ import annotations

from gfsfs.tools.cli.entry import main
from gfsfs.tools.cli.paths import fs_path

__all__ = ["fs_path", "main"]
