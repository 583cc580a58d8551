"""Configuration as data: ``configs/config.toml`` parsed into frozen dataclasses.

Sections ``[master]``, ``[chunk_server]``, ``[client]``, ``[ha]``, ``[cluster]``, ``[tls]``, ``[web]``. Every key has a default
(documented beside it here and in configs/config.toml); every key can be
overridden on the command line with ``--set SECTION.KEY=VALUE`` (VALUE is read as
a TOML value, falling back to a string). An unknown section or key, or a value
of the wrong type or range, raises :class:`ConfigError` naming it.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("configs/config.toml")
MIB = 1 << 20


class ConfigError(ValueError):
    """A bad config file, key or value; the message names the key."""


@dataclass(frozen=True)
class MasterConfig:
    host: str = "localhost"            # address the master listens on
    port: int = 5000                   # port the master listens on
    data_dir: str = "data/master"      # op log and checkpoints
    log_dir: str = "logs"              # logs/master_YYYY-MM-DD.log
    log_level: str = "INFO"            # DEBUG, INFO, WARNING, ERROR
    chunk_size: int = 64 * MIB         # bytes per chunk (fixed once files exist)
    replication_factor: int = 3        # default goal (replicas per chunk) of new files
    heartbeat_interval: float = 2.0    # seconds between chunkd heartbeats
    dead_after_heartbeats: int = 3     # a chunkd missing this many heartbeats is dead
    lease_seconds: float = 60.0        # primary lease length (GFS §3.1)
    checkpoint_every: int = 50000      # op log records between automatic checkpoints
    trash_time: float = 86400.0        # seconds a deleted file waits in trash
    max_request_bytes: int = 16 * MIB  # largest msgpack request body accepted
    body_timeout: float = 30.0         # seconds a request body may stall before it fails (408)
    replication_per_chunkd: int = 4    # concurrent re-replication copies per chunkd (source or target)
    replication_max: int = 16          # concurrent re-replication copies in the whole cluster
    rebalance_threshold: float = 0.1   # move replicas when disk use (fraction) differs more than this
    rebalance_moves: int = 2           # concurrent rebalancing/drain moves in the whole cluster
    web_upload_max_bytes: int = 4 << 30    # largest upload through the web page (PUT /web/upload)
    role: str = "primary"              # "primary", or "shadow" (follows primary_url; docs/ha.md)
    primary_url: str = ""              # a shadow's primary: "http://host:port"
    advertise_url: str = ""            # how others reach this master ("" = http://host:port)
    sync_shadows: int = 1              # a mutation waits for this many shadows' fsync (if connected)
    shadow_timeout: float = 5.0        # seconds a synchronous shadow may lag before it is dropped
    alone: str = "continue"            # no synchronous shadow left: "continue" or "refuse" mutations
    exports_file: str = ""             # who may mount what (configs/exports.toml; docs/security.md); "" = none


@dataclass(frozen=True)
class ChunkServerConfig:
    host: str = "127.0.0.1"            # address this chunkd listens on and registers
    port: int = 0                      # 0 = pick a free port (persisted in server_info)
    base_port: int = 5001              # first port `make run` gives its chunkds (+0, +1, +2)
    data_dir: str = "data/chunks"      # chunks live in DATA_DIR/<server id>/
    log_dir: str = "logs"              # logs/chunk_server_YYYY-MM-DD.log
    log_level: str = "INFO"
    master_url: str = "http://localhost:5000"   # the masters to register with, comma-separated
    heartbeat_interval: float = 2.0    # seconds between heartbeats
    server_info_file: str = "server_info"       # id, port, master: restart as the same server
    rack: str = "default"              # placement spreads replicas over racks
    capacity_bytes: int = 0            # advertised capacity; 0 = the disk's size
    reserve_bytes: int = 64 * MIB      # kept free on disk; beyond it writes get ENOSPC
    push_buffer_ttl: float = 60.0      # seconds pushed data waits for its commit (then dropped, on a timer)
    push_buffer_bytes: int = 128 * MIB  # pushed data buffered at once; a push beyond it waits
    push_buffer_wait: float = 5.0      # seconds a push waits for room in full buffers before EAGAIN
    scrub_bytes_per_sec: int = 16 * MIB    # background checksum scrub rate; 0 = no scrubbing
    peer_timeout: float = 10.0         # seconds a forward/apply to another chunkd may stall before it fails
    body_timeout: float = 30.0         # seconds a request body may stall before it fails (408)
    short_circuit: bool = True         # hand chunk files to readers on this host (short-circuit reads)


@dataclass(frozen=True)
class ClientConfig:
    master_url: str = "http://localhost:5000"   # the master(s), comma-separated: the primary is found
    failover_timeout: float = 30.0     # seconds a master request waits for a primary before failing
    log_dir: str = "logs"              # logs/client_YYYY-MM-DD.log
    log_level: str = "INFO"
    upload_chunk_size: int = 8 * MIB   # bytes buffered per file before a write is sent
    attr_timeout: float = 1.0          # seconds the kernel caches attributes
    entry_timeout: float = 1.0         # seconds the kernel caches name lookups
    location_timeout: float = 30.0     # seconds chunk locations are cached
    readahead_bytes: int = 8 * MIB     # bytes read ahead of a sequential reader
    readahead_pieces: int = 4          # ranges in flight while reading ahead
    request_timeout: float = 30.0      # seconds before a chunkd/master request fails over
    retries: int = 5                   # attempts at the chunkds (and at a master answering UNAVAILABLE) before EIO
    chunkd_timeout: float = 10.0       # seconds a chunkd read/push/commit may stall before failing over
    source_address: str = ""           # local address to connect from ("" = the OS picks)
    short_circuit: bool = True         # read replicas on this host from their files, not over HTTP
    export: str = ""                   # mount through an export session rooted here ("" = with the secret, or "/")
    password_file: str = ""            # the export's password (a file, mode 0600); "" = none


@dataclass(frozen=True)
class HAConfig:
    etcd: str = ""                     # etcd endpoint(s), comma-separated; "" = no automatic failover
    failover_seconds: float = 10.0     # a dead primary is replaced within this (the etcd lease TTL)
    election_key: str = "/gfsfs/primary"   # the etcd key the masters campaign for


@dataclass(frozen=True)
class ClusterConfig:
    secret_file: str = ""              # the cluster secret (gfs secret init); "" = no authentication
    token_seconds: float = 600.0       # lifetime of the chunk access tokens the master hands out


@dataclass(frozen=True)
class TLSConfig:
    # docs/security.md#tls; every daemon and client of a host reads the same section
    cert: str = ""                     # PEM certificate (chain): served, and shown to peers that ask; "" = plain HTTP
    key: str = ""                      # PEM private key of cert (unencrypted)
    ca: str = ""                       # PEM CA certificates peers are verified against ("" = the system's)
    require_client_cert: bool = False  # servers refuse clients without a cert from ca (mutual TLS)


@dataclass(frozen=True)
class WebConfig:
    users_file: str = ""               # web page accounts (gfs web passwd); "" = no password logins
    admin_token_file: str = ""         # bearer tokens that act as admin (gfs web token); "" = none
    session_seconds: float = 28800.0   # a login session's lifetime (sessions live in the master's memory)
    secure_cookies: bool = False       # always mark the session cookie Secure (it is under TLS anyway)
    login_attempts: int = 10           # logins allowed per client address per minute


SECTIONS: dict[str, type] = {
    "master": MasterConfig,
    "chunk_server": ChunkServerConfig,
    "client": ClientConfig,
    "ha": HAConfig,
    "cluster": ClusterConfig,
    "tls": TLSConfig,
    "web": WebConfig,
}


@dataclass(frozen=True)
class Config:
    master: MasterConfig = dataclasses.field(default_factory=MasterConfig)
    chunk_server: ChunkServerConfig = dataclasses.field(default_factory=ChunkServerConfig)
    client: ClientConfig = dataclasses.field(default_factory=ClientConfig)
    ha: HAConfig = dataclasses.field(default_factory=HAConfig)
    cluster: ClusterConfig = dataclasses.field(default_factory=ClusterConfig)
    tls: TLSConfig = dataclasses.field(default_factory=TLSConfig)
    web: WebConfig = dataclasses.field(default_factory=WebConfig)


def _coerce(where: str, typ: str, value: Any) -> Any:
    if typ == "float" and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    expected = {"str": str, "int": int, "float": float, "bool": bool}[typ]
    if isinstance(value, bool) and expected is not bool:
        raise ConfigError(f"{where}: expected {typ}, got a boolean")
    if not isinstance(value, expected):
        raise ConfigError(f"{where}: expected {typ}, got {type(value).__name__} {value!r}")
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value}")
    if expected in (int, float) and value < 0:
        raise ConfigError(f"{where}: must not be negative, got {value}")
    return value


def _section(name: str, raw: dict[str, Any]) -> Any:
    cls = SECTIONS[name]
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown key [{name}] {key!r}; known keys: {', '.join(known)}")
        values[key] = _coerce(f"[{name}] {key}", str(known[key].type), value)
    obj = cls(**values)
    _validate(name, obj)
    return obj


def _validate(name: str, obj: Any) -> None:
    if name == "master":
        cs = obj.chunk_size
        if cs < 64 * 1024 or cs % (64 * 1024):
            raise ConfigError(f"[master] chunk_size: must be a multiple of 65536, got {cs}")
        if not 1 <= obj.replication_factor <= 16:
            raise ConfigError(f"[master] replication_factor: must be 1..16, got {obj.replication_factor}")
        if obj.role not in ("primary", "shadow"):
            raise ConfigError(f"[master] role: must be \"primary\" or \"shadow\", got {obj.role!r}")
        if obj.alone not in ("continue", "refuse"):
            raise ConfigError(f"[master] alone: must be \"continue\" or \"refuse\", got {obj.alone!r}")
    if name == "ha" and obj.etcd and obj.failover_seconds < 2:
        raise ConfigError(f"[ha] failover_seconds: must be at least 2, got {obj.failover_seconds}")
    if name == "cluster" and not 10 <= obj.token_seconds <= 3000:
        raise ConfigError(f"[cluster] token_seconds: must be 10..3000, got {obj.token_seconds}")
    if name == "web":
        if not 60 <= obj.session_seconds <= 30 * 86400:
            raise ConfigError(f"[web] session_seconds: must be 60..2592000, got {obj.session_seconds}")
        if obj.login_attempts < 1:
            raise ConfigError(f"[web] login_attempts: must be at least 1, got {obj.login_attempts}")
    if name == "chunk_server":
        if obj.push_buffer_ttl <= 0:
            raise ConfigError(f"[chunk_server] push_buffer_ttl: must be positive, "
                              f"got {obj.push_buffer_ttl}")
        if obj.push_buffer_bytes < MIB:
            raise ConfigError(f"[chunk_server] push_buffer_bytes: must be at least {MIB}, "
                              f"got {obj.push_buffer_bytes}")
    if name == "tls":
        _validate_tls(obj)
    for f in fields(obj):
        if f.name == "log_level" and getattr(obj, f.name).upper() not in (
                "DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(f"[{name}] log_level: must be DEBUG, INFO, WARNING or ERROR")
        if (f.name == "port" or f.name.endswith("_port")) and getattr(obj, f.name) > 65535:
            raise ConfigError(f"[{name}] {f.name}: must be 0..65535")


def _validate_tls(obj: TLSConfig) -> None:
    """cert and key together; mutual TLS needs both and a CA; every file named
    can be read (the PEM contents are checked by :mod:`gfsfs.common.tls`)."""
    if bool(obj.cert) != bool(obj.key):
        missing = "key" if obj.cert else "cert"
        raise ConfigError(f"[tls] {missing}: needed with [tls] {'cert' if obj.cert else 'key'}")
    if obj.require_client_cert and not obj.ca:
        raise ConfigError("[tls] require_client_cert: needs [tls] ca (the CA client certs "
                          "must come from)")
    if obj.require_client_cert and not obj.cert:
        raise ConfigError("[tls] require_client_cert: needs [tls] cert and key (a server "
                          "without TLS cannot ask for client certs)")
    for key in ("cert", "key", "ca"):
        path = getattr(obj, key)
        if not path:
            continue
        if os.path.exists(path) and not os.path.isfile(path):
            raise ConfigError(f"[tls] {key}: {path} is not a file")
        try:
            with open(path, "rb") as f:
                f.read(1)
        except OSError as exc:
            raise ConfigError(f"[tls] {key}: cannot read {path}: "
                              f"{exc.strerror or exc}") from None


def parse_override(text: str) -> tuple[str, str, Any]:
    """``SECTION.KEY=VALUE`` -> (section, key, value)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r}: expected SECTION.KEY=VALUE")
    lhs, rhs = text.split("=", 1)
    section, key = lhs.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {rhs}")["v"]
    except tomllib.TOMLDecodeError:
        value = rhs
    return section, key, value


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read ``path`` (default configs/config.toml if it exists) plus overrides."""
    raw: dict[str, Any] = {}
    if path is not None or DEFAULT_PATH.exists():
        p = Path(path) if path is not None else DEFAULT_PATH
        try:
            raw = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: {exc}") from None
    for name, value in raw.items():
        if name not in SECTIONS:
            raise ConfigError(f"unknown section [{name}]; known: {', '.join(SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
    for text in overrides:
        section, key, value = parse_override(text)
        if section not in SECTIONS:
            raise ConfigError(f"override {text!r}: unknown section [{section}]")
        raw.setdefault(section, {})[key] = value
    return Config(**{name: _section(name, raw.get(name, {})) for name in SECTIONS})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config file (default: configs/config.toml if present)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        dest="overrides", help="override one config key (repeatable)")


def from_args(args: argparse.Namespace, extra: list[str] | None = None) -> Config:
    """The config named by ``--config``/``--set`` plus ``extra`` overrides."""
    return load(args.config, list(args.overrides) + list(extra or []))


def render_defaults() -> str:
    """configs/config.toml with every key at its default (used to check the file)."""
    out: list[str] = []
    for name, cls in SECTIONS.items():
        out.append(f"[{name}]")
        for f in fields(cls):
            out.append(f"{f.name} = {_toml(f.default)}")
        out.append("")
    return "\n".join(out)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
