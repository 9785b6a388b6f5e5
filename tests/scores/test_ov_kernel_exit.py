"""The OV kernel's exact early exit (`RankCap`): ranks capped at k equal the full ranks capped, and
a head stops reading a row's columns exactly when k tokens are at or above every target.

Hand-built weights whose logits are small integers (every product and sum exact in float32, in any
order) give known ranks, ties at the k-th place and the column block where each row is decided;
random weights are checked against float64 logits computed the plain way, tie-aware.
"""

from __future__ import annotations

import pytest
import torch
from benchmarks.ov import random_weights, reference_logits

from headscope.errors import HeadscopeError
from headscope.models.weights import Weights
from headscope.scores import ov_fused, ov_kernel
from headscope.scores.ov_kernel import RankCap, Targets, ov_ranks
from tests.numerics import as_float64, best_target_logit, check_ov_ranks, ov_logit_tolerance, rank_window

SIGNS = (1, -1)
PATHS = ("torch", "fused")


@pytest.fixture(params=PATHS)
def counter(request, monkeypatch) -> str:
    """The torch count, or the fused C++ scan forced on a small vocabulary."""
    if request.param == "fused" and ov_fused.fused() is None:
        pytest.skip("no C++ compiler here (or HEADSCOPE_OV_FUSED=0): the fused scan cannot be built")
    monkeypatch.setattr(ov_kernel, "FUSED_MIN_VOCAB", 0 if request.param == "fused" else 1 << 30)
    return request.param


# ---- hand-built: exact integer logits ---------------------------------------------------------

COLUMNS = 16
VOCAB = 200  # 13 blocks of 16 columns
TIE = 150  # a token whose logit equals token 2's, in block 9 (the tenth)


def integer_logits() -> torch.Tensor:
    """Head 0's logits(+1) of every row: token j scores -j (token 0 first), but token TIE scores
    as token 2 does. Head 1 writes the opposite (W_O = -I)."""
    logits = -torch.arange(VOCAB, dtype=torch.float32)
    logits[TIE] = logits[2]
    return logits


def integer_weights() -> Weights:
    """d_model = d_head = 4, RMS norms of gain 1, eps 0, W_V = I, no biases: a row x = (2, 2, 2, 2)
    normalises to ones, its value v = ones has norm exactly 1 under the final norm, and the
    unembedding's first row holds the logits (the others are zero), so every logit is exact."""
    d, eye = 4, torch.eye(4)
    W_U = torch.zeros(d, VOCAB)
    W_U[0] = integer_logits()
    zeros = torch.zeros(1, d)
    return Weights(
        ln1_w=torch.ones(1, d), ln1_b=zeros, ln2_w=torch.ones(1, d), ln2_b=zeros,
        W_V=eye.expand(1, 2, d, d).clone(), b_V=torch.zeros(1, 2, d),
        W_O=torch.stack([eye, -eye])[None].clone(), b_O=zeros, lnf_w=torch.ones(d), lnf_b=torch.zeros(d),
        W_U=W_U, b_U=torch.zeros(VOCAB), eps=0.0, normalization="RMS",
    )  # fmt: skip


# Per row: target tokens (one relation, two spellings; a repeated token is one spelling).
ROWS = [
    (2, 2),  # rank 3 at k = 3: tokens 0, 1 above and TIE equal, found in block 9 (the tie at the k-th place)
    (1, 1),  # rank 1: a hit, every column read
    (5, 5),  # rank 5: three tokens above it in block 0 (decided there)
    (2, TIE),  # both spellings at -2: rank 3 (the other spelling counts against), decided in block 0
    (60, 60),  # rank 60: decided in block 0
    (TIE, TIE),  # rank 3 (tokens 0, 1 and 2), decided in block 0
]


