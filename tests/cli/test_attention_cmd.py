"""`headscope attention` run as a subprocess on the tiny random model."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from headscope.capture import capture
from headscope.cli import main
from headscope.scores.attention import DETECTOR_NEEDS, head_detectors
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.cli.test_tasks_cmd import run_cli


def test_attention_json_holds_the_true_pattern_and_role_attention(tmp_path, tiny_dir, tiny_model):
    out = tmp_path / "attention.json"
    args = ("--model", str(tiny_dir), "--task", "ioi", "--heads", "1.2,0.3", "--prompt", "2", "--n", "6")
    result = run_cli("attention", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "head 1.2" in result.stdout and "attention from end" in result.stdout
    data = json.loads(out.read_text())
    dataset = build_dataset(get_task("ioi"), tiny_model.tokens, 6, seed=0)
    length = int(dataset.lengths[2])
    assert data["prompt"] == dataset.prompts[2].text and len(data["tokens"]) == length
    _, cache = tiny_model.bridge.run_with_cache(dataset.tokens[2:3, :length])
    expected = cache["blocks.1.attn.hook_pattern"][0, 2]  # [q, k]
    rows = [r for r in data["patterns"] if (r["layer"], r["head"]) == (1, 2)]
    assert len(rows) == length * (length + 1) // 2
    for row in rows:
        assert row["attention"] == pytest.approx(float(expected[row["destination"], row["source"]]), abs=1e-6)
    assert {r["key_role"] for r in data["role_attention"]} >= {"IO", "S", "S1", "S2"}
    assert len({(r["layer"], r["head"]) for r in data["role_attention"]}) == 8


def test_attention_on_induction_writes_detectors_html_and_csv(tmp_path, tiny_dir, tiny_model):
    common = ("--model", str(tiny_dir), "--task", "induction", "--heads", "0.0", "--n", "4")
    page = tmp_path / "a.html"
    result = run_cli("attention", *common, "--out", str(page))
    assert result.returncode == 0, result.stderr
    assert "head detectors" in result.stdout
    text = page.read_text()
    assert "Plotly.newPlot" in text and "<script src=" not in text and "Head detectors" in text
    table = tmp_path / "a.csv"
    assert run_cli("attention", *common, "--out", str(table)).returncode == 0
    assert table.read_text().startswith("layer,head,destination")
    assert (tmp_path / "a_role_attention.csv").read_text().startswith("layer,head,query_role,key_role")
    written = pd.read_csv(tmp_path / "a_detectors.csv")
    dataset = build_dataset(get_task("induction"), tiny_model.tokens, 4, seed=0)
    expected = head_detectors(dataset, capture(tiny_model, dataset, DETECTOR_NEEDS))
    pd.testing.assert_frame_equal(written, expected, check_dtype=False, atol=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [(("--heads", "7.0"), "head 7.0 does not exist"), (("--heads", "0.0", "--prompt", "9"), "--prompt 9")],
)
def test_bad_head_or_prompt_is_one_clear_line(tiny_dir, extra, message, capsys):
    code = main(["attention", "--model", str(tiny_dir), "--n", "3", *extra])  # in-process: fast
    printed = " ".join(capsys.readouterr().err.split())  # errors go to stderr
    assert code == 2
    assert message in printed and "Traceback" not in printed


def test_pattern_lines_are_compact():
    from headscope.cli.attention_cmd import pattern_lines
    from headscope.scores.attention import pattern_frame

    frame = pattern_frame(torch.tensor([[1.0, 0.0], [0.254, 0.746]]), ["<s>", "Mary"])
    lines = pattern_lines(frame)
    assert lines[1].split() == ["0:<s>", "**"]
    assert lines[2].split() == ["1:Mary", "25", "75"]
