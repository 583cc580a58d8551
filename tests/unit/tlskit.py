"""Throwaway certificates for the TLS tests, made with the openssl command:
a CA, a node cert it signs (for every daemon and client: serverAuth and
clientAuth, SANs for loopback), and a second CA with its own node cert (what
a stranger would show)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

SANS = ",".join(["DNS:localhost", "IP:::1"] + [f"IP:127.0.0.{i}" for i in range(1, 10)])


@dataclass(frozen=True)
class PKI:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path          # another CA, which signed other_cert
    other_cert: Path
    other_key: Path

    def sets(self, *, mutual: bool = False) -> list[str]:
        """``--set`` overrides (SECTION.KEY=VALUE) for a TLS cluster."""
        out = [f"tls.cert={str(self.cert)!r}", f"tls.key={str(self.key)!r}",
               f"tls.ca={str(self.ca)!r}"]
        return out + (["tls.require_client_cert=true"] if mutual else [])


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _ca(d: Path, name: str) -> None:
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
         "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _node(d: Path, ca: str, name: str) -> None:
    (d / f"{name}.ext").write_text(
        f"subjectAltName={SANS}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
         cwd=d)


def make_pki(d: Path) -> PKI:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca")
    _node(d, "ca", "node")
    _ca(d, "other-ca")
    _node(d, "other-ca", "stranger")
    return PKI(d / "ca.pem", d / "node.pem", d / "node.key",
               d / "other-ca.pem", d / "stranger.pem", d / "stranger.key")
