"""headscope.io: files and folders appear whole or not at all, with the usual permissions."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from headscope import io

MARKER = "results.json"


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _report(folder, text: str) -> None:
    """A stand-in report: the marker file plus a CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(text)
    (folder / "t.csv").write_text(text)


def _tree(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_files_get_the_usual_mode_not_mkstemps_0600(tmp_path, umask_022):
    written = [
        io.write_text(tmp_path / "a.txt", "x"),
        io.write_json(tmp_path / "b.json", {"a": 1}),
        io.write_table(tmp_path / "c.csv", pd.DataFrame({"a": [1]})),
    ]
    assert [_mode(p) for p in written] == [0o644, 0o644, 0o644]
    os.umask(0o077)
    assert _mode(io.write_text(tmp_path / "d.txt", "x")) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = io.write_text(tmp_path / "a.txt", "old")

    def half(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        io.write_atomic(path, half)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
