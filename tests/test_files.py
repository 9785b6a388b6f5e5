"""headscope.files: files and folders appear whole or not at all, with the usual permissions."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from headscope import files
from headscope.errors import HeadscopeError

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
        files.write_text(tmp_path / "a.txt", "x"),
        files.write_json(tmp_path / "b.json", {"a": 1}),
        files.write_table(tmp_path / "c.csv", pd.DataFrame({"a": [1]})),
    ]
    assert [_mode(p) for p in written] == [0o644, 0o644, 0o644]
    os.umask(0o077)
    assert _mode(files.write_text(tmp_path / "d.txt", "x")) == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = files.write_text(tmp_path / "a.txt", "old")

    def half(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.write_atomic(path, half)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_table_suffix_is_checked_before_anything_is_computed(tmp_path):
    assert files.check_table_path(tmp_path / "a.csv") == tmp_path / "a.csv"
    with pytest.raises(HeadscopeError, match=r"a\.txt: use a \.csv or \.json file name"):
        files.check_table_path(tmp_path / "a.txt")
    with pytest.raises(HeadscopeError, match="does not exist"):
        files.check_table_path(tmp_path / "missing" / "a.csv")


def test_folder_appears_whole_and_replaces_an_earlier_report(tmp_path, umask_022):
    out = tmp_path / "deep" / "report"
    files.write_folder_atomic(out, lambda tmp: _report(tmp, "one"), MARKER)
    assert _tree(out) == {MARKER: b"one", "t.csv": b"one"} and _mode(out) == 0o755
    files.write_folder_atomic(out, lambda tmp: (tmp / MARKER).write_text("two"), MARKER)
    assert _tree(out) == {MARKER: b"two"}  # replaced whole: the old CSV is gone
    assert sorted(os.listdir(out.parent)) == ["report"]


def test_a_failed_folder_write_keeps_the_earlier_report(tmp_path):
    out = tmp_path / "report"
    _report(out, "old")

    def half(tmp):
        (tmp / MARKER).write_text("new")
        raise KeyboardInterrupt  # Ctrl-C part-way

    with pytest.raises(KeyboardInterrupt):
        files.write_folder_atomic(out, half, MARKER)
    assert _tree(out) == {MARKER: b"old", "t.csv": b"old"}
    assert os.listdir(tmp_path) == ["report"]


def test_without_an_atomic_exchange_the_fallback_swap_still_replaces(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    out = tmp_path / "report"
    _report(out, "old")
    files.write_folder_atomic(out, lambda tmp: _report(tmp, "new"), MARKER)
    assert _tree(out) == {MARKER: b"new", "t.csv": b"new"} and os.listdir(tmp_path) == ["report"]


def test_a_folder_of_other_files_or_a_file_is_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(HeadscopeError, match="holds files but no results.json"):
        files.write_folder_atomic(tmp_path / "mine", lambda tmp: None, MARKER)
    (tmp_path / "file").write_text("x")
    with pytest.raises(HeadscopeError, match="it is a file"):
        files.check_folder_replaceable(tmp_path / "file", MARKER)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    (tmp_path / "empty").mkdir()
    assert files.check_folder_replaceable(tmp_path / "empty", MARKER) == tmp_path / "empty"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_parent_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(HeadscopeError, match="read-only"):
            files.check_folder_replaceable(locked / "a" / "report", MARKER)
    finally:
        locked.chmod(0o755)


KILLED_WRITER = """
import sys, time
from pathlib import Path
from headscope.files import write_folder_atomic

def slow(tmp):
    (tmp / "results.json").write_text("new")
    print("half", flush=True)
    time.sleep(60)

write_folder_atomic(Path(sys.argv[1]), slow, "results.json")
"""


def test_sigkill_part_way_leaves_the_earlier_folder_and_the_next_run_cleans_up(tmp_path):
    out = tmp_path / "report"
    _report(out, "old")
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(KILLED_WRITER))
    child = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "half"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert _tree(out) == {MARKER: b"old", "t.csv": b"old"}
    (leftover,) = [p.name for p in tmp_path.iterdir() if p.name.startswith(".report.partial-")]
    assert leftover.startswith(f".report.partial-{child.pid}-")
    files.write_folder_atomic(out, lambda tmp: _report(tmp, "next"), MARKER)
    assert sorted(os.listdir(tmp_path)) == ["report", "writer.py"]
    assert _tree(out) == {MARKER: b"next", "t.csv": b"next"}


def test_a_live_runs_temporary_folder_is_left_alone(tmp_path):
    mine = tmp_path / f".report.partial-{os.getpid()}-abc"
    mine.mkdir()
    files.write_folder_atomic(tmp_path / "report", lambda tmp: _report(tmp, "x"), MARKER)
    assert mine.is_dir()


def test_a_symlinked_out_folder_is_replaced_where_it_points(tmp_path):
    real = tmp_path / "store" / "report"
    _report(real, "old")
    link = tmp_path / "report"
    link.symlink_to(real, target_is_directory=True)
    assert files.write_folder_atomic(link, lambda tmp: _report(tmp, "new"), MARKER) == real
    assert link.is_symlink() and _tree(link) == {MARKER: b"new", "t.csv": b"new"}
    assert sorted(os.listdir(real.parent)) == ["report"]
