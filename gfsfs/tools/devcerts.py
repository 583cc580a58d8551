"""Throwaway certificates for trying TLS on one machine (and for the tests
and bench/rpc.py --tls): a CA and a node cert it signs, made with the
openssl command, valid for a few days. Not for production: see
docs/security.md#tls for what real certs need.

    python -m gfsfs.tools.devcerts DIR [--san DNS:host --san IP:10.0.0.1 ...] [--days 2]

writes DIR/ca.pem, ca.key, node.pem, node.key (and a stranger's CA and cert,
other-ca.pem, stranger.pem, stranger.key, for checking that those are
refused), then prints the ``--set`` overrides that use them. The node cert
is for servers and clients alike (serverAuth, clientAuth) and names
localhost, ::1 and 127.0.0.1-9 unless --san says otherwise.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = ["DNS:localhost", "IP:::1"] + [f"IP:127.0.0.{i}" for i in range(1, 10)]


@dataclass(frozen=True)
class PKI:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path          # another CA, which signed other_cert
    other_cert: Path
    other_key: Path

    def sets(self, *, mutual: bool = False) -> list[str]:
        """``--set`` overrides (SECTION.KEY=VALUE) that use these files."""
        out = [f"tls.cert={str(self.cert)!r}", f"tls.key={str(self.key)!r}",
               f"tls.ca={str(self.ca)!r}"]
        return out + (["tls.require_client_cert=true"] if mutual else [])


def available() -> bool:
    return shutil.which("openssl") is not None


def _run(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {r.stderr.strip()}")


def _ca(d: Path, name: str, days: int) -> None:
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", str(days),
         "-subj", f"/CN=gfsfs {name}", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def _node(d: Path, ca: str, name: str, sans: list[str], days: int) -> None:
    (d / f"{name}.ext").write_text(
        f"subjectAltName={','.join(sans)}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=gfsfs {name}", cwd=d)
    _run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-out", f"{name}.pem", "-days", str(days),
         "-extfile", f"{name}.ext", cwd=d)
    for extra in (f"{name}.csr", f"{name}.ext"):
        (d / extra).unlink()


def make(d: Path, sans: list[str] | None = None, days: int = 2) -> PKI:
    """A new CA, node cert and stranger's cert in ``d`` (files there are replaced)."""
    d.mkdir(parents=True, exist_ok=True)
    sans = sans or LOOPBACK
    _ca(d, "ca", days)
    _node(d, "ca", "node", sans, days)
    _ca(d, "other-ca", days)
    _node(d, "other-ca", "stranger", sans, days)
    for key in d.glob("*.key"):
        key.chmod(0o600)
    return PKI(d / "ca.pem", d / "node.pem", d / "node.key",
               d / "other-ca.pem", d / "stranger.pem", d / "stranger.key")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gfsfs.tools.devcerts",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("dir", type=Path)
    p.add_argument("--san", action="append", default=[],
                   help="a subjectAltName of the node cert, e.g. DNS:m1 or IP:10.0.0.1 "
                        "(repeatable; default: loopback)")
    p.add_argument("--days", type=int, default=2)
    args = p.parse_args(argv)
    if not available():
        print("devcerts: needs the openssl command", file=sys.stderr)
        return 1
    pki = make(args.dir.resolve(), args.san or None, args.days)
    print(" ".join(f"--set {s}" for s in pki.sets()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
