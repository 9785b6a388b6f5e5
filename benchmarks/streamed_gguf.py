"""Issue 32, a GGUF file streamed: peak memory and time of reading a model's Weights from a GGUF
file one tensor at a time (`stream_model(file.gguf)`: each tensor dequantised on its own, the
unembedding a block of rows at a time) against loading it whole (`load_model(file.gguf)`:
transformers dequantises every tensor into a float32 model, booted in TransformerLens).

The file has the Llama shape of benchmarks/streamed.py (about 300M parameters: 20 layers x 16
heads, 4 key/value heads, d_model 1024, MLP 2816, untied unembedding) with GPT-2's real tokenizer
(50,257 tokens, benchmarks/gpt2_tokenizer), random weights written tensor by tensor in Q8_0 (the
norms in F32, as llama.cpp writes them) to a temporary folder. Each variant runs in its own
process (benchmarks/streamed.py's `child`): peak RSS (VmHWM), RSS after the imports, seconds.

`python -m benchmarks.streamed_gguf [--type Q8_0|F16]` (HEADSCOPE_BENCH_STREAM_ATLAS=0: no atlas).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks.gpt2_shape import TOKENIZER_DIR, gpt2_tokenizer
from benchmarks.streamed import ATLAS_VARIANTS, SHAPE, VARIANTS, WEIGHT_STD, result_line, run_child

EOS_ID = 50256


def _write_tokenizer(writer) -> None:
    """GPT-2's byte-level BPE as llama.cpp stores it: the token list, the merges, the token types."""
    import gguf

    tokenizer = gpt2_tokenizer()
    tokens = [token for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])]
    lines = (TOKENIZER_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    normal, control = gguf.TokenType.NORMAL, gguf.TokenType.CONTROL
    writer.add_token_types([control if i == EOS_ID else normal for i in range(len(tokens))])
    writer.add_token_merges([line for line in lines[1:] if line])  # first line: a version header
    writer.add_bos_token_id(EOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(False)


def _write_config(writer, shape: dict, vocab: int) -> None:
    writer.add_context_length(shape["max_position_embeddings"])
    writer.add_embedding_length(shape["hidden_size"])
    writer.add_block_count(shape["num_hidden_layers"])
    writer.add_feed_forward_length(shape["intermediate_size"])
    writer.add_head_count(shape["num_attention_heads"])
    writer.add_head_count_kv(shape["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(shape["hidden_size"] // shape["num_attention_heads"])
    writer.add_vocab_size(vocab)


def save_gguf(path: Path, qtype_name: str = "Q8_0", shape: dict = SHAPE) -> tuple[Path, int]:
    """A random GGUF file of a Llama `shape` (2-D weights in `qtype_name`, norms F32); its parameter
    count. Each tensor is made in float32 from the config's own shapes and quantised on its own."""
    import gguf
    from transformers import AutoModelForCausalLM, LlamaConfig

    vocab = len(gpt2_tokenizer())
    config = LlamaConfig(vocab_size=vocab, bos_token_id=EOS_ID, eos_token_id=EOS_ID, **shape)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, shape["num_hidden_layers"])
    qtype, generator = gguf.GGMLQuantizationType[qtype_name], np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("headscope benchmark llama 300m")
    _write_config(writer, shape, vocab)
    _write_tokenizer(writer)
    for name, size in shapes.items():
        base, suffix = name.rsplit(".", 1)
        if len(size) == 1:  # a norm's gain, near 1
            writer.add_tensor(
                f"{names.get_name(base)}.{suffix}", 1 + 0.1 * generator.standard_normal(size, np.float32)
            )
            continue
        values = WEIGHT_STD * generator.standard_normal(size, np.float32)
        data = gguf.quants.quantize(values, qtype)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, sum(int(np.prod(size)) for size in shapes.values())


def main() -> None:
    qtype = sys.argv[sys.argv.index("--type") + 1] if "--type" in sys.argv else "Q8_0"
    variants = VARIANTS + (
        ATLAS_VARIANTS if os.environ.get("HEADSCOPE_BENCH_STREAM_ATLAS", "1") != "0" else ()
    )
    print(
        f"load average before: {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}", flush=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        path, n_params = save_gguf(Path(tmp) / f"llama-300m-shaped.{qtype}.gguf", qtype)
        size = path.stat().st_size / 2**20
        what = f"{n_params / 1e6:.0f}M parameters, {qtype} {size:.0f} MB"
        print(f"-- Llama shape {SHAPE}, GPT-2 vocabulary: {what}", flush=True)
        for variant in variants:
            print(result_line(run_child(variant, path)), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
