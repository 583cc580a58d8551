"""The error table (gfsfs/common/errors.py): codes, statuses, errnos, and that every
code named in the source exists."""
from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from gfsfs.common.errors import CODES, Code, GFSError, code_for_status, from_oserror

ROOT = Path(__file__).resolve().parents[2]


def test_each_code_is_its_own_name_with_a_status_and_errno() -> None:
    for code in Code:
        assert code.value == code.name
        assert 400 <= code.status < 600 and code.errno > 0
        assert CODES[code.value] == (code.status, code.errno)
    assert Code.STALE == "STALE" and Code.STALE.errno == errno.ESTALE


def test_a_string_code_is_checked_against_the_enum() -> None:
    err = GFSError("ENOENT", "gone")
    assert err.code is Code.ENOENT and (err.status, err.errno) == (404, errno.ENOENT)
    assert str(err) == "ENOENT: gone"
    bogus = GFSError("ENOSUCHCODE", "x")
    assert bogus.code is Code.INTERNAL and bogus.message == "ENOSUCHCODE: x"


def test_the_wire_form_round_trips() -> None:
    wire = GFSError(Code.NOCHUNK, "no chunk 7").to_wire()
    assert wire == {"error": {"code": "NOCHUNK", "message": "no chunk 7"}}
    assert type(wire["error"]["code"]) is str          # type: ignore[index]
    back = GFSError.from_wire(wire, 404)
    assert back.code is Code.NOCHUNK and back.message == "no chunk 7"
    assert GFSError.from_wire(b"junk", 502).code is Code.UNAVAILABLE
    assert code_for_status(413) is Code.TOOBIG
    assert from_oserror(OSError(errno.ENOSPC, "full")).code is Code.ENOSPC
    assert from_oserror(OSError(errno.ECHILD, "odd")).code is Code.EIO


@pytest.mark.parametrize("package", ["gfsfs", "master", "chunkd"])
def test_every_code_named_in_the_source_exists(package: str) -> None:
    """A typo in ``GFSError("CODE", ...)`` (master/ still passes strings) or in
    ``Code.X`` fails here instead of turning into INTERNAL at run time."""
    known = {c.value for c in Code}
    bad: list[str] = []
    for path in sorted((ROOT / package).glob("*.py")):
        text = path.read_text()
        for m in re.finditer(r'GFSError\(\s*"([A-Z_]+)"|\bCode\.([A-Z_]+)\b', text):
            name = m.group(1) or m.group(2)
            if name not in known:
                bad.append(f"{path.name}: {name}")
    assert not bad
