"""Edge attribution at GPT-2-small size: `eap` on every edge (time, memory), then `exact` patching
of its top 100 edges, batched vs the straightforward loop (complete forward passes per edge).

Run: `python -m benchmarks edges` (CPU, or HEADSCOPE_DEVICE=cuda; HEADSCOPE_BENCH_N prompts,
default 4). The model is GPT-2-small-shaped (12 layers x 12 heads, d_model 768) with random
weights and a word-level tokenizer over the task vocabulary, built locally. Memory on CPU is the
growth of the process's peak resident set over the step (ru_maxrss), on CUDA the peak allocated.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.ablation import gpt2_small_shaped
from headscope.models.loading import load_model
from headscope.scores.circuit import edges as E
from headscope.scores.circuit import exact
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task

TASK = "seq-digits"
TOP = 100


def _peak_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _timed(device: str, fn):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before, start = _peak_mb(device), time.perf_counter()
    value = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return value, time.perf_counter() - start, _peak_mb(device) - (0 if device.startswith("cuda") else before)


def reference_sums(model, dataset, chosen, batch_size: int) -> torch.Tensor:
    """The straightforward loop: each edge on its own, complete hooked forward passes."""
    runner = E.prepared(model)
    sums = torch.zeros(len(chosen), dtype=torch.float64)
    for run in E.batch_runs(model, runner, dataset, batch_size):
        for i, edge in enumerate(chosen):
            sums[i] += exact.reference_edge_sum(runner, run.clean, run.deltas[edge.source], edge, run.batch)
    return sums / dataset.n


def batched_sums(model, dataset, chosen, batch_size: int) -> torch.Tensor:
    runner = E.prepared(model)
    sums = torch.zeros(len(chosen), dtype=torch.float64)
    for run in E.batch_runs(model, runner, dataset, batch_size):
        sums += exact.exact_sums(runner, run.clean, run.deltas, chosen, run.batch)
    return sums / dataset.n


def compare(spec: str, n: int, device: str, top: int = TOP) -> dict:
    model = load_model(spec, device=device)
    dataset = build_dataset(get_task(TASK), model.tokens, n, 0)
    options = E.EdgeOptions(method="eap", exact_top=0, batch_size=n)
    table, eap_s, eap_mb = _timed(device, lambda: E.edge_scores(model, dataset, options, progress=False))
    chosen = E.edges_of(table.head(top), model)
    fast, fast_s, _ = _timed(device, lambda: batched_sums(model, dataset, chosen, n))
    slow, slow_s, _ = _timed(device, lambda: reference_sums(model, dataset, chosen, n))
    figures = dict(
        edges=len(table), prompts=dataset.n, eap_s=eap_s, eap_peak_mb=eap_mb, top=len(chosen),
        batched_s=fast_s, loop_s=slow_s, largest_difference=float((fast - slow).abs().max()),
    )  # fmt: skip
    print(
        f"{model.n_layers} layers x {model.n_heads} heads, d_model {model.cfg.d_model}: {len(table)} edges, "
        f"{dataset.n} prompts of {TASK}, {device} (a shared machine: other jobs may be running)\n"
        f"  eap, every edge: {eap_s:.2f} s, peak memory +{eap_mb:.0f} MB\n"
        f"  exact, top {len(chosen)} edges by eap: batched {fast_s:.2f} s, "
        f"straightforward loop {slow_s:.2f} s "
        f"(ratio {slow_s / fast_s:.2f}x), largest difference {figures['largest_difference']:.2e}",
        flush=True,
    )
    return figures


def main() -> None:
    device = os.environ.get("HEADSCOPE_DEVICE", "cpu")
    n = int(os.environ.get("HEADSCOPE_BENCH_N", "4"))
    with tempfile.TemporaryDirectory() as tmp:
        compare(str(gpt2_small_shaped(Path(tmp))), n, device)
