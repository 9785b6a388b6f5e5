"""How much of the OV kernel's time on a 262k vocabulary is the rank count and top-k.

Run: `python -m benchmarks ov_vocab` (or `python -m benchmarks.ov_vocab --rows 400 2000 --heads 4`).
Random weights of a 270M-class shape (d_model 640, d_head 256, vocabulary 262,144; one layer of
`--heads` heads: every head costs the same), `--rows` residual rows with two relations of two
target tokens each, both signs, top-5, one thread. Each row count is timed twice in one process:
the whole kernel (`ov_ranks`), and the same kernel with the per-block count and top-k
(`Accumulator.add`) left out, so only the matrix products remain; the difference is the count's
share. The two use the same products, so the ratio holds on a busy machine better than either time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from benchmarks.ov import random_weights
from headscope.scores import ov_kernel
from headscope.scores.ov_kernel import Targets, ov_ranks

VOCAB, D_MODEL, D_HEAD = 262144, 640, 256


def timed(weights, x, targets, heads, counted: bool) -> float:
    add = ov_kernel.Accumulator.add
    if not counted:
        ov_kernel.Accumulator.add = lambda self, *args, **kwargs: None
    try:
        start = time.perf_counter()
        ov_ranks(weights, x, targets, heads, 5, (1, -1))
        return time.perf_counter() - start
    finally:
        ov_kernel.Accumulator.add = add


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ov_vocab")
    parser.add_argument("--rows", type=int, nargs="+", default=[400, 2000])
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args(argv or [])
    torch.set_num_threads(1)
    weights = random_weights(1, args.heads, D_MODEL, D_HEAD, VOCAB, seed=0)
    heads = [(0, h) for h in range(args.heads)]
    g = torch.Generator().manual_seed(1)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.heads} heads, vocabulary {VOCAB}, one thread")
    for rows in args.rows:
        x = torch.randn(rows, D_MODEL, generator=g) * 0.5
        targets = Targets(
            torch.randint(0, VOCAB, (rows, 2, 2), generator=g), torch.ones(rows, 2, dtype=torch.bool)
        )
        whole = timed(weights, x, targets, heads, counted=True)
        products = timed(weights, x, targets, heads, counted=False)
        form = "factored" if ov_kernel.factored_is_cheaper(weights, rows) else "direct"
        print(
            f"rows {rows:5d} ({form}): whole {whole:6.2f} s, products only {products:6.2f} s, "
            f"count and top-k {whole - products:5.2f} s = {100 * (whole - products) / whole:.0f}%",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
