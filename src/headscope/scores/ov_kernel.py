"""The fast core of the OV relation scores: every head's target ranks (and top-k tokens).

For head l.h, a residual row x and a sign s (docs/methods.md §2):

    v     = LN_l(x) W_V + b_V
    co    = v W_O C                      (C centres the row; identity for RMS norm)
    sigma = sqrt(mean(co^2) + eps)       (the final norm's statistics, on o alone)

(Where the model normalises the attention output first — Gemma 2/3 — `W_O C` becomes
`W_O C diag(g_post) C` and sigma the product of both norms' scales, each on o alone:
still a per-row scalar, so everything below holds.)
    logits(s) = s (co / sigma) diag(g_f) W_U + (b_f W_U + b_U)

so `logits(+1) = a M_h + c` with `a = v / sigma` ([d_head]), `M_h = W_O C diag(g_f) W_U`
([d_head, V]) and `c = b_f W_U + b_U`; and `logits(-1) = 2c - logits(+1)`. One set of
logits serves every relation and both signs. The factored form costs `d_head d V`
multiply-adds per head and then `d_head V` per row, against `d V` per row the direct way;
it is used when it is cheaper for the number of rows at hand.

A target's rank is the number of other tokens whose logit is at least the best target
token's (0 = strictly top); a hit is `rank < k`. Ties count against the target, so a head
that writes nothing (all logits equal) scores 0, not 100%; the reference loop uses the
same rule.

The logits are never held whole. Vocabulary columns are taken `COLUMNS` at a time; for
each block of columns, a few heads and some rows, one cache-sized logits block is made by
one batched product and read at once: the ranks are counts of logits at least each
relation's threshold (for sign -1 the same block, negated around `2c`), summed block by
block, and the running top-k (equal values: the lower token id first) takes in only values
above its k-th. On the CPU from `FUSED_MIN_VOCAB` up, one compiled pass over the block does the
counts and the top-k of every sign (`ov_fused`); elsewhere torch operations do, updating the
top-k only in rows whose block maximum beats it. The thresholds (target logits) come from a
separate small product; the block's own values at the target columns are swapped for those,
so a target never ties with itself by rounding.

**The exact early exit** (`RankCap`, for the tables that read only hits: the atlas without its
per-source table, the score table without the per-token ones). A cell's rank is `count + own - 1`
at the end (`own`: the row's distinct target tokens at or above the threshold, known from the
small product before any block is read), and counts only grow, so the rank is k or more as soon
as the count reaches `k + 1 - own`: the cell is decided, a miss, and reported as k ("k or more").
After each block of columns, each head drops the rows whose every valid cell (each relation, each
sign) is decided; the next blocks' products and scans are made for the rows still in doubt only
(`HeadScan`: its accumulator, thresholds and left operand indexed down to them). The rows are
dropped per head, not per group of heads: each head's logits are a product of their own, so a row
one head has decided costs that head nothing more, whatever the others still need. With few rows
left the direct form (`a W_Oc`, then the columns: `d_model` per row and column) replaces the
factored one, whose `W_Oc W_gU` block costs `d_head x d_model` per column whatever the rows. A hit
needs every column, so hits are read to the end and exact; rows a `RankCap` leaves out (those that
need ranks beyond k or their top-k) are read to the end in the same pass, with their top-k. The
columns are read in token-id order (a fixed order: the counts do not depend on it); on a trained
checkpoint (SmolLM2-135M) 96% of the (head, row) pairs of the atlas's rows are decided in the
first block of 1,024 (benchmarks/results/ov_exit.md). `HeadRanks.blocks` counts the blocks each
head read for each row. The ranks are the full pass's capped at k, except that the products'
rounding (other shapes, the direct form) may differ in the last bit, which moves a rank only where
another token's logit ties the target's exactly (as between a shared pass and a pass of its own).

**Products in bfloat16** (`products=torch.bfloat16`: the streamed atlas on a processor that
multiplies bfloat16 faster, `models.product_rates`). The vocabulary products' operands (the row
factors `a`, or `a W_Oc` in the direct form; the circuits `W_Oc`; each block of unembedding
columns) are rounded to bfloat16; torch multiplies them accumulating in float32 and rounds each
result (`W_Oc W`, the logits block) to bfloat16, as its CPU kernels have no bfloat16 product with a
float32 result; the block is added to `c` in float32 and counted there against the float32
thresholds of the small product (`logits_into`). Everything else (the factors, norms, counts,
top-k) stays in `dtype`: a kernel wholly in bfloat16 would count in bfloat16 (exact only up to 256)
and the fused scan reads float32 and float64 only. A logit is then within about five bfloat16
roundings (2^-8 each) of its terms' absolute sum `|a| |W_Oc| |W_gU|`, so a rank moves only where
another token's logit lies that close to the target's (tests/scores/test_ov_kernel_products.py;
the agreement measured is in docs/atlas.md).

Memory, per worker thread, whatever the model: the heads are taken `head_block` at a time, so
their circuits (`heads x d_head x d_model`) and the factors of `ROW_BLOCK` rows (`heads x rows x
d_head`) stay within `HEAD_BLOCK_BYTES` each; the unembedding is read a block of columns at a
time (`d_model x COLUMNS`, converted from W_U's own precision and scaled by the final norm's gain
on the fly: no second `d_model x V` matrix, no float32 copy of a bfloat16 W_U); one logits block
is `BLOCK_FLOATS`; the unembedding's target columns are read `TARGET_ROWS` rows at a time
(`TARGET_ROWS x targets x d_model`). Outputs grow as heads x rows. Everything runs on `device`
(default: that of `weights.W_U`; an accelerator too, where the exact torch count replaces the C++
counter): the weights go there a block of heads at a time, never copied whole.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from headscope.errors import HeadscopeError
from headscope.models.weights import Weights, centred, head_output_map, normalize
from headscope.scores.ov_fused import fused

# Below this vocabulary the torch counts cost little: skip building the C++ counter (a
# first-use compile of a minute or more), so the organism's report never waits for it.
FUSED_MIN_VOCAB = 8192

COLUMNS = 1024  # vocabulary columns per block
BLOCK_FLOATS = 1 << 21  # logits per block (8 MB in float32): heads x rows x COLUMNS
ROW_BLOCK = 4096  # rows whose per-head factors are held at once (8192: 5% faster, 1 GB more peak)
HEAD_BLOCK_BYTES = 1 << 28  # 256 MB: heads whose W_Oc (and a row block's factors) are held at once


@dataclass(frozen=True)
class Targets:
    """Target tokens of each row per relation (padded by repeating one); `valid` marks real ones."""

    tokens: Int[Tensor, "row relation target"]
    valid: Bool[Tensor, "row relation"]


@dataclass(frozen=True)
class RankCap:
    """Ranks wanted only up to `k` (a top-k hit or miss), on `rows` (None: every row).

    On those rows a rank of `k` or more is reported as `k` ("k or more", not a rank), and a head
    stops reading a row's columns once every valid cell of the row (each relation, each sign) has
    `k` tokens at or above its target: the exact early exit. Those rows get no top-k tokens.
    """

    k: int
    rows: Bool[Tensor, "row"] | None = None

    def mask(self, n_rows: int) -> Bool[Tensor, "row"]:
        return torch.ones(n_rows, dtype=torch.bool) if self.rows is None else self.rows.bool()


@dataclass(frozen=True)
class HeadRanks:
    """Per head, sign and row: the rank of each relation's best target, and the top-k tokens.

    `topk` has a last dimension of 0 when top-k was not asked for; with a `cap`, the capped rows'
    top-k entries are -1 and their ranks are capped: `min(rank, cap.k)`, `cap.k` meaning "cap.k
    or more". `blocks`: how many blocks of `COLUMNS` vocabulary columns each head read for each
    row (all of them, `ceil(V / COLUMNS)`, unless the row was capped and decided early).
    """

    rank: Int[Tensor, "head sign row relation"]
    topk: Int[Tensor, "head sign row k"]
    cap: RankCap | None = None
    blocks: Int[Tensor, "head row"] | None = None


@dataclass(frozen=True)
class Readout:
    """The final norm and unembedding folded: logits = (co / sigma) @ W_gU + c, with
    W_gU = diag(g_f) W_U formed a block of columns at a time (never a second d x V matrix).
    `W_U` stays in its own precision (a streamed model's bfloat16); each block is converted to the
    kernel's (`gain`'s) as it is read, which is exact, so the products are those of a whole copy."""

    W_U: Float[Tensor, "d_model d_vocab"]
    gain: Float[Tensor, "d_model"]
    c: Float[Tensor, "d_vocab"]

    def columns(self, cols: slice) -> Float[Tensor, "d_model col"]:
        return self.gain[:, None] * self.W_U[:, cols].to(self.gain.dtype)

    def rows_of(self, tokens: Int[Tensor, "..."]) -> Float[Tensor, "... d_model"]:
        """W_gU's columns of `tokens`, as rows (contiguous): the same products as `columns`, read
        from W_U's transpose, which is the unembedding's own row-major layout."""
        picked = self.W_U.T[tokens.reshape(-1)].to(self.gain.dtype).mul_(self.gain)  # [token, d_model]
        return picked.reshape(*tokens.shape, -1)  # [..., d_model]


def readout(weights: Weights, dtype: torch.dtype, device: torch.device) -> Readout:
    """The readout in `dtype` on `device`; W_U moved there in its own precision, not copied in `dtype`."""
    W_U, on = weights.W_U.to(device), dict(device=device, dtype=dtype)
    c = bias_logits(weights.lnf_b.to(**on), W_U, weights.b_U.to(**on))
    return Readout(W_U, weights.lnf_w.to(**on), c)


def bias_logits(
    b_f: Float[Tensor, "d_model"], W_U: Float[Tensor, "d_model d_vocab"], b_U: Float[Tensor, "d_vocab"]
) -> Float[Tensor, "d_vocab"]:
    """`c = b_f W_U + b_U` in `b_f`'s precision: one product where W_U is in it already, else W_U's
    columns converted `COLUMNS` at a time (never W_U whole in two precisions)."""
    if W_U.dtype == b_f.dtype:
        return b_f @ W_U + b_U
    c = torch.empty_like(b_U)
    for start in range(0, W_U.shape[1], COLUMNS):
        cols = slice(start, start + COLUMNS)
        c[cols] = b_f @ W_U[:, cols].to(b_f.dtype) + b_U[cols]
    return c


@dataclass(frozen=True)
class Circuits:
    """The chosen heads' OV circuits up to the logits, stacked in the order of `heads`.

    `W_Oc` is what z writes up to the final norm's statistics (`head_output_map`); where the
    model normalises the attention output first (Gemma 2/3), `pre_gram` is the gram matrix of
    `W_O` (centred for LayerNorm), from which that norm's own statistics on `o` are taken.
    """

    heads: list[tuple[int, int]]
    W_Oc: Float[Tensor, "head d_head d_model"]
    gram: Float[Tensor, "head d_head d_head"]
    pre_gram: Float[Tensor, "head d_head d_head"] | None
    dtype: torch.dtype
    low: Float[Tensor, "head d_head d_model"] | None = None  # W_Oc for bfloat16 products (None: none)

    @property
    def W_Oc_products(self) -> Float[Tensor, "head d_head d_model"]:
        """W_Oc in the vocabulary products' precision (`products`)."""
        return self.W_Oc if self.low is None else self.low

    @property
    def products(self) -> torch.dtype:
        """The precision of the vocabulary products' operands: `dtype`, or bfloat16 (`low`)."""
        return self.W_Oc_products.dtype


