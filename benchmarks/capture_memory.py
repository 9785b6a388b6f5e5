"""Item 3: peak memory of headscope's capture for the scatter and attention scores against a
full `run_with_cache`, at N = 500 `ioi` prompts on a GPT-2-small-shaped model.

The model (12 layers x 12 heads, d_model 768, vocabulary 50257, random weights) is saved
once to a temporary directory with a word-level tokenizer: the task words, then filler
words up to 50257 tokens. Each variant runs in its own subprocess, which loads the model
and builds the dataset, then resets the kernel's peak-RSS mark (`/proc/self/clear_refs`),
runs the variant, and reports its peak RSS above what it held just before:

- `capture`: `capture(model, dataset, SCATTER_NEEDS | ROLE_ATTENTION_NEEDS)` (batches of 64,
  only the reduced activations kept);
- `run_with_cache`: `bridge.run_with_cache(tokens)` on all prompts at once, keeping the
  whole cache (the seed notes' way). Its memory grows with N (about 16 GB at N = 500 on
  this shape, more than the shared development machine can spare), so by default it is
  measured at N = 100 and 200 (HEADSCOPE_BENCH_CACHE_PROMPTS) and the line through those two
  is extended to N; with HEADSCOPE_BENCH_CACHE_PROMPTS=...,500 it is measured there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

N_PROMPTS = 500
TASK = "ioi"
VOCAB = 50257


def save_model(directory: Path) -> Path:
    """A random GPT-2-small-shaped model and a word-level tokenizer of VOCAB tokens."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from headscope.models.organism.tokenizer import word_level_tokenizer
    from headscope.tasks.vocabulary import task_vocabulary

    words = task_vocabulary()
    words += [f"filler{i}" for i in range(VOCAB - 1 - len(words))]
    tokenizer = word_level_tokenizer(words)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=768, n_layer=12, n_head=12)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _needs():
    from headscope.capture import Needs
    from headscope.scores.attention import ROLE_ATTENTION_NEEDS
    from headscope.scores.scatter import SCATTER_NEEDS

    union = {f.name: getattr(SCATTER_NEEDS, f.name) or getattr(ROLE_ATTENTION_NEEDS, f.name)
             for f in dataclasses.fields(Needs)}  # fmt: skip
    return Needs(**union)


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if dataclasses.is_dataclass(value):
        return [t for f in dataclasses.fields(value) for t in _tensors(getattr(value, f.name))]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict) or hasattr(value, "items"):
        return [t for _, v in value.items() for t in _tensors(v)]
    return []


def _kept_bytes(value) -> int:
    """Bytes of the distinct storages `value` holds (a cache lists some tensors under two names)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in _tensors(value)}
    return sum(storages.values())


def child(variant: str, directory: str, n: int) -> dict:
    """Run one variant; its peak RSS above the RSS just before it, in MB."""
    from headscope.capture import capture
    from headscope.models.loading import load_model
    from headscope.tasks.dataset import build_dataset
    from headscope.tasks.registry import get_task

    model = load_model(directory)
    dataset = build_dataset(get_task(TASK), model.tokens, n, seed=0)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        if variant == "capture":
            kept = capture(model, dataset, _needs())
        else:
            tokens = dataset.tokens[:, : int(dataset.lengths.max())]
            kept = model.bridge.run_with_cache(tokens)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    return {
        "variant": variant,
        "peak_mb": (peak - before) / 1024,
        "kept_mb": _kept_bytes(kept) / 2**20,
        "seconds": seconds,
        "prompt_tokens": int(dataset.lengths.max()),
        "prompts": n,
    }


def run_child(variant: str, directory: Path, n: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.capture_memory", "--child", variant, str(directory), str(n)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _extrapolated(points: list[dict], n: int) -> float:
    """Peak MB at n prompts, on the line through the two largest measured sizes."""
    (n1, p1), (n2, p2) = [(r["prompts"], r["peak_mb"]) for r in points[-2:]]
    return p2 + (p2 - p1) / (n2 - n1) * (n - n2)


def main() -> None:
    n = int(os.environ.get("HEADSCOPE_BENCH_PROMPTS", N_PROMPTS))
    sizes = [int(s) for s in os.environ.get("HEADSCOPE_BENCH_CACHE_PROMPTS", "100,200").split(",")]
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = save_model(Path(tmp) / "gpt2-small-shaped")
        runs = [run_child("capture", directory, m) for m in (sizes[0], n)]
        runs += [run_child("run_with_cache", directory, m) for m in sizes]
    print(
        f"-- capture for scatter + attention scores, {TASK} prompts, up to {runs[0]['prompt_tokens']} tokens"
    )
    for r in runs:
        print(
            f"   {r['variant']:15} N={r['prompts']:4}  peak {r['peak_mb']:7.0f} MB above the loaded model   "
            f"kept {r['kept_mb']:7.1f} MB   {r['seconds']:6.1f} s",
            flush=True,
        )
    capture_peak = runs[1]["peak_mb"]
    cached = [r for r in runs if r["variant"] == "run_with_cache"]
    if cached[-1]["prompts"] == n:
        full, how = cached[-1]["peak_mb"], "measured"
    else:
        full, how = _extrapolated(cached, n), f"extrapolated from N={sizes[-2]} and {sizes[-1]}"
    print(f"   run_with_cache at N={n}: {full:.0f} MB ({how}); capture at N={n}: {capture_peak:.0f} MB")
    print(f"   ratio          {full / capture_peak:8.1f} x")
    print(f"load average after: {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
    else:
        main()
