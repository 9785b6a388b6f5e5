"""What a report's phases cost, predicted from the shapes before anything runs.

Each phase's matrix-product FLOPs are counted from the model's shape and the phase's sample size
(the way `benchmarks/flops.py` counts a finished run), and turned into seconds with this
machine's float32 product rate, measured at the start in a fraction of a second
(`product_rate`), and the share of that rate each phase reached in the measured runs of
`benchmarks/results/report.md` (`EFFICIENCY`). Work that is not products (Python per batch or per
component, the page) is a fixed time per call (`CALL_SECONDS`), fitted on the organism's report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from headscope.models.loading import Model
from headscope.scores.circuit import mib

# Share of the product rate each phase reached (benchmarks/results/report.md: GPT-2, 135M, 270M
# shapes, 2 threads: OV 0.38-0.80, forward 0.52-0.71, knockouts 0.55-0.72, circuit 0.25-0.44; QK
# attribution 0.76-0.79 of one GPT-2-small-shaped head at layers 5 and 11 on 8 prompts).
EFFICIENCY = {"OV pass": 0.5, "capture": 0.6, "knockouts": 0.6, "circuit": 0.3, "QK": 0.7, "scatter": 0.2}
# Seconds of work besides the products, per call of the phase (fitted on the organism's report).
CALL_SECONDS = {
    "OV pass": 0.1,  # per score set: targets, tables
    "capture": 0.02,  # per batch of 16 prompts
    "OV tables": 0.4,  # per task
    "DLA": 0.2,
    "knockouts": 0.012,  # per component knocked out, per batch
    "circuit": 0.02,  # per pass (eap-ig step, exact edge, curve point), per batch of 16
    "QK": 0.03,  # per head, per batch, per pass over the prompts (the means', the attribution's)
    "scatter": 0.1,  # per head scattered (its bootstrap)
    "atlas": 1.0,
    "page": 5.0,
}
BATCH = 16


@dataclass(frozen=True)
class Shape:
    """What the cost model reads of a model."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    body_params: int  # parameters outside the embedding and unembedding

    @classmethod
    def of(cls, model: Model) -> Shape:
        i = model.identity
        every = sum(p.numel() for p in model.bridge.original_model.parameters())
        tied = 1 if model.arch.tied_unembedding else 2
        return cls(
            i.n_layers, i.n_heads, i.d_model, i.d_head, i.d_vocab, every - tied * i.d_vocab * i.d_model
        )


def forward_flops(shape: Shape, prompts: int, length: float) -> float:
    """One forward pass over `prompts` of `length` tokens: the body's products, attention's
    scores and mixing, and the unembedding at every position."""
    per_token = 2 * shape.body_params + 2 * shape.d_model * shape.d_vocab
    attention = 4 * shape.n_layers * shape.n_heads * shape.d_head * length
    return prompts * length * (per_token + attention)


OV_COLUMNS = 1024  # vocabulary columns per block of the OV kernel (ov_kernel.COLUMNS)
# Share of the capped (head, row) pairs still in doubt after the first block, priced as read to the
# end: 5.6% of a report's capped rows on SmolLM2-135M-Instruct (6 tasks x 100 prompts, detail 32,
# and the atlas; 3.9% of the atlas's alone; benchmarks/results/ov_exit.md). Random weights put every
# target far from the top and leave fewer (2.9% on the 270M-class shape).
OV_DOUBT = 0.06


def ov_flops(shape: Shape, rows: int, capped: int = 0) -> float:
    """The OV pass over `rows`, `capped` of them with the exact early exit: per head, every row's
    logits over the first block of columns, then the rows read to the end (those not capped and
    the capped ones still in doubt, `OV_DOUBT`) over the rest, each block in the cheaper of the
    kernel's two forms (`_columns_flops`); and every row's factors."""
    heads = shape.n_layers * shape.n_heads
    first = min(OV_COLUMNS, shape.d_vocab)
    alive = rows - capped + OV_DOUBT * capped
    per_head = _columns_flops(shape, rows, first) + _columns_flops(shape, alive, shape.d_vocab - first)
    return heads * (per_head + 2 * rows * shape.d_model * shape.d_head)


def _columns_flops(shape: Shape, rows: float, columns: int) -> float:
    """One head's logits of `rows` over `columns`: factored (W_Oc W_gU, then d_head per row and
    column) or direct (d_model per row and column), whichever is cheaper, as the kernel chooses."""
    factored = 2 * shape.d_head * (shape.d_model + rows) * columns
    return min(factored, 2 * rows * shape.d_model * columns)


EDGES_PER_PASS = 4  # exactly patched edges per layered pass, about (copies stacked in one pass)


def circuit_passes(steps: int, exact_edges: int) -> float:
    """Forward-pass equivalents of the circuit step: eap-ig's steps (forward and backward), the
    clean and corrupted runs, the exactly patched edges (stacked), MIB's curve points and the circuit."""
    return 3 * steps + 2 + exact_edges / EDGES_PER_PASS + len(mib.FRACTIONS) + 1


def qk_flops(shape: Shape, sources: int, length: float) -> float:
    """One head's QK attribution on one prompt, `sources` components upstream: two forward passes
    (the components' means at the two roles, the clean run) and runs of the head's block up to its
    scores (its q, k and v projections, without grouping, and q.k over the prompt), three per
    copy (its queries, its keys, then its scores): the clean copy and one copy per component and
    side (each patches one component), and the first-order estimate's forward and backward (9)."""
    projections = 2 * 3 * shape.d_model * shape.n_heads * shape.d_head  # per token
    block = length * (projections + 2 * shape.n_heads * shape.d_head * length)
    return 2 * forward_flops(shape, 1, length) + (3 + 3 * 2 * sources + 9) * block


def product_rate(seconds: float = 0.3) -> float:
    """This machine's float32 product rate (FLOP/s) at the current thread count: the best of
    repeated [512, 768] @ [768, 2048] products over about `seconds`."""
    a, b = torch.randn(512, 768), torch.randn(768, 2048)
    best, stop = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < stop:
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * 512 * 768 * 2048 / best
