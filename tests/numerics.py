"""How close two computations of one quantity must be, and ranks compared where floats can tie.

Two computations of one sum that take the terms in different orders (another matrix shape,
another thread count, Hugging Face's modules against ours, another processor's kernels) agree
only to rounding: each lies within gamma_n * sum|terms| of the exact value, gamma_n ~ n * eps
(Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1), so the two lie within twice
that of each other. `float_tolerance` is that bound with `magnitude` standing for sum|terms|.
Where a rank or a top-k list is read from such numbers, it is exact except where two logits lie
within the tolerance of each other: `check_ranks` and `check_topk` accept a difference only
there, and warn how many there were (pytest lists the warnings), so a test says what it allowed.
Bit-identity is asserted only for the same computation run twice.
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
from torch import Tensor


class FloatTieWarning(UserWarning):
    """Ranks or top-k lists that differed between two computations, each at a float tie."""


def float_tolerance(n_terms: int, magnitude: float, dtype: torch.dtype = torch.float32) -> float:
    """Two float computations of one sum of `n_terms` products, summed in different orders, lie
    within 2 * n * eps * magnitude of each other (magnitude >= sum of the terms' absolute values)."""
    return 2.0 * n_terms * torch.finfo(dtype).eps * float(magnitude)


def assert_float_close(got: Tensor, want: Tensor, n_terms: int, what: str = "") -> None:
    """Elementwise within `float_tolerance(n_terms, max |want|)` (float32 arithmetic)."""
    assert got.shape == want.shape, what
    scale = float(want.abs().max()) if want.numel() else 0.0
    tol = float_tolerance(n_terms, max(scale, torch.finfo(torch.float32).tiny))
    worst = float((got.double() - want.double()).abs().max()) if want.numel() else 0.0
    assert worst <= tol, f"{what}: differs by {worst:.3g}, more than float32 rounding allows ({tol:.3g})"


def rank_window(logits: Tensor, best: Tensor, tol: float) -> tuple[Tensor, Tensor]:
    """Per row, the ranks consistent with logits known to within `tol`: from the tokens surely above
    the target (logit > best + 2 tol) to every token not surely below it, less the target itself."""
    low = (logits > best[:, None] + 2 * tol).sum(-1)
    high = (logits >= best[:, None] - 2 * tol).sum(-1) - 1
    return low, high


def best_target_logit(logits: Tensor, targets: list[tuple[int, ...]]) -> Tensor:
    """Per row: the highest logit among its target tokens (a word with and without a space)."""
    return torch.stack([logits[i, list(t)].max() for i, t in enumerate(targets)])


def exact_ranks(logits: Tensor, targets: list[tuple[int, ...]]) -> Tensor:
    """How many other tokens have a logit at least the best target token's (the project's rule)."""
    best = best_target_logit(logits, targets)
    return (logits >= best[:, None]).sum(-1) - 1


def report_ties(what: str, differ: int, total: int, kind: str) -> int:
    if differ:
        warnings.warn(
            f"{what}: {differ} of {total} {kind} differ, each at a float tie", FloatTieWarning, stacklevel=3
        )
    return differ


def check_ranks(
    got: Tensor,
    logits: Tensor,
    targets: list[tuple[int, ...]],
    tol: float,
    what: str = "ranks",
    cap: int | None = None,
) -> int:
    """`got` [row] equals the exact rank of `logits` [row, vocab] except within a tie window;
    returns how many rows differed (each inside its window). With `cap`, `got` is the rank capped
    there (`min(rank, cap)`, the OV kernel's `RankCap`), and so are the window and the exact rank."""
    best = best_target_logit(logits, targets)
    low, high = rank_window(logits, best, tol)
    exact = exact_ranks(logits, targets)
    if cap is not None:
        low, high, exact = low.clamp(max=cap), high.clamp(max=cap), exact.clamp(max=cap)
    got = got.long().cpu()
    outside = torch.nonzero((got < low) | (got > high)).flatten().tolist()
    assert not outside, (
        f"{what}: {len(outside)} ranks outside the float-tie window, e.g. row {outside[0]}: "
        f"{int(got[outside[0]])} not in [{int(low[outside[0]])}, {int(high[outside[0]])}]"
    )
    return report_ties(what, int((got != exact).sum()), len(got), "ranks")


def check_topk(got: Tensor, logits: Tensor, tol: float, what: str = "top-k") -> int:
    """`got` [row, k] token ids: distinct, and every one within 2 tol of the row's k-th largest
    logit or above it (a list another summation order could give); the exact order of values
    otherwise. Returns how many rows differ from the exact top-k list."""
    k = got.shape[-1]
    values, index = logits.topk(k, -1)
    got = got.long().cpu()
    chosen = logits.gather(-1, got)  # [row, k]
    assert bool((chosen >= values[:, -1:] - 2 * tol).all()), f"{what}: a token below the top {k}"
    assert bool((chosen[:, :-1] >= chosen[:, 1:] - 2 * tol).all()), f"{what}: out of order"
    assert all(len(set(r)) == k for r in got.tolist()), f"{what}: a token twice"
    return report_ties(what, int((got != index).any(-1).sum()), len(got), "top-k lists")


def ov_logit_tolerance(d_model: int, d_head: int, logits: Tensor, n_upstream: int = 0) -> float:
    """Float32 tolerance of OV logits [row, vocab]: the sums on their path (the value input's norm
    and W_V over d_model, W_O over d_head, the final norm and W_U over d_model) plus `n_upstream`
    terms of whatever computed the input vectors; magnitude: the largest logit, at least 1."""
    n_terms = n_upstream + 3 * d_model + d_head
    return float_tolerance(n_terms, max(float(logits.abs().max()), 1.0))


def as_float64(weights):
    """The same weights record with every tensor in float64 (an independent, finer reference)."""
    tensors = {
        f.name: getattr(weights, f.name).double()
        for f in dataclasses.fields(weights)
        if isinstance(getattr(weights, f.name), torch.Tensor) and getattr(weights, f.name).is_floating_point()
    }
    return dataclasses.replace(weights, **tensors)


def check_ov_ranks(weights, x: Tensor, targets, heads, signs, ranks, n_upstream: int = 0, what="OV") -> int:
    """`ranks` (what `ov_ranks` gave for rows `x` [row, d_model] and `targets`) against float64
    logits computed head by head the plain way (benchmarks.ov.reference_logits), tie-aware;
    returns how many ranks and top-k lists differed, each at a float tie. On the rows of a
    `RankCap` (`ranks.cap`) the ranks are checked against the reference's ranks capped, and there
    is no top-k to check."""
    from benchmarks.ov import reference_logits

    wide, x = as_float64(weights), x.double()
    n_rows = targets.valid.shape[0]
    capped = torch.zeros(n_rows, dtype=torch.bool) if ranks.cap is None else ranks.cap.mask(n_rows)
    differed = 0
    for h, (layer, head) in enumerate(heads):
        for s, sign in enumerate(signs):
            logits = reference_logits(wide, x, layer, head, sign)  # [row, vocab]
            tol = ov_logit_tolerance(weights.d_model, weights.d_head, logits, n_upstream)
            name = f"{what} head {layer}.{head} sign {sign}"
            for r in range(targets.valid.shape[1]):
                for part, cap in ((~capped, None), (capped, None if ranks.cap is None else ranks.cap.k)):
                    rows = torch.nonzero(targets.valid[:, r] & part).flatten()
                    if not len(rows):
                        continue
                    wanted = [tuple(targets.tokens[i, r].tolist()) for i in rows.tolist()]
                    got = ranks.rank[h, s, rows, r]
                    differed += check_ranks(got, logits[rows], wanted, tol, f"{name} relation {r}", cap)
            if ranks.topk.shape[-1]:
                exact = torch.nonzero(~capped).flatten()
                differed += check_topk(ranks.topk[h, s, exact], logits[exact], tol, f"{name} top-k")
    return differed


def ov_inputs(model, dataset, relations: tuple[str, ...], embedding: str = "context", taken=None):
    """What `ov_scores` hands the OV kernel: the effective embedding rows [row, d_model], each row's
    targets, and every head."""
    from headscope.embedding import effective_embeddings
    from headscope.heads import all_heads
    from headscope.scores.relations import instance_targets, row_targets

    found = effective_embeddings(model, dataset, embedding, taken)
    per_relation = [instance_targets(dataset, model.tokens, r)[1] for r in relations]
    targets = row_targets(per_relation, found.row, found.vectors.shape[0])
    return found.vectors, targets, all_heads(model.n_layers, model.n_heads)
