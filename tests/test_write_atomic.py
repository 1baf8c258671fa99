"""Files replaced all at once (`appliance.paths.write_atomic`): the old one or the new one, never a part."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.paths import write_atomic


def test_writes_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "w.onnx"
    target.write_bytes(b"old")
    write_atomic(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    assert [p.name for p in tmp_path.iterdir()] == ["w.onnx"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "w.onnx"
    target.write_bytes(b"old")

    def full_disk(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new bytes")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["w.onnx"]


def test_a_new_file_gets_the_mode_asked_for(tmp_path: Path) -> None:
    """The recorder's private files (0o600) and the trained models (0o644) share it."""
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "private.json", b"{}", mode=0o600)
        write_atomic(tmp_path / "model.onnx", b"model")
    finally:
        os.umask(previous)
    assert (tmp_path / "private.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "model.onnx").stat().st_mode & 0o777 == 0o644
