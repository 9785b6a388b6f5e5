"""The whole-process OV benchmark runs tiny: headscope's one invocation and the reference script,
each its own process, give the same hits and n for every head, relation and sign."""

from benchmarks.ov_cli import compare, report

from tests.conftest import save_tiny_gpt2


def test_ov_cli_benchmark_tiny(tmp_path, vocabulary, capsys):
    folder = save_tiny_gpt2(tmp_path / "tiny", vocabulary, n_layer=2, n_head=2, n_embd=16)
    words = [w for w in vocabulary if w.isalpha()][:100]  # 100 keywords: two prompts of n_ctx 64
    figures = compare(folder, words, runs=1)
    assert figures["compared"] == 2 * 2 * 3 and figures["rows"] == figures["compared"]
    assert figures["mismatches"] == []
    report(figures, "tiny")
    assert "0 differ" in capsys.readouterr().out
