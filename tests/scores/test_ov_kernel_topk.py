"""The OV kernel's running top-k: the fused C++ scan, the torch path and a plain sort agree."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from benchmarks.ov import random_weights

from headscope.scores import ov_fused, ov_kernel
from headscope.scores.ov_kernel import Accumulator, RowTargets, Targets, Work, ov_ranks

SIGNS = (1, -1)


def _scan():
    scan = ov_fused.fused()
    if scan is None:
        pytest.skip("no C++ compiler here (or HEADSCOPE_OV_FUSED=0): the fused scan cannot be built")
    return scan


def _sorted_top(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the k largest values, descending, equal values by lower column first (a plain sort)."""
    columns = np.arange(logits.shape[-1])
    order = np.stack([np.lexsort((columns, -row))[:k] for row in logits])  # [row, k]
    return np.take_along_axis(logits, order, -1), order


def _blocks(dtype: torch.dtype, width: int, n_blocks: int, ties: bool, seed: int):
    """Logits(+1) [head, row, column] cut into blocks of `width` columns (the last one short)."""
    g = torch.Generator().manual_seed(seed)
    vocab = width * n_blocks - 7
    block = torch.randn(3, 4, vocab, generator=g, dtype=torch.float64)
    c = torch.randn(vocab, generator=g, dtype=torch.float64)
    if ties:  # few distinct values: many exact ties, for both signs
        block, c = block.mul(2).round(), c.mul(2).round()
    return block.to(dtype), (2 * c).to(dtype)


def _full_logits(block: torch.Tensor, twice_c: torch.Tensor) -> torch.Tensor:
    """[sign, head, row, column], -1 by the same float subtraction as the kernel."""
    return torch.stack([block if s == 1 else twice_c - block for s in SIGNS])


def _fused_top(block, twice_c, k: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused scan over every block of columns: counts against a threshold of 0, and the top-k."""
    heads, rows, vocab = block.shape
    on = dict(dtype=block.dtype)
    threshold = torch.zeros(len(SIGNS), heads, rows, 1, **on)
    count = torch.zeros(len(SIGNS), heads, rows, 1, **on)
    top_v = torch.full((len(SIGNS), heads, rows, k), -torch.inf, **on)
    top_i = torch.zeros(len(SIGNS), heads, rows, k, dtype=torch.long)
    scan = _scan()
    for start in range(0, vocab, width):
        cols = slice(start, min(start + width, vocab))
        no_skip = torch.empty(rows, 0, dtype=torch.long)
        scan(
            block[:, :, cols].contiguous(),
            twice_c[cols],
            threshold,
            count,
            top_v,
            top_i,
            list(SIGNS),
            start,
            no_skip,
        )
    return count[..., 0], top_v, top_i


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 5])
def test_fused_topk_is_the_full_topk(dtype, k):
    """Random tie-free logits over 5 blocks: the same as torch.topk of whole rows, and the counts too."""
    block, twice_c = _blocks(dtype, width=96, n_blocks=5, ties=False, seed=k)
    logits = _full_logits(block, twice_c)  # [sign, head, row, column]
    count, top_v, top_i = _fused_top(block, twice_c, k, width=96)
    values, index = logits.topk(k, -1)
    assert torch.equal(top_v, values) and torch.equal(top_i, index)
    assert torch.equal(count, (logits >= 0).sum(-1).to(dtype))
    assert (top_i >= 96).any(), "a top token from a later block (a start offset) is checked"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize(("width", "n_blocks"), [(40, 4), (3, 12)])  # blocks wider, then narrower than k
def test_ties_lower_token_first_fused_and_torch(dtype, k, width, n_blocks):
    """Logits with many exact ties: both paths keep the lowest token ids among equal values."""
    block, twice_c = _blocks(dtype, width=width, n_blocks=n_blocks, ties=True, seed=10 + k)
    logits = _full_logits(block, twice_c)
    want_v, want_i = _sorted_top(logits.reshape(-1, logits.shape[-1]).numpy(), k)
    _, top_v, top_i = _fused_top(block, twice_c, k, width=width)
    assert np.array_equal(top_v.reshape(-1, k).numpy(), want_v)
    assert np.array_equal(top_i.reshape(-1, k).numpy(), want_i)
    torch_v, torch_i = _torch_top(block, twice_c, k, width=width)
    assert torch.equal(torch_v, top_v) and torch.equal(torch_i, top_i)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_torch_first_k_orders_ties_by_column(k):
    """The torch path's per-block choice: rows with no ties, some, all equal, fewer columns than k."""
    g = torch.Generator().manual_seed(k)
    values = torch.cat(
        [torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g).round(), torch.zeros(2, 6)]
    )
    for width in (6, 2):
        got_v, got_i = ov_kernel._first(values[:, :width], k)
        want_v, want_i = _sorted_top(values[:, :width].numpy(), k)
        assert np.array_equal(got_v.numpy(), want_v) and np.array_equal(got_i.numpy(), want_i)


