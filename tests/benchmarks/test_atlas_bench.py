"""The atlas benchmark runs tiny: the cut GPT-2 tokenizer has the asked size, and the atlas's ranks
agree with the benchmark's per-head loop (all but float-rounding ties)."""

from benchmarks.atlas import cut_gpt2_tokenizer, save_135m_shaped, side_by_side


def test_cut_tokenizer_has_the_asked_size():
    tokenizer = cut_gpt2_tokenizer(4096)
    assert len(tokenizer) == 4096
    assert max(tokenizer.encode(" Parisian republicans")) < 4096


def test_atlas_benchmark_tiny(tmp_path):
    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=8192)  # fmt: skip
    folder = save_135m_shaped(tmp_path / "model", **shape)
    stats = side_by_side(folder, sample=2)
    assert stats["heads"] == 8 and stats["sampled"] == 2
    assert stats["compared"] == 2 * 2 * stats["rows"] and stats["rows"] > 100
    assert stats["unexplained"] == 0
