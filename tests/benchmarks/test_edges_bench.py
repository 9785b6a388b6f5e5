"""The edge benchmark runs tiny: the batched exact patches equal the straightforward loop's."""

from benchmarks.edges import compare

from tests.conftest import save_tiny_gpt2


def test_edge_benchmark_tiny(tmp_path, vocabulary, capsys):
    folder = save_tiny_gpt2(tmp_path / "tiny", vocabulary, n_layer=2, n_head=2, n_embd=16)
    figures = compare(str(folder), n=3, device="cpu", top=12)
    assert figures["top"] == 12 and figures["edges"] > 12
    assert figures["largest_difference"] < 1e-4
    assert "straightforward loop" in capsys.readouterr().out
