"""The benchmark's fast path and its reference loop agree (ranks and top-k exactly but at float ties)."""

import dataclasses

import pytest
import torch
from benchmarks.ov import RELATIONS, Item, random_weights, reference_head

from headscope.scores import ov_fused, ov_kernel
from headscope.scores.ov_kernel import Targets, ov_ranks
from tests.numerics import check_topk, float_tolerance, rank_window


def _double(weights):
    return dataclasses.replace(
        weights, **{f.name: getattr(weights, f.name).double() for f in dataclasses.fields(weights)
                    if isinstance(getattr(weights, f.name), torch.Tensor)}
    )  # fmt: skip


def _item(n_rows: int, d_model: int, d_vocab: int) -> Item:
    g = torch.Generator().manual_seed(5)
    ids = torch.randperm(d_vocab - 1, generator=g)[:n_rows]
    tokens = torch.stack([ids, ids + 1], 1)[:, :, None]  # copy, next
    return Item(
        "small",
        torch.randn(n_rows, d_model, generator=g, dtype=torch.float64),
        Targets(tokens, torch.ones(n_rows, 2, dtype=torch.bool)),
    )


@pytest.fixture(params=["fused", "torch"])
def counter(request, monkeypatch):
    """The compiled counter, then plain torch operations."""
    if request.param == "torch":
        monkeypatch.setattr(ov_kernel, "fused", lambda: None)
    elif ov_fused.fused() is None:
        pytest.skip("no C++ compiler here: the fused counter cannot be built")
    else:  # used from FUSED_MIN_VOCAB up; these small vocabularies must take it too
        monkeypatch.setattr(ov_kernel, "FUSED_MIN_VOCAB", 0)
    return request.param


@pytest.mark.parametrize("n_rows", [5, 40])  # the direct form, then the factored form
@pytest.mark.parametrize("blocks", ["one", "many"])
def test_fast_and_reference_agree(n_rows, blocks, counter, monkeypatch):
    if blocks == "many":  # several column, head and row blocks, and a short last block of each
        monkeypatch.setattr(ov_kernel, "COLUMNS", 64)
        monkeypatch.setattr(ov_kernel, "BLOCK_FLOATS", 64 * 14)
        monkeypatch.setattr(ov_kernel, "ROW_BLOCK", 17)
    weights = _double(random_weights(n_layers=2, n_heads=3, d_model=24, d_head=6, d_vocab=300, seed=1))
    heads = [(layer, head) for layer in range(2) for head in range(3)]
    item = _item(n_rows, 24, 300)
    fast = ov_ranks(weights, item.x, item.targets, heads, k=5, signs=(1, -1), dtype=torch.float64)
    for i, head in enumerate(heads):
        reference = reference_head(weights, item, *head)
        for name, sign in RELATIONS:
            rank, top, logits, best = reference[(name, sign)]
            got = fast.rank[i, 0 if sign == 1 else 1, :, 0 if name == "copy" else 1].long()
            tol = float_tolerance(3 * 24 + 6, float(logits.abs().max()), torch.float64)
            low, high = rank_window(logits, best, tol)  # one rank, but at a float64 tie
            assert bool(((low <= got) & (got <= high)).all())
            check_topk(fast.topk[i, 0 if sign == 1 else 1], logits, tol)


def test_without_topk_same_ranks(counter):
    weights = random_weights(n_layers=1, n_heads=2, d_model=16, d_head=4, d_vocab=200, seed=2)
    item = _item(30, 16, 200)
    item = dataclasses.replace(item, x=item.x.float())
    heads = [(0, 0), (0, 1)]
    full = ov_ranks(weights, item.x, item.targets, heads, k=3, signs=(1, -1))
    bare = ov_ranks(weights, item.x, item.targets, heads, k=3, signs=(1, -1), with_topk=False)
    assert torch.equal(full.rank, bare.rank) and bare.topk.shape == (2, 2, 30, 0)
