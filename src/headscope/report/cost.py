"""What a report's phases cost, predicted from the shapes before anything runs.

Each phase's matrix-product FLOPs are counted from the model's shape and the phase's sample size
(the way `benchmarks/flops.py` counts a finished run), and turned into seconds with this
machine's float32 product rate, measured at the start in a fraction of a second
(`models.product_rates.product_rate`), and the share of that rate each phase reached in the measured runs of
`benchmarks/results/report.md` (`EFFICIENCY`). Work that is not products (Python per batch or per
component, the page) is a fixed time per call (`CALL_SECONDS`), fitted on the organism's report.

Memory, the same way: what each phase holds above the loaded model (`models.memory.resident_bytes`)
is a multiple (`MEMORY_FACTOR`) of a size read off the shapes, fitted on the peaks measured in
benchmarks/results/memory.md: a forward pass without gradients holds one layer's activations at
a time (`layer_bytes`); one with gradients (the knockouts' screen, the circuit's attribution, the
QK attribution's first-order estimate) holds every layer's, the circuit's one copy per target
(each query head, key and value group, the MLP); the OV pass holds per worker thread a block of
heads' circuits and row factors and one logits block (scores/ov_kernel.py), the atlas its
per-source rows, the page its figures; a task's phases after the capture also hold what the
capture kept (`kept_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

from headscope.models.loading import Model
from headscope.scores import ov_kernel
from headscope.scores.circuit import mib

# Share of the product rate each phase reached (benchmarks/results/report.md: GPT-2, 135M, 270M
# shapes, 2 threads: OV 0.38-0.80, forward 0.52-0.71, knockouts 0.55-0.72, circuit 0.25-0.44; QK
# attribution 0.76-0.79 of one GPT-2-small-shaped head at layers 5 and 11 on 8 prompts; the
# organism's circuit step on a quiet machine, 1 thread: 0.41, its Python included).
EFFICIENCY = {"OV pass": 0.5, "capture": 0.6, "knockouts": 0.6, "circuit": 0.4, "QK": 0.7, "scatter": 0.2}
# Seconds of work besides the products, per call of the phase (fitted on the organism's report on a
# quiet machine; the OV tables' per head: 0.04 s a task on the organism's 8 heads, 0.75 on GPT-2's 144).
CALL_SECONDS = {
    "OV pass": 0.1,  # per score set: targets, tables
    "capture": 0.02,  # per batch of 16 prompts
    "OV tables": 0.005,  # per head, per task
    "DLA": 0.2,
    "knockouts": 0.004,  # per component knocked out, per batch
    "circuit": 0.0,  # its Python is in its efficiency (the organism's passes are mostly Python)
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
    d_mlp: int = 0
    n_kv_heads: int = 0

    @classmethod
    def of(cls, model: Model) -> Shape:
        i = model.identity
        every = sum(p.numel() for p in model.bridge.original_model.parameters())
        tied = 1 if model.arch.tied_unembedding else 2
        body = every - tied * i.d_vocab * i.d_model
        mlp = int(getattr(model.cfg, "d_mlp", None) or 4 * i.d_model)
        return cls(i.n_layers, i.n_heads, i.d_model, i.d_head, i.d_vocab, body, mlp, model.arch.n_kv_heads)


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


# ---- memory ------------------------------------------------------------------------------------

# Multiples of each phase's size (below) its peak reached above the model and what the capture keeps,
# fitted on the peaks of benchmarks/results/memory.md (ioi, 32 prompts: GPT-2 small's and
# SmolLM-135M's shapes): OV pass 1.9-2.1, capture 0-2.3, knockouts 5.6-6.9, circuit 9.6-11.7. The
# cast and the QK attribution ran on the organism only (random weights label no head): theirs are
# the knockouts' (the cast's passes are no-gradient ones, the QK estimate's a gradient one).
MEMORY_FACTOR = {"OV pass": 2.0, "capture": 2.0, "knockouts": 7.0, "circuit": 12.0, "cast": 7.0, "QK": 7.0}
TASK_BYTES = 0.06e9  # every task phase besides its own: tables, Python (OV tables, DLA, scatter: 0.03-0.05)
ATLAS_ROW_BYTES = 1000  # per per-source row of the atlas (a head, a source row, a sign): 500-1000 measured
PAGE_BYTES = 0.12e9  # the page, per task (0.08-0.12 GB measured for one task)
CAPTURE_BATCH = 64  # capture.DEFAULT_BATCH
KNOCKOUT_BATCH = 32  # interventions.DEFAULT_BATCH
GRADIENT_BATCH = 16  # the circuit's and the QK attribution's batches


def layer_bytes(shape: Shape, prompts: int, length: float) -> float:
    """One layer's float32 activations for `prompts` of `length` tokens: the residual, the MLP's
    hidden layer and the attention pattern."""
    return 4 * prompts * length * (shape.d_model + shape.d_mlp + shape.n_heads * length)


def kept_bytes(shape: Shape, prompts: int, length: float, full_patterns: bool) -> float:
    """What a task's capture keeps of `prompts` (capture.Capture): the end row's logits, every head's
    z and every MLP's output at the end, the attention rows at the end and the roles (and the whole
    patterns where the task reads them: induction)."""
    heads = shape.n_layers * shape.n_heads
    per_prompt = shape.d_vocab + heads * shape.d_head + shape.n_layers * shape.d_model + 2 * heads * length
    return 4 * prompts * (per_prompt + (heads * length * length if full_patterns else 0))


def forward_memory(shape: Shape, prompts: int, length: float, batch: int, gradients: bool) -> float:
    """The activations of one batch of a forward pass: one layer at a time, or every layer where
    a backward pass follows."""
    held = layer_bytes(shape, min(prompts, batch), length)
    return held * (shape.n_layers if gradients else 1)


def circuit_memory(shape: Shape, prompts: int, length: float) -> float:
    """Edge attribution's batch, kept for the backward pass: every layer's activations, with one
    residual-width input per target of the layer (each query head, key and value group, the MLP)."""
    targets = shape.n_heads + 2 * (shape.n_kv_heads or shape.n_heads) + 1
    width = targets * shape.d_model + shape.d_mlp + shape.n_heads * length
    return 4 * min(prompts, GRADIENT_BATCH) * length * shape.n_layers * width


def ov_memory(shape: Shape, rows: int, threads: int, k: int) -> float:
    """The OV pass (scores/ov_kernel.py): per worker thread, a block of heads' circuits and their
    factors of the rows (each at most HEAD_BLOCK_BYTES), one logits block and a block of unembedding
    columns; the rows' inputs, and the ranks and top-k of every head, sign and row."""
    heads = shape.n_layers * shape.n_heads
    share = -(-heads // max(threads, 1))  # heads per worker
    circuits = min(ov_kernel.HEAD_BLOCK_BYTES, 4 * share * shape.d_head * shape.d_model)
    factors = min(ov_kernel.HEAD_BLOCK_BYTES, 4 * share * rows * shape.d_head)
    block = 4 * (ov_kernel.BLOCK_FLOATS + shape.d_model * ov_kernel.COLUMNS)
    outputs = 4 * heads * 2 * rows * (2 + k) + 4 * rows * shape.d_model
    return threads * (circuits + factors + block) + outputs
