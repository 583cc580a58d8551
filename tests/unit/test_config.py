"""Config parsing: defaults, overrides, and errors that name the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from gfsfs.common import config
from gfsfs.tools.localcluster import ROOT


def test_shipped_config_is_the_defaults() -> None:
    assert config.load(ROOT / "configs" / "config.toml") == config.Config()


def test_every_key_is_documented_in_the_shipped_file() -> None:
    text = (ROOT / "configs" / "config.toml").read_text()
    for section, cls in config.SECTIONS.items():
        assert f"[{section}]" in text
        for f in config.fields(cls):
            assert f"\n{f.name} = " in text, f"[{section}] {f.name} missing"


def test_overrides_parse_toml_values() -> None:
    c = config.load(None, ["master.port=6001", "client.master_url=http://h:1",
                           "master.heartbeat_interval=1"])
    assert c.master.port == 6001 and c.client.master_url == "http://h:1"
    assert c.master.heartbeat_interval == 1.0


@pytest.mark.parametrize("text, needle", [
    ("[master]\nnope = 1\n", "nope"),
    ("[master]\nport = 'x'\n", "port"),
    ("[master]\nport = 70000\n", "port"),
    ("[master]\nchunk_size = 1000\n", "chunk_size"),
    ("[chunk_server]\nheartbeat_interval = -2\n", "heartbeat_interval"),
    ("[client]\nlog_level = 'LOUD'\n", "log_level"),
    ("[master]\nlease_seconds = nan\n", "lease_seconds"),
    ("[chunk_server]\nbody_timeout = inf\n", "body_timeout"),
    ("[chunk_server]\npush_buffer_bytes = 1000\n", "push_buffer_bytes"),
    ("[chunk_server]\npush_buffer_bytes = 'lots'\n", "push_buffer_bytes"),
    ("[chunk_server]\npush_buffer_ttl = 0\n", "push_buffer_ttl"),
    ("[chunk_server]\npush_buffer_wait = -1\n", "push_buffer_wait"),
    ("[master]\nweb_upload_max_bytes = -5\n", "web_upload_max_bytes"),
    ("[elsewhere]\nx = 1\n", "elsewhere"),
    ("[master\n", "config.toml"),
])
def test_bad_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    assert needle in str(e.value)


def test_bad_override() -> None:
    with pytest.raises(config.ConfigError, match="SECTION.KEY=VALUE"):
        config.load(None, ["port=1"])
    with pytest.raises(config.ConfigError, match="nosection"):
        config.load(None, ["nosection.port=1"])


@pytest.mark.parametrize("text, needle", [
    ("[tls]\ncert = 'c.pem'\n", "[tls] key"),
    ("[tls]\nkey = 'k.pem'\n", "[tls] cert"),
    ("[tls]\ncrt = 'c.pem'\n", "'crt'"),
    ("[tls]\nrequire_client_cert = 'yes'\n", "require_client_cert"),
    ("[tls]\nrequire_client_cert = true\n", "[tls] require_client_cert: needs [tls] ca"),
    ("[tls]\nca = '/nonexistent/ca.pem'\n", "[tls] ca: cannot read /nonexistent/ca.pem"),
    ("[tls]\nca = '/'\n", "[tls] ca: / is not a file"),
])
def test_bad_tls_config_names_the_key(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "config.toml"
    p.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(p)
    assert needle in str(e.value)


def test_tls_files_must_be_readable(tmp_path: Path) -> None:
    for name in ("c.pem", "k.pem", "ca.pem"):
        (tmp_path / name).write_text("x")
    sets = [f"tls.cert={str(tmp_path / 'c.pem')!r}", f"tls.key={str(tmp_path / 'k.pem')!r}",
            f"tls.ca={str(tmp_path / 'ca.pem')!r}", "tls.require_client_cert=true"]
    c = config.load(None, sets)
    assert c.tls.cert.endswith("c.pem") and c.tls.require_client_cert
    with pytest.raises(config.ConfigError, match=r"\[tls\] require_client_cert: needs \[tls\] cert"):
        config.load(None, sets[2:])
    (tmp_path / "k.pem").unlink()
    with pytest.raises(config.ConfigError, match=r"\[tls\] key: cannot read .*k\.pem"):
        config.load(None, sets)
