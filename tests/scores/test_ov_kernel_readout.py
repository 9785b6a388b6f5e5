"""The OV kernel's readout keeps a bfloat16 unembedding in bfloat16 (a streamed model's) and
converts it a block of columns at a time: the same numbers as a whole float32 copy of it (the
path before), without the copy.

The conversion bfloat16 -> float32 is exact, so the gain-scaled columns and target rows are the
very products of the whole copy (bit-identical); `c = b_f W_U + b_U` is summed block by block,
another order of the same sums (within float32 rounding). The kernel's ranks on the bfloat16
unembedding are checked against float64 logits computed the plain way, tie-aware.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from benchmarks.ov import random_weights

from headscope.models.weights import Weights
from headscope.scores import ov_kernel
from headscope.scores.ov_kernel import RankCap, Readout, Targets, ov_ranks, readout
from tests.numerics import assert_float_close, check_ov_ranks

D_MODEL, VOCAB = 16, 2500  # 2,500 columns: blocks of 1,024 and a ragged last one
SIGNS = (1, -1)


def bfloat16_unembedding(weights: Weights) -> Weights:
    """The weights with W_U rounded to bfloat16, held as a streamed model holds it: the transpose of
    the unembedding's rows [d_vocab, d_model] (a view, not contiguous)."""
    rows = weights.W_U.T.contiguous().to(torch.bfloat16)  # [d_vocab, d_model]
    return dataclasses.replace(weights, W_U=rows.T)


def whole_copy_readout(weights: Weights) -> Readout:
    """The readout as it was made before: W_U copied whole to float32, one product for c."""
    W_U = weights.W_U.to(torch.float32)
    return Readout(W_U, weights.lnf_w, weights.lnf_b @ W_U + weights.b_U)


def test_bfloat16_columns_and_rows_are_the_whole_float32_copys():
    weights = bfloat16_unembedding(random_weights(1, 2, D_MODEL, 4, VOCAB, seed=3))
    ours, before = readout(weights, torch.float32, torch.device("cpu")), whole_copy_readout(weights)
    assert ours.W_U.dtype == torch.bfloat16  # kept in its own precision: no float32 copy
    for start in range(0, VOCAB, ov_kernel.COLUMNS):
        cols = slice(start, start + ov_kernel.COLUMNS)
        assert torch.equal(ours.columns(cols), before.columns(cols)), f"columns from {start}"
    tokens = torch.tensor([[0, 7], [VOCAB - 1, 1024]])
    assert torch.equal(ours.rows_of(tokens), before.rows_of(tokens))
    assert_float_close(ours.c, before.c, D_MODEL + 1, "c = b_f W_U + b_U")


def test_a_float32_unembedding_is_read_as_before():
    """Where W_U is in the kernel's precision already, the readout holds it and c is one product."""
    weights = random_weights(1, 2, D_MODEL, 4, VOCAB, seed=3)
    ours, before = readout(weights, torch.float32, torch.device("cpu")), whole_copy_readout(weights)
    assert ours.W_U is weights.W_U
    assert torch.equal(ours.c, before.c)


@pytest.mark.parametrize("cap", [None, 5])
def test_ranks_on_a_bfloat16_unembedding_are_the_plain_ones(cap):
    weights = bfloat16_unembedding(random_weights(2, 2, D_MODEL, 4, VOCAB, seed=5))
    g = torch.Generator().manual_seed(6)
    x = torch.randn(20, D_MODEL, generator=g)
    targets = Targets(torch.randint(0, VOCAB, (20, 2, 2), generator=g), torch.ones(20, 2, dtype=torch.bool))
    heads = [(0, 0), (0, 1), (1, 0), (1, 1)]
    found = ov_ranks(
        weights, x, targets, heads, 5, SIGNS, with_topk=cap is None, cap=None if cap is None else RankCap(cap)
    )
    check_ov_ranks(weights, x, targets, heads, SIGNS, found, what="bfloat16 W_U")  # float64, tie-aware
