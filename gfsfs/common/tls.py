"""TLS for every HTTP endpoint (``[tls]``, docs/security.md#tls): the SSL
contexts a process builds once at start-up from :class:`TLSConfig`.

- :func:`server_context`: what the master and chunkd serve with, when
  ``cert`` and ``key`` are set (None: plain HTTP). With
  ``require_client_cert`` a client must show a cert signed by ``ca``.
- :func:`client_context`: what every client of a process verifies peers
  with (the mount, ``gfs``, and the daemons themselves towards each other):
  the peer's cert must chain to ``ca`` and name the host of its URL; our own
  ``cert`` is shown when a server asks. None when ``[tls]`` says nothing: an
  ``https://`` URL is then verified against the system's CAs.
- :func:`scheme`: the scheme of the URLs a daemon builds for itself (its
  readiness line, the address a chunkd registers, a master's own URL).

A file that is not what its key says (not PEM, a key that does not match
the cert, an encrypted key) is a :class:`ConfigError` naming the key, so a
daemon says so and exits 2 instead of dumping a traceback.
"""
from __future__ import annotations

import ssl

from gfsfs.common.config import ConfigError, TLSConfig

ALPN = ["http/1.1"]


def enabled(cfg: TLSConfig) -> bool:
    """Whether servers of this config speak TLS."""
    return bool(cfg.cert)


def scheme(cfg: TLSConfig) -> str:
    return "https" if enabled(cfg) else "http"


def server_context(cfg: TLSConfig) -> ssl.SSLContext | None:
    if not enabled(cfg):
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cfg)
    if cfg.require_client_cert:
        _load_ca(ctx, cfg.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(ALPN)
    return ctx


def client_context(cfg: TLSConfig) -> ssl.SSLContext | None:
    if not (cfg.ca or cfg.cert):
        return None
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.ca:
        _load_ca(ctx, cfg.ca)
    if cfg.cert:
        _load_chain(ctx, cfg)
    ctx.set_alpn_protocols(ALPN)
    return ctx


def contexts(cfg: TLSConfig) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
    """(server context, client context): both checked at once at start-up."""
    return server_context(cfg), client_context(cfg)


def _load_chain(ctx: ssl.SSLContext, cfg: TLSConfig) -> None:
    try:
        ctx.load_cert_chain(cfg.cert, cfg.key, password=_no_password)
    except OSError as exc:      # ssl.SSLError is one; a file gone since the config was read
        raise ConfigError(f"[tls] cert {cfg.cert!r}, key {cfg.key!r}: not a PEM certificate "
                          f"and its (unencrypted) private key: {_reason(exc)}") from None


def _load_ca(ctx: ssl.SSLContext, ca: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca)
    except OSError as exc:
        raise ConfigError(f"[tls] ca {ca!r}: no PEM CA certificates: {_reason(exc)}") from None


def _no_password() -> bytes:
    return b""                  # an encrypted key fails to load instead of prompting on a tty


def _reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return exc.strerror or str(exc)