def _torch_top(block, twice_c, k: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The Accumulator's torch path (no fused scan) fed the same blocks."""
    heads, rows, vocab = block.shape
    zeros = torch.zeros(len(SIGNS), heads, rows, 1, dtype=block.dtype)
    targets = RowTargets(
        tokens=torch.zeros(rows, 1, dtype=torch.long), first=torch.zeros(rows, 1, dtype=torch.bool),
        logits=zeros, threshold=zeros,
    )  # fmt: skip  # no target columns to swap
    acc = Accumulator(targets, k, True, SIGNS, use_fused=False)
    work = Work(
        torch.empty(0), torch.empty(heads, rows, width, dtype=block.dtype),
        torch.empty(heads, rows, 1, width, dtype=block.dtype),
    )  # fmt: skip
    for start in range(0, vocab, width):
        cols = slice(start, min(start + width, vocab))
        acc.add(block[:, :, cols].contiguous(), twice_c[cols], slice(0, heads), slice(0, rows), start, work)
    return acc.top_v, acc.top_i


def _item(n_rows: int, d_model: int, d_vocab: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(d_vocab - 1, generator=g)[:n_rows]
    tokens = torch.stack([ids, ids + 1], 1)[:, :, None]  # copy, next
    x = torch.randn(n_rows, d_model, generator=g)
    return x, Targets(tokens, torch.ones(n_rows, 2, dtype=torch.bool))


def _double(weights):
    tensors = {
        f.name: getattr(weights, f.name).double()
        for f in dataclasses.fields(weights)
        if isinstance(getattr(weights, f.name), torch.Tensor)
    }
    return dataclasses.replace(weights, **tensors)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ov_ranks_fused_equals_torch_path(dtype, monkeypatch):
    """A vocabulary above FUSED_MIN_VOCAB: ranks and top-k identical with and without the fused scan,
    and the top-k that of the full logits computed directly."""
    _scan()
    weights = random_weights(n_layers=1, n_heads=2, d_model=16, d_head=4, d_vocab=9000, seed=4)
    weights = _double(weights) if dtype == torch.float64 else weights
    x, targets = _item(24, 16, 9000)
    heads = [(0, 0), (0, 1)]
    fast = ov_ranks(weights, x, targets, heads, k=5, signs=SIGNS, dtype=dtype)
    monkeypatch.setattr(ov_kernel, "fused", lambda: None)
    plain = ov_ranks(weights, x, targets, heads, k=5, signs=SIGNS, dtype=dtype)
    assert torch.equal(fast.rank, plain.rank) and torch.equal(fast.topk, plain.topk)
    assert fast.topk.shape == (2, 2, 24, 5) and fast.topk.max() >= ov_kernel.COLUMNS


def test_fused_path_runs_no_torch_topk(monkeypatch):
    """With the fused scan, the torch top-k never runs and no negated block is allocated."""
    _scan()

    def forbidden(*args, **kwargs):
        raise AssertionError("the torch top-k ran although the fused scan is in use")

    monkeypatch.setattr(Accumulator, "_update_topk", forbidden)
    monkeypatch.setattr(Accumulator, "_count", forbidden)
    widths = []
    add = Accumulator.add
    monkeypatch.setattr(
        Accumulator, "add", lambda self, *a: widths.append(a[-1].negated.shape[-1]) or add(self, *a)
    )
    weights = random_weights(n_layers=1, n_heads=2, d_model=16, d_head=4, d_vocab=9000, seed=5)
    x, targets = _item(8, 16, 9000)
    ranks = ov_ranks(weights, x, targets, [(0, 0), (0, 1)], k=3, signs=SIGNS)
    assert ranks.topk.shape == (2, 2, 8, 3) and widths and set(widths) == {0}


@pytest.mark.parametrize("k", [0, 3])
def test_fused_counts_repeated_thresholds_as_a_plain_count(k):
    """Relations whose thresholds repeat an earlier one's (a shared pass pads every row with copies
    of its first relation) get the same counts as a plain comparison of every column, each sign."""
    block, twice_c = _blocks(torch.float32, width=50, n_blocks=3, ties=True, seed=3)
    logits = _full_logits(block, twice_c)  # [sign, head, row, column]
    heads, rows, vocab = block.shape
    g = torch.Generator().manual_seed(4)
    distinct = torch.randn(len(SIGNS), heads, rows, 3, generator=g).mul(2).round()
    threshold = distinct[..., [0, 1, 0, 2, 1, 0]].contiguous()  # relations 2, 4 and 5 repeat
    count = torch.zeros_like(threshold)
    top_v = torch.full((len(SIGNS), heads, rows, k), -torch.inf)
    top_i = torch.zeros(len(SIGNS), heads, rows, k, dtype=torch.long)
    for start in range(0, vocab, 50):
        cols = slice(start, min(start + 50, vocab))
        skip = torch.empty(rows, 0, dtype=torch.long)
        _scan()(block[:, :, cols].contiguous(), twice_c[cols], threshold, count, top_v, top_i,
                list(SIGNS), start, skip)  # fmt: skip
    want = (logits[:, :, :, None, :] >= threshold[..., None]).sum(-1)  # [sign, head, row, relation]
    assert torch.equal(count, want.float())
