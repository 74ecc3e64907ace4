"""Files are written whole or not at all."""

import os

import pytest

from physnn.core.atomic import atomic_path, default_file_mode


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "log.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("first")
    assert target.read_text() == "first"
    assert (target.stat().st_mode & 0o777) == default_file_mode()  # not mkstemp's 0o600
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    assert os.listdir(target.parent) == ["log.txt"]