def circuits(
    weights: Weights,
    heads: list[tuple[int, int]],
    dtype: torch.dtype,
    device: torch.device,
    products: torch.dtype | None = None,
) -> Circuits:
    layers, index = torch.tensor([la for la, _ in heads]), torch.tensor([h for _, h in heads])
    W_Oc = head_output_map(weights, layers, index).to(device, dtype)  # [head, d_head, d_model]
    pre_gram = None
    if weights.attn_out_w is not None:
        W_O = centred(weights.W_O[layers, index].to(device, dtype), weights.normalization)
        pre_gram = W_O @ W_O.transpose(1, 2)  # [head, d_head, d_head]
    W_Oc = W_Oc.contiguous()
    low = None if products in (None, dtype) else W_Oc.to(products)
    return Circuits(heads, W_Oc, W_Oc @ W_Oc.transpose(1, 2), pre_gram, dtype, low)


def _quadratic(v: Float[Tensor, "row d_head"], gram: Float[Tensor, "d_head d_head"]) -> Tensor:
    return ((v @ gram) * v).sum(-1)  # |v W|^2 = v G v^T, per row


def head_factors(
    weights: Weights, circ: Circuits, x: Float[Tensor, "row d_model"]
) -> Float[Tensor, "head row d_head"]:
    """`a = v / sigma` of every head and row; sigma is the product of the scales of every norm
    between the head and the logits, each computed on `o` alone."""
    w, dtype = weights, circ.dtype
    normed: dict[int, Tensor] = {}
    out = torch.empty(len(circ.heads), x.shape[0], w.d_head, dtype=dtype, device=x.device)
    on = dict(device=x.device, dtype=dtype)
    for i, (layer, head) in enumerate(circ.heads):
        if layer not in normed:
            ln_w, ln_b = w.ln1_w[layer].to(**on), w.ln1_b[layer].to(**on)
            normed[layer] = normalize(x.to(dtype), ln_w, ln_b, w.eps, w.normalization)
        v = torch.addmm(w.b_V[layer, head].to(**on), normed[layer], w.W_V[layer, head].to(**on))
        pre = 1.0
        if circ.pre_gram is not None:  # the attention output norm's scale of o
            pre = (_quadratic(v, circ.pre_gram[i]) / w.d_model + w.eps).sqrt()
        sigma = (_quadratic(v, circ.gram[i]) / (pre * pre * w.d_model) + w.eps).sqrt() * pre
        out[i] = v / sigma[:, None]
    return out


