"""EAP-IG against EAP at GPT-2-small size, and MIB's CPR / CMD of each ranking.

Run: `python -m benchmarks circuit_mib` (CPU, or HEADSCOPE_DEVICE=cuda). HEADSCOPE_BENCH_N prompts
(default 16), HEADSCOPE_BENCH_TASKS (default "seq-digits"; e.g. "induction,seq-digits,ioi"),
HEADSCOPE_BENCH_CURVE=0 to time the two methods only. The model is GPT-2-small-shaped (12 layers x
12 heads, d_model 768, 32,491 edges) with random weights and a word-level tokenizer over the task
vocabulary (benchmarks.ablation), so its f curves describe a random network, not GPT-2: the
figures are the cost of the measures and the ratio of the two methods' times. Each method scores
every edge (no exact check): the whole `edge_scores` call, the two runs of each batch included.
Exact patching of every edge (32,491 patched runs per batch) is not attempted on a CPU.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.ablation import gpt2_small_shaped
from headscope.models.loading import load_model
from headscope.scores.circuit import edges as E
from headscope.scores.circuit import faithfulness as F
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def measure(model, task: str, n: int, curve: bool) -> dict:
    dataset = build_dataset(get_task(task), model.tokens, n, 0)
    figures: dict = {"task": task, "prompts": dataset.n}
    evaluator = F.Evaluator(model, dataset, batch_size=n) if curve else None
    for method in ("eap", "eap-ig"):
        options = E.EdgeOptions(method=method, exact_top=0, batch_size=n)
        table, seconds = _timed(lambda o=options: E.edge_scores(model, dataset, o, progress=False))
        figures[f"{method}_s"] = seconds
        line = f"  {task}, {method}: {len(table)} edges in {seconds:.1f} s"
        if curve:
            found, curve_s = _timed(lambda t=table: F.ranking_curve(model, dataset, t, evaluator=evaluator))
            figures |= {f"{method}_cpr": found.cpr, f"{method}_cmd": found.cmd, f"{method}_curve_s": curve_s}
            line += (
                f"; CPR {found.cpr:.3f}, CMD {found.cmd:.3f} (m(M) {found.full:.3f}, m(empty) "
                f"{found.empty:.3f}; curve {curve_s:.1f} s)"
            )
        print(line, flush=True)
    figures["ratio"] = figures["eap-ig_s"] / figures["eap_s"]
    print(f"  {task}: eap-ig / eap time {figures['ratio']:.2f}x (goal: at most 3x)", flush=True)
    return figures


def main() -> None:
    device = os.environ.get("HEADSCOPE_DEVICE", "cpu")
    n = int(os.environ.get("HEADSCOPE_BENCH_N", "16"))
    tasks = os.environ.get("HEADSCOPE_BENCH_TASKS", "seq-digits").split(",")
    curve = os.environ.get("HEADSCOPE_BENCH_CURVE", "1") != "0"
    with tempfile.TemporaryDirectory() as tmp:
        model = load_model(str(gpt2_small_shaped(Path(tmp))), device=device)
        print(
            f"GPT-2-small shape, random weights, {device}, {n} prompts (a shared machine: other jobs may run)"
        )
        for task in tasks:
            measure(model, task, n, curve)
