"""Issue 32: the atlas (weights streamed) on the shapes of the field's models, whole process.

Qwen-2.5-0.5B (24 x 14 heads, 2 kv heads, vocabulary 151,936), Gemma-2-2B (26 x 8 heads, 4 kv heads,
vocabulary 256,000, soft-capping) and Llama-3.1-8B (32 x 32 heads, 8 kv heads, vocabulary 128,256):
each architecture's real config (sizes from the published config.json files), random weights
written once into a bfloat16 safetensors folder, one shard per layer (made and written one layer
at a time, so the benchmark never holds the model), with a word-level tokenizer of the task words
and fillers up to the vocabulary. Each run is `headscope atlas --model DIR --stream --dtype D`
as its own process under `/usr/bin/time -v` (wall seconds, peak RSS).

Random weights put every target far from the top and flatter the kernel's early exit (a real
SmolLM2-135M decides 96% of (head, row) pairs in the first block of columns: results/ov_exit.md).

Run: `python -m benchmarks.field_shapes --shapes qwen-0.5b,gemma-2-2b --folder /tmp/field`
(`--dtype bfloat16` or float32; `--threads 2`). The folders are kept for reruns.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

WEIGHT_STD = 0.02
SHAPES: dict[str, tuple[str, dict]] = {
    "qwen-0.5b": (
        "Qwen2Config",
        dict(
            hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
            num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6,
            rope_theta=1e6, tie_word_embeddings=True,
        ),
    ),
    "gemma-2-2b": (
        "Gemma2Config",
        dict(
            hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
            num_key_value_heads=4, head_dim=256, vocab_size=256000, max_position_embeddings=8192,
            attn_logit_softcapping=50.0, final_logit_softcapping=30.0, query_pre_attn_scalar=256,
            sliding_window=4096, tie_word_embeddings=True,
        ),
    ),
    "llama-3.1-8b": (
        "LlamaConfig",
        dict(
            hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
            num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
            rope_theta=500000.0, tie_word_embeddings=False,
        ),
    ),
}  # fmt: skip
LAYER = re.compile(r"\.layers\.(\d+)\.")
# Qwen2's tokenizer class rebuilds a byte-level BPE from the file's vocabulary and merges (a
# word-level file then splits every word into letters): its shape gets GPT-2's BPE, padded
BYTE_LEVEL = frozenset({"qwen-0.5b"})


def _config(shape: str, tokenizer_size: int):
    import transformers

    name, sizes = SHAPES[shape]
    vocab = max(sizes["vocab_size"], tokenizer_size)
    return getattr(transformers, name)(**(sizes | dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0)))


def _tokenizer(vocab: int, shape: str = ""):
    if shape in BYTE_LEVEL:
        from benchmarks.report import padded_gpt2_tokenizer

        return padded_gpt2_tokenizer(vocab)
    from headscope.models.organism.tokenizer import word_level_tokenizer
    from headscope.tasks.vocabulary import task_vocabulary

    words = task_vocabulary()
    return word_level_tokenizer(words + [f"filler{i}" for i in range(vocab - 1 - len(words))])


def _random(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Matrices of std WEIGHT_STD, norm gains near 1 (Gemma's gains are offsets: near 0 works too)."""
    if len(shape) > 1:
        return (torch.randn(shape, generator=generator) * WEIGHT_STD).to(torch.bfloat16)
    return (1 + 0.1 * torch.randn(shape, generator=generator)).to(torch.bfloat16)


def save_shape(shape: str, directory: Path) -> Path:
    """The folder of `shape` (written once: kept where it is complete)."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    if (directory / "model.safetensors.index.json").is_file():
        return directory
    tokenizer = _tokenizer(SHAPES[shape][1]["vocab_size"], shape)
    config = _config(shape, len(tokenizer))
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    groups: dict[str, list[str]] = {}
    for name in shapes:
        found = LAYER.search(name)
        groups.setdefault(f"layer{int(found[1]):03d}" if found else "outer", []).append(name)
    generator = torch.Generator().manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    index = {}
    for group, names in sorted(groups.items()):
        file = f"model-{group}.safetensors"
        save_file({n: _random(shapes[n], generator) for n in names}, str(directory / file), {"format": "pt"})
        index |= {name: file for name in names}
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    record = {"metadata": {}, "weight_map": index}
    (directory / "model.safetensors.index.json").write_text(json.dumps(record, indent=1))
    return directory


def run_atlas(directory: Path, dtype: str, threads: int, out: Path) -> dict:
    """`headscope atlas --stream` on the folder as its own process: wall seconds, peak RSS (GB)."""
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "headscope", "atlas", "--model", str(directory),
        "--stream", "--dtype", dtype, "--threads", str(threads), "--out", str(out),
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"atlas on {directory} failed:\n{done.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])
    return {"wall_s": round(wall, 1), "peak_gb": round(peak_kb / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="qwen-0.5b", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/field"))
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    for shape in args.shapes.split(","):
        start = time.perf_counter()
        directory = save_shape(shape, args.folder / shape)
        size = sum(f.stat().st_size for f in directory.glob("*.safetensors")) / 2**30
        print(f"-- {shape}: {size:.1f} GB of bfloat16 safetensors ({time.perf_counter() - start:.0f} s)")
        found = run_atlas(directory, args.dtype, args.threads, args.folder / f"{shape}-atlas")
        took = f"{found['wall_s']} s, peak RSS {found['peak_gb']} GB"
        print(f"   headscope atlas --stream --dtype {args.dtype}: {took}")
        print(f"   load average now: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
