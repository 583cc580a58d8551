"""gfsfs/fuse/ext.py finds pyfuse3's mapping however pyfuse3 was reached: a
venv that is a symlink (a git worktree's, a deployment's) gave pyfuse3.__file__
a path /proc/self/maps does not list, and fallocate was silently not offered."""
from __future__ import annotations

import os
from pathlib import Path

import pyfuse3
import pytest

from gfsfs.fuse import ext


async def _fallocate(ino: int, mode: int, offset: int, length: int) -> None:
    raise AssertionError("never called: no kernel session here")


@pytest.mark.parametrize("through_symlink", [False, True])
def test_the_hook_installs_through_a_symlinked_path(tmp_path: Path, through_symlink: bool,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.path.realpath(pyfuse3.__file__)
    if through_symlink:
        link = tmp_path / "site-packages"
        link.symlink_to(Path(real).parent, target_is_directory=True)
        monkeypatch.setattr(pyfuse3, "__file__", str(link / Path(real).name))
        assert pyfuse3.__file__ != real
    with ext.installed(None, _fallocate) as ok:
        assert ok