def factored_is_cheaper(weights: Weights, rows: int) -> bool:
    """d_head d V + rows d_head V multiply-adds against rows d V."""
    d, dh = weights.d_model, weights.d_head
    return dh * d + rows * dh < rows * d


@dataclass(frozen=True)
class RowTargets:
    """One row block's targets flattened over relations, and their logits by the small product."""

    tokens: Int[Tensor, "row slot"]  # slot = relation x target
    first: Bool[Tensor, "row slot"]  # the first slot holding its token (duplicates ignored)
    logits: Float[Tensor, "sign head row slot"]
    threshold: Float[Tensor, "sign head row relation"]  # best target logit per relation


# Rows whose target columns of the unembedding ([row, slot, d_model]: 4.7 MB for GPT-2 small's
# 12 slots) are read once for every head while in cache; the whole row block's (151 MB at 4,096
# rows) read again per head took 15 of the GPT-2 shape report's 104 s OV pass. Each row's values
# are the same products as the whole block's (a row's result does not depend on the rows beside it).
TARGET_ROWS = 128


def row_targets_logits(
    a: Float[Tensor, "head row d_head"], circ: Circuits, out: Readout, tokens: Tensor, signs
) -> RowTargets:
    rows, relations, width = tokens.shape
    flat = tokens.reshape(rows, relations * width)  # [row, slot]
    same = flat[:, :, None] == flat[:, None, :]  # [row, slot, slot]
    first = ~(same & torch.ones_like(same[0]).tril(-1)).any(-1)
    plus = torch.empty(a.shape[0], rows, flat.shape[1], dtype=a.dtype, device=a.device)  # [head, row, slot]
    for r0 in range(0, rows, TARGET_ROWS):
        part = slice(r0, r0 + TARGET_ROWS)
        columns = out.rows_of(flat[part])  # [row, slot, d_model]
        for i in range(a.shape[0]):
            plus[i, part] = (columns @ (a[i, part] @ circ.W_Oc[i])[:, :, None]).squeeze(-1)
    plus += out.c[flat]
    logits = torch.stack([plus if s == 1 else 2 * out.c[flat] - plus for s in signs])
    threshold = logits.reshape(*logits.shape[:3], relations, width).amax(-1)  # [sign, head, row, rel]
    return RowTargets(flat, first, logits, threshold)