def _plain_rank_and_exit(logits: torch.Tensor, tokens: tuple[int, ...], k: int) -> tuple[int, int]:
    """The rank (the project's rule) and the number of column blocks read until it is known to be k
    or more (all of them for a hit), counted column by column: the target tokens' own logits are
    known first, so the others at or above the best target need reach k + 1 - (targets there)."""
    best = logits[list(tokens)].max()
    rank = int((logits >= best).sum()) - 1
    if rank < k:
        return rank, -(-VOCAB // COLUMNS)
    others = logits >= best
    own = int(others[list(set(tokens))].sum())
    others[list(tokens)] = False
    need = max(k + 1 - own, 1)  # decided at the first check, after block 0, when need is already met
    reached = int(torch.nonzero(others.long().cumsum(0) >= need)[0]) if k + 1 - own > 0 else 0
    return rank, reached // COLUMNS + 1


def _hand_built(signs) -> tuple[torch.Tensor, Targets]:
    tokens = torch.tensor(ROWS)[:, None, :]  # [row, relation, target]
    return torch.full((len(ROWS), 4), 2.0), Targets(tokens, torch.ones(len(ROWS), 1, dtype=torch.bool))


@pytest.mark.parametrize("k", [1, 3, 4])
def test_hand_built_ties_at_the_kth_place_and_the_block_each_row_is_decided(counter, monkeypatch, k):
    """One sign: each head's capped ranks are the plain ranks capped, and the blocks it read for each
    row are exactly those the plain count needs (the drop-out path, not a timing)."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", COLUMNS)
    x, targets = _hand_built((1,))
    heads = [(0, 0), (0, 1)]
    found = ov_ranks(integer_weights(), x, targets, heads, k, (1,), with_topk=False, cap=RankCap(k))
    for h, logits in enumerate([integer_logits(), -integer_logits()]):
        plain = [_plain_rank_and_exit(logits, row, k) for row in ROWS]
        assert found.rank[h, 0, :, 0].tolist() == [min(rank, k) for rank, _ in plain], f"head {h}"
        assert found.blocks[h].tolist() == [blocks for _, blocks in plain], f"head {h}"
    if k == 3:  # the case the rows were written for
        assert found.rank[0, 0, :, 0].tolist() == [3, 1, 3, 3, 3, 3]
        assert found.blocks[0].tolist() == [10, 13, 1, 1, 1, 1]


def test_a_row_leaves_only_when_both_signs_are_decided(counter, monkeypatch):
    """Sign -1 negates the logits: token 1 (rank 1 for sign +1, a hit) is near the bottom for sign -1
    (a miss decided at once), so the row is read to the end; token 60 is a miss for both signs."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", COLUMNS)
    x, targets = _hand_built(SIGNS)
    found = ov_ranks(integer_weights(), x, targets, [(0, 0)], 3, SIGNS, with_topk=False, cap=RankCap(3))
    logits = integer_logits()
    for s, sign in enumerate(SIGNS):
        plain = [min(_plain_rank_and_exit(sign * logits, row, 3)[0], 3) for row in ROWS]
        assert found.rank[0, s, :, 0].tolist() == plain
    want = [max(_plain_rank_and_exit(sign * logits, row, 3)[1] for sign in SIGNS) for row in ROWS]
    assert found.blocks[0].tolist() == want
    assert want[1] == 13 and min(want) < 13  # a hit of one sign keeps the row; a double miss leaves


def test_rows_not_capped_keep_exact_ranks_and_their_top_k(counter, monkeypatch):
    """A cap on some rows: the others are read to the end and get the ranks and top-k of a pass
    without a cap; the capped rows get ranks capped and no top-k (-1)."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", COLUMNS)
    x, targets = _hand_built((1,))
    weights, heads = integer_weights(), [(0, 0), (0, 1)]
    rows = torch.tensor([True, False, True, False, True, False])
    full = ov_ranks(weights, x, targets, heads, 3, (1,))
    mixed = ov_ranks(weights, x, targets, heads, 3, (1,), cap=RankCap(3, rows))
    assert torch.equal(mixed.rank[:, :, ~rows], full.rank[:, :, ~rows])
    assert torch.equal(mixed.rank[:, :, rows], full.rank[:, :, rows].clamp(max=3))
    assert torch.equal(mixed.topk[:, :, ~rows], full.topk[:, :, ~rows])
    assert (mixed.topk[:, :, rows] == -1).all()
    assert (mixed.blocks[:, ~rows] == 13).all() and (mixed.blocks[0, rows] < 13).any()
    assert (full.blocks == 13).all()


# ---- random weights, against float64 logits -----------------------------------------------------


def _random_rows(n_rows: int, vocab: int, seed: int) -> tuple[torch.Tensor, Targets]:
    """Rows with three relations of two spellings each; a fifth of the cells not valid."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n_rows, 3, 2), generator=g)
    valid = torch.rand(n_rows, 3, generator=g) > 0.2
    return torch.randn(n_rows, 16, generator=g), Targets(tokens, valid)


