"""Throwaway certificates for the TLS tests (gfsfs.tools.devcerts, the
openssl command): a CA, a node cert it signs (for every daemon and client:
serverAuth and clientAuth, SANs for loopback), and a second CA with its own
node cert (what a stranger would show)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gfsfs.tools import devcerts
from gfsfs.tools.devcerts import PKI

__all__ = ["PKI", "make_pki"]


def make_pki(d: Path) -> PKI:
    if not devcerts.available():
        pytest.skip("needs the openssl command")
    return devcerts.make(d)
