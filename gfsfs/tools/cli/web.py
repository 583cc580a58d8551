"""``gfs web passwd USER --role admin|viewer``, ``gfs web rm USER``, ``gfs web
users`` and ``gfs web token FILE``: the web page's accounts and the admin
token (docs/security.md). They run here, on the files, and need no cluster:
the master reads the users file again when it changes, the token file at start."""
from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from gfsfs.common import config
from gfsfs.common.auth import web as webauth
from gfsfs.common.config import ConfigError
from gfsfs.tools.cli.common import Failure
from gfsfs.tools.cli.output import emit


def users_file(args: argparse.Namespace) -> str:
    if args.users_file:
        return str(args.users_file)
    try:
        path = config.load(args.config, list(args.overrides)).web.users_file
    except ConfigError as exc:
        raise Failure(str(exc)) from None
    if not path:
        raise Failure("no users file: give --users-file FILE or set [web] users_file")
    return path


def read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        try:
            text = Path(args.password_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise Failure(f"{args.password_file}: {exc}") from None
        password = text.splitlines()[0] if text else ""
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            raise Failure("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise Failure("a password needs at least 8 characters")
    return password


def cmd_passwd(_: Any, args: argparse.Namespace) -> int:
    path = users_file(args)
    password = read_password(args)
    try:
        new = webauth.set_user(path, args.user, args.role, password)
    except (webauth.WebAuthError, ValueError, OSError) as exc:
        raise Failure(str(exc)) from None
    emit(args, {"file": path, "user": args.user, "role": args.role, "new": new},
         lambda: f"{path}: {'added' if new else 'changed'} {args.user} ({args.role})")
    return 0


def cmd_rm(_: Any, args: argparse.Namespace) -> int:
    path = users_file(args)
    try:
        gone = webauth.remove_user(path, args.user)
    except (webauth.WebAuthError, OSError) as exc:
        raise Failure(str(exc)) from None
    if not gone:
        raise Failure(f"{path}: no user {args.user!r}")
    emit(args, {"file": path, "user": args.user, "removed": True},
         lambda: f"{path}: removed {args.user} (their sessions end now)")
    return 0


def cmd_users(_: Any, args: argparse.Namespace) -> int:
    path = users_file(args)
    try:
        users = webauth.load_users(path)
    except webauth.WebAuthError as exc:
        raise Failure(str(exc)) from None
    rows = [{"user": u.name, "role": u.role} for u in users.values()]
    emit(args, rows, lambda: "\n".join(f"{r['user']}\t{r['role']}" for r in rows)
         or f"{path}: no users")
    return 0


def cmd_token(_: Any, args: argparse.Namespace) -> int:
    try:
        webauth.generate_token(args.file, overwrite=args.force)
    except (webauth.WebAuthError, OSError) as exc:
        raise Failure(str(exc)) from None
    emit(args, {"file": args.file},
         lambda: f"{args.file}: a new admin token (mode 0600); set [web] admin_token_file "
                 f"on the master (and restart it), GFS_ADMIN_TOKEN_FILE={args.file} for gfs, "
                 f"bearer_token_file for Prometheus")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("web", parents=[common],
                       help="the web page's accounts and the admin token (local files)")
    inner = p.add_subparsers(dest="web_command", required=True)
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument("--users-file", metavar="FILE",
                       help="the users file (default: [web] users_file)")
    pw = inner.add_parser("passwd", parents=[common, files],
                          help="add a user, or change its password and role")
    pw.add_argument("user", metavar="USER")
    pw.add_argument("--role", choices=webauth.ROLES, default="viewer",
                    help="admin: may change files; viewer: read-only (default)")
    pw.add_argument("--password-file", metavar="FILE",
                    help="read the password from FILE's first line (default: a prompt, "
                         "or a line on stdin)")
    pw.set_defaults(func=cmd_passwd, local=True)
    rm = inner.add_parser("rm", parents=[common, files], help="remove a user")
    rm.add_argument("user", metavar="USER")
    rm.set_defaults(func=cmd_rm, local=True)
    ls = inner.add_parser("users", parents=[common, files], help="list the users and roles")
    ls.set_defaults(func=cmd_users, local=True)
    tok = inner.add_parser("token", parents=[common],
                           help="write a new admin token file (Authorization: Bearer)")
    tok.add_argument("file", metavar="FILE")
    tok.add_argument("--force", action="store_true", help="replace an existing file")
    tok.set_defaults(func=cmd_token, local=True)