def _first(values: Float[Tensor, "n col"], k: int) -> tuple[Tensor, Tensor]:
    """The k largest values of each row (k or fewer) and their columns, descending; among equal
    values the lower column first, the rule of the fused scan. torch.topk keeps no order among
    ties, so a row whose k-th value equals its next is sorted whole (stably), and the chosen k
    are put in that order."""
    k = min(k, values.shape[-1])
    top, columns = values.topk(min(k + 1, values.shape[-1]), dim=-1)  # [n, k + 1] (or k)
    if top.shape[-1] > k:
        crowded = top[:, k] == top[:, k - 1]  # which k of the tied values topk took is arbitrary
        if crowded.any():
            rows = crowded.nonzero()[:, 0]
            columns[rows] = values[rows].sort(dim=-1, descending=True, stable=True).indices[:, : k + 1]
    columns = columns[:, :k].sort(dim=-1).values  # the chosen columns, ascending
    ordered, order = values.gather(-1, columns).sort(dim=-1, descending=True, stable=True)
    return ordered, columns.gather(-1, order)


class Accumulator:
    """Running counts (and top-k) of one row block, filled logits block by logits block."""

    def __init__(
        self, targets: RowTargets, k: int, with_topk: bool, signs: tuple[int, ...], use_fused: bool = True
    ):
        n_signs, heads, rows, _ = targets.threshold.shape
        self.t, self.signs = targets, signs
        on = dict(dtype=targets.logits.dtype, device=targets.logits.device)
        self.count = torch.zeros_like(targets.threshold)  # [sign, head, row, relation]: the same strides
        self.k = k if with_topk else 0
        self.top_v = torch.full((n_signs, heads, rows, self.k), -torch.inf, **on)
        self.top_i = torch.zeros(n_signs, heads, rows, self.k, dtype=torch.long, device=on["device"])
        self._ones = torch.ones(COLUMNS, **on)
        self._fused = fused() if use_fused else None
        self._skip = torch.where(targets.first, targets.tokens, -1).contiguous()  # [row, slot]

    @property
    def uses_torch_count(self) -> bool:
        return self._fused is None

    def add(self, block: Tensor, twice_c: Tensor, heads: slice, rows: slice, start: int, work: Work) -> None:
        """Everything read from one logits(+1) block [head, row, column] (columns from `start`)."""
        g, r, width = block.shape
        if self._fused is not None:  # counts and top-k of every sign and relation in one pass
            self._fused(
                block, twice_c, self.t.threshold[:, heads, rows], self.count[:, heads, rows],
                self.top_v[:, heads, rows], self.top_i[:, heads, rows], list(self.signs), start,
                self._skip[rows],
            )  # fmt: skip  # views [sign, head, row, relation or k], updated in place
            return  # the target columns left out of the counts by the scan itself
        for j, sign in enumerate(self.signs):
            logits = block if sign == 1 else torch.sub(twice_c, block, out=work.negated[:g, :r, :width])
            self._count(j, logits, heads, rows, work.mask[:g, :r, :, :width])
            if self.k:
                self._update_topk(j, logits, heads, rows, start)
        self._swap_targets(block, twice_c, heads, rows, start)

    def _count(self, s: int, logits: Tensor, heads: slice, rows: slice, mask: Tensor) -> None:
        threshold = self.t.threshold[s, heads, rows]  # [head, row, relation]
        mask = torch.ge(logits[:, :, None, :], threshold[..., None], out=mask)  # [head, row, rel, col]
        counted = mask.flatten(0, 2) @ self._ones[: mask.shape[-1]]  # [head * row * rel]
        self.count[s, heads, rows] += counted.view(mask.shape[:3])

    def _swap_targets(self, block: Tensor, twice_c: Tensor, heads: slice, rows: slice, start: int) -> None:
        """Take back the block's own comparisons at target columns (the small product's replace them)."""
        index = self.t.tokens[rows] - start  # [row, slot]
        inside = (index >= 0) & (index < block.shape[-1]) & self.t.first[rows]
        if not inside.any():
            return
        index = index.clamp(0, block.shape[-1] - 1)
        plus = block.gather(-1, index.expand(block.shape[0], -1, -1))  # [head, row, slot]
        for j, sign in enumerate(self.signs):
            values = plus if sign == 1 else twice_c[index] - plus  # as the block's own subtraction
            threshold = self.t.threshold[j, heads, rows]  # [head, row, relation]
            wrong = (values[:, :, None, :] >= threshold[..., None]) & inside[None, :, None, :]
            self.count[j, heads, rows] -= wrong.sum(-1)

    def _update_topk(self, s: int, logits: Tensor, heads: slice, rows: slice, start: int) -> None:
        top_v, top_i = self.top_v[s, heads, rows], self.top_i[s, heads, rows]  # [head, row, k] views
        beats = logits.amax(-1) > top_v[..., -1]  # [head, row]
        if not beats.any():
            return
        h, r = beats.nonzero(as_tuple=True)
        values, index = _first(logits[h, r], self.k)  # [n, k or fewer]
        merged_v = torch.cat([top_v[h, r], values], -1)  # those held first: lower token ids
        merged_i = torch.cat([top_i[h, r], index + start], -1)
        best_v, pick = _first(merged_v, self.k)
        top_v[h, r], top_i[h, r] = best_v, merged_i.gather(-1, pick)

    def ranks(self) -> tuple[Tensor, Tensor]:
        """Ranks [sign, head, row, relation]: swapped-in target counts added, the target itself off."""
        return (self.count + own_counts(self.t) - 1).to(torch.int32), self.top_i.to(torch.int32)

    def kept(self, keep: Bool[Tensor, "row"]) -> Accumulator:
        """The same accumulator on the rows `keep` alone: their targets, counts and top-k so far."""
        t = self.t
        sub = RowTargets(t.tokens[keep], t.first[keep], t.logits[:, :, keep], t.threshold[:, :, keep])
        acc = Accumulator(sub, self.k, self.k > 0, self.signs, self._fused is not None)
        acc.count.copy_(self.count[:, :, keep])
        acc.top_v.copy_(self.top_v[:, :, keep])
        acc.top_i.copy_(self.top_i[:, :, keep])
        return acc


