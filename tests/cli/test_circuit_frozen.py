"""`headscope circuit` on a Gemma 2 model: computed, and labelled with the frozen-norm convention."""

from __future__ import annotations

import pandas as pd

from headscope.scores.circuit.edges import FROZEN_NORM_NOTE
from tests.cli.runner import run_cli
from tests.models.families import BY_NAME, save_family


def test_circuit_on_gemma2_says_its_convention(tmp_path):
    folder = save_family(BY_NAME["gemma2"], tmp_path / "gemma2")
    out = tmp_path / "edges.csv"
    done = run_cli(
        "circuit", "--model", str(folder), "--task", "ioi", "--n", "4", "--edges", "3",
        "--exact-top", "10", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert set(table["convention"]) == {"frozen-norm"}
    assert table["exact"].notna().sum() == 10
    assert " ".join(FROZEN_NORM_NOTE.split()) in " ".join(done.stdout.split())
    assert "APPROXIMATION: eap-ig" in done.stdout
