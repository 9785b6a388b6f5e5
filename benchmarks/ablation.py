"""Full head+MLP mean-ablation sweep: the resumed, batched sweep vs one full hooked pass per component.

Run: `python -m benchmarks ablation` (CPU, or set HEADSCOPE_DEVICE=cuda). Prints both times, their
ratio and the largest difference between the two sets of numbers, on a GPT-2-small-shaped model
with random weights (built locally, word-level tokenizer over the task vocabulary) and on the
organism when its weights are installed.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from headscope.models.loading import ORGANISM_DIR, load_model
from headscope.models.organism.tokenizer import word_level_tokenizer
from headscope.scores.ablation import AblationOptions, knockout_sweep
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from headscope.tasks.vocabulary import task_vocabulary

TASK = "seq-digits"


def gpt2_small_shaped(directory: Path) -> Path:
    """GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab 50257), random weights, saved with a tokenizer."""
    tokenizer = word_level_tokenizer(task_vocabulary())
    config = GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def compare(label: str, spec: str, n: int, device: str) -> None:
    model = load_model(spec, device=device)
    dataset = build_dataset(get_task(TASK), model.tokens, n, 0)
    options = AblationOptions(method="mean", batch_size=n)
    timings, results = {}, {}
    for fast in (True, False):
        start = time.perf_counter()
        _, metrics, _ = knockout_sweep(model, dataset, options, fast=fast, progress=False)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        timings[fast], results[fast] = time.perf_counter() - start, metrics
        print(f"  ({'fast' if fast else 'straightforward'} done in {timings[fast]:.2f} s)", flush=True)
    components = len(results[True])
    print(
        f"{label}: {components} components, {dataset.n} prompts of {TASK}, {device}\n"
        f"  straightforward (one full hooked pass each): {timings[False]:.2f} s\n"
        f"  fast (resumed, batched, end-only unembed):   {timings[True]:.2f} s\n"
        f"  ratio {timings[False] / timings[True]:.2f}x, "
        f"largest difference {float((results[True] - results[False]).abs().max()):.2e}",
        flush=True,
    )


def main() -> None:
    device = os.environ.get("HEADSCOPE_DEVICE", "cpu")
    n = int(os.environ.get("HEADSCOPE_BENCH_N", "4"))
    with tempfile.TemporaryDirectory() as tmp:
        compare("GPT-2-small-shaped, random weights", str(gpt2_small_shaped(Path(tmp))), n, device)
    if (ORGANISM_DIR / "config.json").is_file():
        compare("organism", "organism", 4 * n, device)
    else:
        print("organism: weights not installed yet, skipped")