def own_counts(t: RowTargets) -> Float[Tensor, "sign head row relation"]:
    """Per relation, the row's distinct target tokens whose logit (the small product's) is at least
    the relation's threshold: the best target itself and any other at or above it."""
    own = torch.zeros_like(t.threshold)
    for h in range(own.shape[1]):  # a head at a time: [sign, row, relation, slot] stays small
        at_least = (t.logits[:, h, :, None, :] >= t.threshold[:, h, ..., None]) & t.first[None, :, None, :]
        own[:, h] = at_least.sum(-1)
    return own


@dataclass(frozen=True)
class Work:
    """One worker's scratch buffers: the logits block, its negation and the comparison mask."""

    logits: Tensor  # [head, row, col]
    negated: Tensor  # [head, row, col]
    mask: Tensor  # [head, row, relation, col]


def _block_shape(n_heads: int, n_rows: int) -> tuple[int, int]:
    """Heads and rows per logits block: heads x rows x COLUMNS at most BLOCK_FLOATS."""
    rows = max(1, min(n_rows, BLOCK_FLOATS // COLUMNS))
    return max(1, min(n_heads, BLOCK_FLOATS // (COLUMNS * rows))), rows


@dataclass(frozen=True)
class Pass:
    """What every logits block of one row block is made from."""

    acc: Accumulator
    left: Float[Tensor, "head row inner"]  # a (factored) or a W_Oc (direct)
    circ: Circuits
    out: Readout
    factored: bool
    signs: tuple[int, ...]


def _work(heads: int, rows: int, relations: int, plain: bool, on: dict) -> Work:
    """Scratch for logits blocks of `heads x rows x COLUMNS`; the negation and the mask only for the
    plain torch count (the fused scan negates and compares on the fly)."""
    logits = torch.empty(heads, rows, COLUMNS, **on)
    mask = torch.empty(heads, rows, relations, COLUMNS if plain else 0, **on)
    return Work(logits, torch.empty(heads, rows, COLUMNS if plain else 0, **on), mask)


def _column_pass(p: Pass, head_groups: list[slice]) -> None:
    """Every vocabulary block for the given groups of heads."""
    n_rows, vocab = p.left.shape[1], p.out.c.shape[0]
    step = _block_shape(1, n_rows)[1]
    group = max(hs.stop - hs.start for hs in head_groups)
    on = dict(dtype=p.circ.dtype, device=p.left.device)
    work = _work(group, step, p.acc.count.shape[-1], p.acc.uses_torch_count, on)
    twice_c = 2 * p.out.c
    for start in range(0, vocab, COLUMNS):
        cols = slice(start, min(start + COLUMNS, vocab))
        W = p.out.columns(cols).to(p.circ.products)  # [d_model, col]
        for heads in head_groups:
            right = (p.circ.W_Oc_products[heads] @ W) if p.factored else W  # [head, d_head, col] or W
            for r0 in range(0, n_rows, step):
                rows = slice(r0, min(r0 + step, n_rows))
                block = work.logits[: heads.stop - heads.start, : rows.stop - r0, : cols.stop - start]
                logits_into(block, p.left[heads, rows], right, p.out.c[cols], p.factored)
                p.acc.add(block, twice_c[cols], heads, rows, start, work)


def logits_into(block: Tensor, left: Tensor, right: Tensor, c: Tensor, factored: bool) -> None:
    """`block = left @ right + c`: [head, row, d_head] @ [head, d_head, col] (factored) or
    [head, row, d_model] @ [d_model, col] (direct). Operands in the block's precision: one
    `baddbmm` (factored) or the product then `c`. bfloat16 operands: torch's bfloat16 product
    (accumulated in float32 inside, its result rounded to bfloat16) added to `c` in the block's
    precision, so the counts, thresholds and top-k stay in it."""
    if left.dtype != block.dtype:
        torch.add(torch.matmul(left, right), c, out=block)
    elif factored:
        torch.baddbmm(c, left, right, out=block)
    else:
        torch.matmul(left, right, out=block).add_(c)


def n_blocks(vocab: int) -> int:
    """Blocks of `COLUMNS` vocabulary columns: what a head reads for a row without an exit."""
    return -(-vocab // COLUMNS)


@dataclass(frozen=True)
class RowBlock:
    """One block of rows handed to the kernel: their residual rows, targets, and which are capped."""

    x: Float[Tensor, "row d_model"]
    tokens: Int[Tensor, "row relation target"]
    valid: Bool[Tensor, "row relation"]
    capped: Bool[Tensor, "row"]


def _row_block(
    weights: Weights, circ: Circuits, out: Readout, rb: RowBlock, k: int, signs, with_topk: bool, cap: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Ranks [sign, head, row, relation], top-k and blocks read [head, row] of one block of rows,
    every head of `circ`; with capped rows among them, by the exit pass."""
    a = head_factors(weights, circ, rb.x)  # [head, row, d_head]
    targets = row_targets_logits(a, circ, out, rb.tokens, signs)
    use_fused = weights.d_vocab >= FUSED_MIN_VOCAB and rb.x.device.type == "cpu"  # the C++ counter: CPU only
    if rb.capped.any():
        need = decided_at(targets, cap, rb.valid, rb.capped)
        p = ExitPass(
            weights, circ, out, a, targets, need, rb.capped, cap, k, with_topk, tuple(signs), use_fused
        )
        return _exit_pass(p)
    acc = Accumulator(targets, k, with_topk, tuple(signs), use_fused)
    factored = factored_is_cheaper(weights, rb.x.shape[0])
    left = (a if factored else a @ circ.W_Oc).to(circ.products)  # [head, row, d_head or d_model]
    group = _block_shape(a.shape[0], a.shape[1])[0]
    groups = [slice(h, min(h + group, a.shape[0])) for h in range(0, a.shape[0], group)]
    _column_pass(Pass(acc, left, circ, out, factored, tuple(signs)), groups)
    blocks = torch.full(a.shape[:2], n_blocks(weights.d_vocab), dtype=torch.int32, device=a.device)
    return *acc.ranks(), blocks


# ---- the exact early exit -----------------------------------------------------------------------


def decided_at(
    t: RowTargets, cap: int, valid: Bool[Tensor, "row relation"], capped: Bool[Tensor, "row"]
) -> Float[Tensor, "sign head row relation"]:
    """The running count at which a cell is decided a miss. Its rank is `count + own - 1` at the end
    (`Accumulator.ranks`) and counts only grow, so the rank is at least `cap` as soon as the count
    reaches `cap + 1 - own`. A cell not valid decides nothing (0: decided from the start); a row
    not capped is read to the end (infinity)."""
    need = (cap + 1 - own_counts(t)).masked_fill(~valid[None, None], 0.0)
    return need.masked_fill(~capped[None, None, :, None], torch.inf)


@dataclass(frozen=True)
class ExitPass:
    """What the exit pass over one block of rows reads: `need` from `decided_at`, `cap` the rank
    cap, `k` and `with_topk` the top-k of the rows not capped."""

    weights: Weights
    circ: Circuits
    out: Readout
    a: Float[Tensor, "head row d_head"]
    targets: RowTargets
    need: Float[Tensor, "sign head row relation"]
    capped: Bool[Tensor, "row"]
    cap: int
    k: int
    with_topk: bool
    signs: tuple[int, ...]
    use_fused: bool


class HeadScan:
    """One head's reading of a row block's columns, with the exit: the rows still in doubt
    (`alive`), their accumulator, the left operand of their products, and how many column blocks
    each row of the block was read in."""

    def __init__(self, p: ExitPass, i: int):
        t, n_rows = p.targets, p.a.shape[1]
        mine = slice(i, i + 1)  # this head's
        head = RowTargets(
            t.tokens, t.first, t.logits[:, mine].contiguous(), t.threshold[:, mine].contiguous()
        )
        self.p, self.i = p, i
        self.acc = Accumulator(head, p.k, p.with_topk, p.signs, p.use_fused)
        self.need = p.need[:, mine]  # [sign, 1, alive row, relation]
        self.alive = torch.arange(n_rows, device=p.a.device)  # rows of the block still read
        self.blocks = torch.zeros(n_rows, dtype=torch.int32, device=p.a.device)
        self._left: tuple[bool, Tensor] | None = None  # (factored, [alive row, d_head or d_model])

    def _operand(self, factored: bool) -> Tensor:
        """`a` of the alive rows (factored), or `a W_Oc` (direct: cheaper once few rows are left)."""
        if self._left is None or self._left[0] != factored:
            a = self.p.a[self.i, self.alive]  # [row, d_head]
            left = a if factored else a @ self.p.circ.W_Oc[self.i]
            self._left = (factored, left.to(self.p.circ.products))
        return self._left[1]

    def read(self, W: Float[Tensor, "d_model col"], cols: slice, twice_c: Tensor, work: Work) -> None:
        """One block of columns for the alive rows, then the rows it decided dropped."""
        n, c = self.alive.shape[0], self.p.out.c[cols]
        factored = factored_is_cheaper(self.p.weights, n)
        left = self._operand(factored)[None]  # [1, row, d_head or d_model]
        right = (self.p.circ.W_Oc_products[self.i] @ W)[None] if factored else W  # [1, d_head, col] or W
        step = work.logits.shape[1]
        for r0 in range(0, n, step):
            rows = slice(r0, min(r0 + step, n))
            block = work.logits[:1, : rows.stop - r0, : cols.stop - cols.start]  # [1, row, col]
            logits_into(block, left[:, rows], right, c, factored)
            self.acc.add(block, twice_c[cols], slice(0, 1), rows, cols.start, work)
        self.blocks[self.alive] += 1
        self._drop_decided()

    def _drop_decided(self) -> None:
        """Rows whose every cell (each sign and relation) has reached its count leave the scan."""
        keep = ~(self.acc.count >= self.need).all(-1).all(0)[0]  # [alive row]
        if keep.all():
            return
        self.alive, self.need, self.acc = self.alive[keep], self.need[:, :, keep], self.acc.kept(keep)
        self._left = (self._left[0], self._left[1][keep]) if self._left is not None else None

    def result(self) -> tuple[Int[Tensor, "sign row relation"], Int[Tensor, "sign row k"]]:
        """Ranks of the block's rows (dropped ones: the cap; capped ones capped) and the top-k of
        the rows not capped (-1 on capped rows)."""
        p, (n_signs, _, n_rows, relations) = self.p, self.p.need.shape
        rank = torch.full((n_signs, n_rows, relations), p.cap, dtype=torch.int32, device=p.a.device)
        top = torch.full((n_signs, n_rows, self.acc.k), -1, dtype=torch.int32, device=p.a.device)
        alive_rank, alive_top = self.acc.ranks()  # [sign, 1, alive row, relation or k]
        rank[:, self.alive], top[:, self.alive] = alive_rank[:, 0], alive_top[:, 0]
        rank[:, p.capped] = rank[:, p.capped].clamp(max=p.cap)
        top[:, p.capped] = -1
        return rank, top


def _exit_pass(p: ExitPass) -> tuple[Tensor, Tensor, Tensor]:
    """Ranks [sign, head, row, relation], top-k and blocks read [head, row], column block by column
    block, each head reading only its rows still in doubt (a row needs a head's products and scan
    until every one of its cells is decided, whatever the other heads found)."""
    scans = [HeadScan(p, i) for i in range(p.a.shape[0])]
    on = dict(dtype=p.circ.dtype, device=p.a.device)
    step = _block_shape(1, p.a.shape[1])[1]
    work = _work(1, step, p.need.shape[-1], scans[0].acc.uses_torch_count, on)
    twice_c, vocab = 2 * p.out.c, p.out.c.shape[0]
    for start in range(0, vocab, COLUMNS):
        reading = [scan for scan in scans if scan.alive.shape[0]]
        if not reading:
            break
        cols = slice(start, min(start + COLUMNS, vocab))
        W = p.out.columns(cols).to(p.circ.products)  # [d_model, col]
        for scan in reading:
            scan.read(W, cols, twice_c, work)
    found = [scan.result() for scan in scans]
    rank = torch.stack([r for r, _ in found], 1)  # [sign, head, row, relation]
    top = torch.stack([t for _, t in found], 1)  # [sign, head, row, k]
    return rank, top, torch.stack([scan.blocks for scan in scans])


def head_block(weights: Weights, rows: int = ROW_BLOCK) -> int:
    """Heads whose circuits and factors are held at once: `HEAD_BLOCK_BYTES` for W_Oc
    (d_head x d_model each) and for the factors of a block of `rows` rows (at most ROW_BLOCK)."""
    per_head = 4 * weights.d_head * max(weights.d_model, min(rows, ROW_BLOCK))
    return max(1, HEAD_BLOCK_BYTES // per_head)


def _heads_ranks(weights, heads, out: Readout, rows: RowBlock, k, signs, dtypes, with_topk, cap: int):
    """Ranks [head, sign, row, relation], top-k and blocks read [head, row] of one block of heads,
    rows `ROW_BLOCK` at a time; `dtypes`: the kernel's precision and its vocabulary products'."""
    circ = circuits(weights, heads, dtypes[0], rows.x.device, dtypes[1])
    ranks, tops, blocks = [], [], []
    for start in range(0, rows.x.shape[0], ROW_BLOCK):
        part = slice(start, start + ROW_BLOCK)
        rb = RowBlock(rows.x[part], rows.tokens[part], rows.valid[part], rows.capped[part])
        rank, top, read = _row_block(weights, circ, out, rb, k, signs, with_topk, cap)
        ranks.append(rank.transpose(0, 1).cpu())  # [sign, head, ...] -> [head, sign, ...]
        tops.append(top.transpose(0, 1).cpu())
        blocks.append(read.cpu())
    return torch.cat(ranks, 2), torch.cat(tops, 2), torch.cat(blocks, 1)


def _worker(weights: Weights, heads, out: Readout, rows: RowBlock, k, signs, dtypes, with_topk, cap: int):
    """Ranks [head, sign, row, relation], top-k and blocks read of some heads, `head_block` heads at a
    time, in one thread with no intra-op threads on the CPU: no per-operation barrier waits on a
    sibling thread that a busy machine has paused."""
    if rows.x.device.type == "cpu":
        torch.set_num_threads(1)
    step = head_block(weights, rows.x.shape[0])
    parts = [
        _heads_ranks(weights, heads[i : i + step], out, rows, k, signs, dtypes, with_topk, cap)
        for i in range(0, len(heads), step)
    ]
    return tuple(torch.cat([part[j] for part in parts]) for j in range(3))


def _check_cap(cap: RankCap | None, n_rows: int, with_topk: bool) -> None:
    if cap is None:
        return
    if cap.k < 1:
        raise HeadscopeError(f"RankCap(k={cap.k}): the cap must be at least 1 (ranks below it are exact)")
    if cap.rows is not None and cap.rows.shape != (n_rows,):
        raise HeadscopeError(
            f"RankCap.rows has shape {tuple(cap.rows.shape)}: give one flag per row ({n_rows})"
        )
    if cap.rows is None and with_topk:
        raise HeadscopeError(
            "a rank cap on every row leaves no top-k to compute: pass with_topk=False, or name the rows "
            "that need their top-k tokens (RankCap.rows False there)"
        )


def _check_products(products: torch.dtype | None, dtype: torch.dtype) -> None:
    if products not in (None, dtype, torch.bfloat16):
        raise HeadscopeError(
            f"products={products}: the vocabulary products run in the kernel's {dtype} or in torch.bfloat16"
        )


def ov_ranks(
    weights: Weights,
    x: Float[Tensor, "row d_model"],
    targets: Targets,
    heads: list[tuple[int, int]],
    k: int,
    signs: tuple[int, ...] = (1,),
    dtype: torch.dtype = torch.float32,
    with_topk: bool = True,
    device: torch.device | None = None,
    cap: RankCap | None = None,
    products: torch.dtype | None = None,
) -> HeadRanks:
    """Ranks (and top-k) of every head, sign and row: the heads split among one worker thread per
    intra-op thread (torch.get_num_threads()), rows taken `ROW_BLOCK` at a time. With `cap`, the
    capped rows' ranks are `min(rank, cap.k)`, found with the exact early exit (`RankCap`).
    `products`: the precision of the vocabulary products' operands (None: `dtype`), bfloat16 where
    the processor multiplies it faster (`models.product_rates`); everything else stays in `dtype`."""
    _check_cap(cap, x.shape[0], with_topk)
    _check_products(products, dtype)
    n_rows, relations = targets.valid.shape
    if x.shape[0] == 0 or not heads:
        shape = (len(heads), len(signs), n_rows)
        return HeadRanks(
            torch.zeros(*shape, relations, dtype=torch.int32), torch.zeros(*shape, 0, dtype=torch.int32),
            cap, torch.zeros(len(heads), n_rows, dtype=torch.int32),
        )  # fmt: skip
    device = weights.W_U.device if device is None else device  # each head block is moved there
    out, x = readout(weights, dtype, device), x.to(device)
    capped = torch.zeros(n_rows, dtype=torch.bool) if cap is None else cap.mask(n_rows)
    rows = RowBlock(x, targets.tokens.to(device), targets.valid.to(device), capped.to(device))
    at, dtypes = 0 if cap is None else cap.k, (dtype, products)
    threads = torch.get_num_threads()
    workers = min(threads, len(heads)) if device.type == "cpu" else 1  # one stream on an accelerator
    parts = [list(p) for p in np.array_split(np.arange(len(heads)), workers) if len(p)]
    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            done = [
                pool.submit(
                    _worker, weights, [heads[i] for i in p], out, rows, k, signs, dtypes, with_topk, at
                )
                for p in parts
            ]
            results = [f.result() for f in tqdm(done, desc="OV scores", leave=False, disable=None)]
    finally:
        torch.set_num_threads(threads)
    rank, topk, blocks = (torch.cat([r[j] for r in results]) for j in range(3))
    return HeadRanks(rank, topk, cap, blocks)
