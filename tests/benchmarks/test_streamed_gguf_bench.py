"""The GGUF streaming benchmark's file on a tiny Llama shape: it streams and loads to the same Weights."""

import torch
from benchmarks.streamed import run_child
from benchmarks.streamed_gguf import save_gguf

from headscope.models.loading import load_model
from headscope.models.streamed import stream_model

TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)


def test_the_benchmark_file_streams_to_the_weights_it_loads_to(tmp_path):
    path, n_params = save_gguf(tmp_path / "tiny.gguf", "Q8_0", TINY)
    assert n_params > 2 * 50257 * 64  # embedding and unembedding, GPT-2's vocabulary
    streamed, loaded = stream_model(str(path)).weights, load_model(str(path)).weights
    for field in ("W_V", "W_O", "W_U", "ln1_w", "lnf_w"):
        torch.testing.assert_close(getattr(streamed, field), getattr(loaded, field), rtol=1e-6, atol=1e-6)
    run = run_child("stream", path)
    assert run["peak_mb"] >= run["imports_mb"] > 0 and run["weights_mb"] > 0
