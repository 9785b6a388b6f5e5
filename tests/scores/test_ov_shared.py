"""One OV kernel pass shared by several score sets: each gets the ranks of a pass of its own.

Stacked rows are another computation than a call's own pass (other matrix shapes, and the factored
or direct form chosen for more rows), so each call's share is checked against float64 logits
computed the plain way, tie-aware (`tests.numerics.check_ov_ranks`), as its own pass is."""

from __future__ import annotations

import pytest
import torch
from benchmarks.ov import random_weights

from headscope.scores import ov_kernel
from headscope.scores.ov_kernel import FUSED_MIN_VOCAB, Targets, ov_ranks
from headscope.scores.ov_shared import KernelCall, KernelSettings, shared_ranks, stacked_targets
from tests.numerics import check_ov_ranks

SIGNS = (1, -1)
HEADS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _call(rows: int, relations: int, width: int, vocab: int, seed: int) -> KernelCall:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (rows, relations, width), generator=g)
    valid = torch.rand(rows, relations, generator=g) > 0.2
    return KernelCall(torch.randn(rows, 16, generator=g), Targets(tokens, valid))


@pytest.mark.parametrize("vocab", [300, FUSED_MIN_VOCAB + 100])  # the torch count, the fused scan
def test_each_call_gets_the_ranks_and_topk_of_its_own_pass(vocab):
    weights = random_weights(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=vocab, seed=3)
    calls = [_call(10, 2, 1, vocab, 1), _call(7, 3, 2, vocab, 2), _call(5, 1, 3, vocab, 3)]
    settings = KernelSettings(HEADS, 5, SIGNS, torch.float32, torch.device("cpu"))
    together = shared_ranks(weights, calls, settings)
    for call, share in zip(calls, together, strict=True):
        alone = ov_ranks(weights, call.x, call.targets, list(HEADS), 5, SIGNS, torch.float32, True)
        assert share.rank.shape == alone.rank.shape and share.topk.shape == alone.topk.shape
        for ranks in (share, alone):
            check_ov_ranks(weights, call.x, call.targets, HEADS, SIGNS, ranks, what="shared pass")


def test_stacked_targets_pad_with_copies_that_are_not_valid():
    a = Targets(torch.tensor([[[1], [2]]]), torch.tensor([[True, False]]))  # 1 row, 2 relations, width 1
    b = Targets(torch.tensor([[[3, 4, 5]], [[6, 7, 8]]]), torch.tensor([[True], [True]]))  # 2 rows, 1 x 3
    stacked = stacked_targets([a, b])
    assert stacked.tokens.tolist() == [
        [[1, 1, 1], [2, 2, 2]],
        [[3, 4, 5], [3, 4, 5]],
        [[6, 7, 8], [6, 7, 8]],
    ]
    assert stacked.valid.tolist() == [[True, False], [True, False], [True, False]]


@pytest.mark.parametrize("vocab", [300, FUSED_MIN_VOCAB + 100])
def test_a_capped_call_takes_the_exit_and_the_others_keep_ranks_and_topk(vocab, monkeypatch):
    """A call that reads only hits (the atlas without its per-source table) stacked with two that
    need ranks and top-k: its ranks are its own pass's capped at k, with no top-k; theirs are whole."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", 64)  # several blocks of columns: rows can leave early
    weights = random_weights(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=vocab, seed=3)
    plain = [_call(10, 2, 1, vocab, 1), _call(7, 3, 2, vocab, 2), _call(5, 1, 3, vocab, 3)]
    calls = [plain[0], KernelCall(plain[1].x, plain[1].targets, capped=True), plain[2]]
    settings = KernelSettings(HEADS, 5, SIGNS, torch.float32, torch.device("cpu"))
    together = shared_ranks(weights, calls, settings)
    for call, share in zip(calls, together, strict=True):
        assert (share.cap is not None) == call.capped
        assert share.topk.shape[-1] == (0 if call.capped else 5)
        assert share.blocks.shape == (len(HEADS), call.x.shape[0])
        check_ov_ranks(weights, call.x, call.targets, HEADS, SIGNS, share, what="shared pass")
    assert together[1].rank.max() <= 5 and together[1].cap.k == 5
    whole = ov_kernel.n_blocks(vocab)
    assert (together[0].blocks == whole).all() and (together[2].blocks == whole).all()  # read to the end
    assert (together[1].blocks < whole).any()


@pytest.mark.parametrize("vocab", [300, FUSED_MIN_VOCAB + 100])
def test_a_call_capped_but_for_some_rows_reads_those_whole_in_the_same_pass(vocab, monkeypatch):
    """A report task's rows with a detail sample (`KernelCall.exact`) beside a call read whole and
    one capped whole (the atlas): the sample's rows get the ranks and top-k of the call read whole,
    the call's other rows those ranks capped at k and no top-k (-1), in one pass (each share checked
    against float64 logits computed the plain way, tie-aware, capped where its cap says)."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", 64)
    weights = random_weights(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=vocab, seed=3)
    plain = [_call(10, 2, 1, vocab, 1), _call(9, 3, 2, vocab, 2), _call(5, 1, 3, vocab, 3)]
    exact = torch.tensor([True, False, False, True, False, False, True, False, False])
    calls = [
        plain[0],
        KernelCall(plain[1].x, plain[1].targets, capped=True, exact=exact),
        KernelCall(plain[2].x, plain[2].targets, capped=True),
    ]
    settings = KernelSettings(HEADS, 5, SIGNS, torch.float32, torch.device("cpu"))
    together = shared_ranks(weights, calls, settings)
    for call, share in zip(calls, together, strict=True):
        check_ov_ranks(weights, call.x, call.targets, HEADS, SIGNS, share, what="shared pass")
    mixed, whole = together[1], ov_kernel.n_blocks(vocab)
    assert mixed.cap.rows.tolist() == (~exact).tolist() and mixed.topk.shape[-1] == 5
    assert (mixed.topk[:, :, exact] >= 0).all() and (mixed.topk[:, :, ~exact] == -1).all()
    assert mixed.rank[:, :, ~exact].max() <= 5 and mixed.rank[:, :, exact].max() > 5
    assert (mixed.blocks[:, exact] == whole).all() and (mixed.blocks[:, ~exact] < whole).any()
    assert together[0].cap is None and (together[0].blocks == whole).all()
    assert together[2].cap.rows is None and together[2].topk.shape[-1] == 0