def tie_free(weights: Weights, x: torch.Tensor, targets: Targets, heads, signs) -> torch.Tensor:
    """[head, sign, row, relation]: valid cells where no other float64 logit lies within float32
    rounding of the target's (there two computations' ranks must agree exactly)."""
    wide, free = (
        as_float64(weights),
        torch.zeros(len(heads), len(signs), *targets.valid.shape, dtype=torch.bool),
    )
    for h, (layer, head) in enumerate(heads):
        for s, sign in enumerate(signs):
            logits = reference_logits(wide, x.double(), layer, head, sign)  # [row, vocab]
            tol = ov_logit_tolerance(weights.d_model, weights.d_head, logits)
            for r in range(targets.valid.shape[1]):
                wanted = [tuple(t) for t in targets.tokens[:, r].tolist()]
                low, high = rank_window(logits, best_target_logit(logits, wanted), tol)
                free[h, s, :, r] = (low == high) & targets.valid[:, r]
    return free


@pytest.mark.parametrize("k", [1, 5, 40])
def test_random_capped_ranks_are_the_full_ranks_capped(counter, monkeypatch, k):
    monkeypatch.setattr(ov_kernel, "COLUMNS", 64)  # 600 columns in 10 blocks
    weights = random_weights(n_layers=2, n_heads=2, d_model=16, d_head=4, d_vocab=600, seed=7)
    x, targets = _random_rows(30, 600, seed=8)
    heads = [(0, 0), (0, 1), (1, 0), (1, 1)]
    full = ov_ranks(weights, x, targets, heads, 5, SIGNS, with_topk=False)
    capped = ov_ranks(weights, x, targets, heads, 5, SIGNS, with_topk=False, cap=RankCap(k))
    check_ov_ranks(weights, x, targets, heads, SIGNS, capped, what="capped")  # tie-aware, float64
    free = tie_free(weights, x, targets, heads, SIGNS)
    assert torch.equal(capped.rank[free], full.rank.clamp(max=k)[free])
    hit = ((full.rank < k) & targets.valid).any(-1).any(1)  # [head, row]: a hit needs every column
    assert (capped.blocks[hit] == 10).all() and (capped.blocks[~hit] < 10).any()  # a miss may need all
    assert (full.blocks == 10).all()


def test_most_rows_leave_in_the_first_block_on_a_wide_vocabulary(counter):
    """Random weights put targets far down: with k = 5 of 9,000 columns, nearly every (head, row)
    is decided in the first block of 1,024 (random weights flatter the exit: see the benchmark)."""
    weights = random_weights(n_layers=1, n_heads=2, d_model=16, d_head=4, d_vocab=9000, seed=4)
    x, targets = _random_rows(24, 9000, seed=5)
    capped = ov_ranks(weights, x, targets, [(0, 0), (0, 1)], 5, SIGNS, with_topk=False, cap=RankCap(5))
    check_ov_ranks(weights, x, targets, [(0, 0), (0, 1)], SIGNS, capped, what="capped")
    assert float((capped.blocks == 1).float().mean()) > 0.8


def test_a_cap_on_every_row_with_top_k_asked_is_refused():
    weights = random_weights(n_layers=1, n_heads=1, d_model=16, d_head=4, d_vocab=100, seed=1)
    x, targets = _random_rows(3, 100, seed=2)
    with pytest.raises(HeadscopeError, match="with_topk=False"):
        ov_ranks(weights, x, targets, [(0, 0)], 5, cap=RankCap(5))
    with pytest.raises(HeadscopeError, match="at least 1"):
        ov_ranks(weights, x, targets, [(0, 0)], 5, with_topk=False, cap=RankCap(0))
    with pytest.raises(HeadscopeError, match="one flag per row"):
        ov_ranks(weights, x, targets, [(0, 0)], 5, cap=RankCap(5, torch.ones(2, dtype=torch.bool)))
