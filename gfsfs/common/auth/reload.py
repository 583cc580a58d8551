"""The cluster secret read again when its file changes, so a rotation
(docs/security.md#rotating-the-secret) needs no restart: every process that
holds the secret -- master, chunkd, mount -- looks at the file every
:data:`PERIOD` seconds and, when it changed and still parses (mode 0600, at
least one key), verifies and signs with the new keys from then on. A file
that became unusable keeps the last good secret, with an error in the log.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

import trio

from gfsfs.common.auth import secret as secrets
from gfsfs.common.auth.secret import Secret

log = logging.getLogger(__name__)

PERIOD = 2.0        # seconds between looks at the secret file


def _stamp(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def signers(http: Any) -> list[Any]:
    """The cluster-secret signers of ``http`` (not an export session's)."""
    found = [getattr(getattr(http, "rpc_pool", None), "signer", None),
             getattr(getattr(http, "auth", None), "signer", None)]
    return [s for s in found if s is not None and not s.secret.signing.kid.startswith("S1.")]


def use(secret: Secret, targets: Iterable[Any]) -> None:
    """Verify and sign with ``secret`` from now on."""
    for target in targets:
        target.secret = secret


async def watch(path: str, on_change: Callable[[Secret], None],
                period: float = PERIOD) -> None:
    """Call ``on_change`` with the secret in ``path`` whenever the file
    changes and can be used; forever."""
    stamp = _stamp(path)
    while True:
        await trio.sleep(period)
        now = _stamp(path)
        if now == stamp:
            continue
        stamp = now
        try:
            secret = await trio.to_thread.run_sync(secrets.load, path)
        except secrets.SecretError as exc:
            log.error("%s; keeping the secret read before", exc)
            continue
        log.warning("secret file %s changed: now %d keys, signing with key %s", path,
                    len(secret.keys), secret.signing.kid)
        on_change(secret)


async def watch_security(security: Any, http: Any, period: float = PERIOD) -> None:
    """:func:`watch` for a daemon: its Security, verifier, token keys and the
    signers of its http client."""
    if security.secret is None or not security.secret.path:
        return
    await watch(security.secret.path, lambda s: use(s, [
        security, *(t for t in (security.verifier(), security.tokens()) if t is not None),
        *signers(http)]), period)


async def watch_client(secret: Secret | None, http: Any, period: float = PERIOD) -> None:
    """:func:`watch` for a mount holding the secret: its http client's signers."""
    if secret is None or not secret.path:
        return
    await watch(secret.path, lambda s: use(s, signers(http)), period)
