"""Issue 32, weights streamed: peak memory and time of reading a model's Weights from its
safetensors files one tensor at a time (`models.streamed.stream_model`) against booting the whole
model (`load_model`, float32), and of the head atlas both ways.

The model has a Llama shape of about 300M parameters (SHAPE: 20 layers x 16 heads, 4 key/value
heads, d_model 1024, MLP 2816, vocabulary 32,000, untied unembedding), random weights written
tensor by tensor in bfloat16 to a temporary folder (as checkpoints are shipped), with a
word-level tokenizer of the task words and fillers. Each variant runs in its own process; the
figures are that process's peak RSS (VmHWM: imports, model, scores, everything) and its RSS after
the imports (torch, transformers, TransformerLens), with the seconds the variant itself took:

- `stream`, `stream-bf16`: stream_model(folder) in float32 / bfloat16;
- `load`: load_model(folder) (the bridge booted in float32, then its Weights read);
- `atlas-stream`, `atlas-load`: hs-style atlas (`atlas_scores`, the whole relation library,
  `token` embedding) on each (HEADSCOPE_BENCH_STREAM_ATLAS=0 leaves them out).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SHAPE = dict(
    hidden_size=1024,
    num_hidden_layers=20,
    num_attention_heads=16,
    num_key_value_heads=4,
    intermediate_size=2816,
    max_position_embeddings=2048,
    tie_word_embeddings=False,
)
VOCAB = 32000
WEIGHT_STD = 0.02
VARIANTS = ("stream", "stream-bf16", "load")
ATLAS_VARIANTS = ("atlas-stream", "atlas-load")


def save_model(directory: Path) -> tuple[Path, int]:
    """A random Llama-shaped model in bfloat16 safetensors and a word-level tokenizer; its size
    in parameters. The tensors are made one at a time from the config's own parameter shapes."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, LlamaConfig

    from headscope.models.organism.tokenizer import word_level_tokenizer
    from headscope.tasks.vocabulary import task_vocabulary

    words = task_vocabulary()
    tokenizer = word_level_tokenizer(words + [f"filler{i}" for i in range(VOCAB - 1 - len(words))])
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=0, eos_token_id=0, **SHAPE)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    tensors = {
        name: (
            torch.randn(shape, generator=generator) * (WEIGHT_STD if len(shape) > 1 else 0.1)
            + (len(shape) == 1)
        ).to(torch.bfloat16)
        for name, shape in shapes.items()
    }  # matrices of std WEIGHT_STD, norm gains near 1
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory, sum(t.numel() for t in tensors.values())


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _weights_mb(weights) -> float:
    import dataclasses

    tensors = [getattr(weights, f.name) for f in dataclasses.fields(weights)]
    storages = {
        t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if torch.is_tensor(t)
    }
    return sum(storages.values()) / 2**20


def child(variant: str, directory: str) -> dict:
    """Run one variant in this (fresh) process; its peak RSS, RSS after imports, seconds."""
    import transformer_lens  # noqa: F401  (imported before the baseline, as either path does)

    from headscope.models.loading import load_model
    from headscope.models.streamed import stream_model
    from headscope.scores.atlas import atlas_scores

    imported = _status_mb("VmRSS")
    start = time.perf_counter()
    if variant in ("stream", "atlas-stream"):
        model = stream_model(directory)
    elif variant == "stream-bf16":
        model = stream_model(directory, "bfloat16")
    else:
        model = load_model(directory, threads=torch.get_num_threads())
    loaded = time.perf_counter() - start
    rows = 0
    if variant.startswith("atlas"):
        rows = len(atlas_scores(model).table)
    return {
        "variant": variant,
        "peak_mb": _status_mb("VmHWM"),
        "file_mb": _status_mb("RssFile"),  # of the RSS at the end: file pages (the mapped checkpoint)
        "imports_mb": imported,
        "weights_mb": _weights_mb(model.weights),
        "load_s": loaded,
        "total_s": time.perf_counter() - start,
        "atlas_rows": rows,
    }


def run_child(variant: str, directory: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.streamed", "--child", variant, str(directory)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    variants = VARIANTS + (
        ATLAS_VARIANTS if os.environ.get("HEADSCOPE_BENCH_STREAM_ATLAS", "1") != "0" else ()
    )
    print(
        f"load average before: {os.getloadavg()[0]:.1f}; torch threads {torch.get_num_threads()}", flush=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        directory, n_params = save_model(Path(tmp) / "llama-300m-shaped")
        size = (directory / "model.safetensors").stat().st_size / 2**20
        print(f"-- Llama shape {SHAPE}, vocabulary {VOCAB}: {n_params / 1e6:.0f}M parameters, {size:.0f} MB")
        for variant in variants:
            print(result_line(run_child(variant, directory)), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


def result_line(r: dict) -> str:
    """One variant's figures (a `run_child` record), as the benchmark prints them."""
    atlas = f"   atlas {r['atlas_rows']} rows" if r["atlas_rows"] else ""
    memory = f"peak RSS {r['peak_mb']:6.0f} MB (imports {r['imports_mb']:4.0f}"
    memory += f", Weights {r['weights_mb']:4.0f}, file pages at the end {r['file_mb']:4.0f})"
    took = f"read {r['load_s']:5.1f} s   total {r['total_s']:5.1f} s"
    return f"   {r['variant']:12} {memory}   {took}{atlas}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], sys.argv[3])))
    else:
        main()
