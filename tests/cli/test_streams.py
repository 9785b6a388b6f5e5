"""Results on stdout, errors and progress on stderr, no Hugging Face progress bar, readable p."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from headscope.cli.app import format_p
from tests.cli.runner import run_cli

HF_BAR = ("Loading weights", "it/s]")


def test_results_go_to_stdout_and_the_rest_to_stderr(tmp_path):
    out = tmp_path / "s.csv"
    result = run_cli("scores", "--task", "seq-digits", "--n", "8", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "OV scores" in result.stdout and "n (keyword instances with a target): copy 32" in result.stdout
    assert result.stderr.splitlines() == [f"wrote {out}"]  # no bar, no warning: the one note
    assert "wrote" not in result.stdout


def test_an_error_goes_to_stderr_so_a_redirect_keeps_it_visible(tmp_path):
    """`headscope scores --task ioi --k 0 > out.txt` must not hide the error in the file."""
    result = run_cli("scores", "--task", "ioi", "--k", "0", "--n", "4")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: --k 0: k must be at least 1 (the top-k logits a hit is looked for in)"
    ]


def test_progress_shows_on_a_terminal_and_the_hugging_face_bar_never(tmp_path):
    """TTY_COMPATIBLE makes rich treat the pipe as a terminal, as a user's shell is."""
    env = dict(os.environ, TTY_COMPATIBLE="1")
    result = subprocess.run(
        [sys.executable, "-m", "headscope.cli", "evaluate", "--n", "4"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "loading model organism" in result.stderr and "building 4 prompts of task ioi" in result.stderr
    assert "loading model" not in result.stdout and "accuracy" in result.stdout
    assert not any(bar in result.stderr + result.stdout for bar in HF_BAR)


def test_p_values_print_as_in_the_figure(tmp_path):
    """The organism's name mover 1.0: p far below 0.001 prints as 6.1e-14, not 0.000."""
    out = tmp_path / "s.json"
    result = run_cli("scatter", "--head", "1.0", "--n", "30", "--n-boot", "50", "--out", str(out))
    assert result.returncode == 0, result.stderr
    stats = json.loads(out.read_text())["stats"]
    small = [row for row in stats if row["p"] is not None and row["p"] < 1e-3]
    assert small, stats
    for row in small:
        shown = format_p(row["p"])
        assert "e-" in shown and shown in result.stdout, (shown, result.stdout)
