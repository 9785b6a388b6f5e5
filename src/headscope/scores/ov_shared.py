"""The OV kernel once per model: several `ov_ranks` calls answered by one pass over the vocabulary.

Every OV score of one model (each task's table, the atlas) reads the same per-head circuits, the
same readout and, a block of vocabulary columns at a time, the same unembedding blocks
`W_Oc W_gU` (`d_head x d_model x V` multiply-adds per head: on a 262k vocabulary more than a
task's own rows cost). `shared_ov_kernel(weights, calls, ...)` stacks the rows of every call into
one `ov_ranks` pass, so those blocks are formed once for all of them; inside its `with` block an
`ov_ranks` call whose inputs equal one of `calls` (the same weights object, heads, k, signs,
dtype, device, rows and targets, compared value by value) reads its share of that pass instead of
computing its own. A call that matches none is computed as always, so a caller never gets the
ranks of other inputs.

The stacked rows carry as many relation slots as the widest call and as many targets per slot:
a call with fewer is padded with copies of its first slot, marked not valid. A copy is the same
token as a slot before it, so it changes no count (`ov_kernel`: each distinct target token of a
row is counted once), and its own ranks are dropped. Each row's ranks and top-k are computed as
in a call of its own (same thresholds, exact counts); the float rounding of a product may differ
with the number of rows stacked, which moves a rank only where another token's logit ties the
target's to the last bit. Memory: the pass is bounded as any `ov_ranks` call (rows are taken
`ROW_BLOCK` at a time); its ranks and top-k (heads x signs x rows x (relations + k), int32) are
held until the `with` block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.models.weights import Weights
from headscope.scores.ov_kernel import SHARED, HeadRanks, Targets, ov_ranks


@dataclass(frozen=True)
class KernelCall:
    """The inputs of one `ov_ranks` call that vary between tasks: its rows and their targets."""

    x: Float[Tensor, "row d_model"]
    targets: Targets


@dataclass(frozen=True)
class KernelSettings:
    """What every call of one shared pass has in common."""

    heads: tuple[tuple[int, int], ...]
    k: int
    signs: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device


class SharedKernel:
    """The ranks of several calls from one pass; `lookup` hands out the share of a matching call."""

    def __init__(self, weights: Weights, calls: list[KernelCall], settings: KernelSettings, with_topk: bool):
        self.weights, self.calls, self.settings, self.with_topk = weights, calls, settings, with_topk
        self.passes = 0  # how many vocabulary passes this object ran (1 once computed)
        self.served = 0  # how many ov_ranks calls it answered
        self._ranks: HeadRanks | None = None
        self._computing = False  # its own ov_ranks call is computed, never looked up
        self._starts = torch.tensor([0, *[c.x.shape[0] for c in calls]]).cumsum(0).tolist()

    def compute(self) -> None:
        """The one pass over every call's rows."""
        s = self.settings
        x = torch.cat([c.x for c in self.calls])  # [row, d_model]: the calls' rows, stacked
        targets = stacked_targets([c.targets for c in self.calls])
        self._computing = True
        try:
            self._ranks = ov_ranks(
                self.weights, x, targets, list(s.heads), s.k, s.signs, s.dtype, self.with_topk, s.device
            )
        finally:
            self._computing = False
        self.passes += 1

    def lookup(
        self, weights: Weights, x: Tensor, targets: Targets, heads, k: int, signs, dtype, with_topk, device
    ):
        """The ranks of this `ov_ranks` call when it is one of `calls` with these settings, else None."""
        settings = KernelSettings(tuple(map(tuple, heads)), k, tuple(signs), dtype, torch.device(device))
        if self._computing or weights is not self.weights or settings != self.settings:
            return None
        if with_topk and not self.with_topk:
            return None
        for i, call in enumerate(self.calls):
            if _same(call, x, targets):
                if self._ranks is None:
                    self.compute()
                self.served += 1
                return self._share(i, targets.valid.shape[1], with_topk)
        return None

    def _share(self, i: int, relations: int, with_topk: bool) -> HeadRanks:
        rows = slice(self._starts[i], self._starts[i + 1])
        rank = self._ranks.rank[:, :, rows, :relations]  # [head, sign, row, relation]
        topk = self._ranks.topk[:, :, rows]
        return HeadRanks(rank.contiguous(), (topk if with_topk else topk[..., :0]).contiguous())


def _same(call: KernelCall, x: Tensor, targets: Targets) -> bool:
    return (
        call.x.shape == x.shape
        and call.targets.tokens.shape == targets.tokens.shape
        and torch.equal(call.x, x.to(call.x.dtype))
        and torch.equal(call.targets.tokens, targets.tokens)
        and torch.equal(call.targets.valid, targets.valid)
    )


def stacked_targets(parts: list[Targets]) -> Targets:
    """The targets of every part stacked by row, padded to the widest part's relation slots and
    targets with copies of each row's first slot and first target (not valid)."""
    relations = max(t.tokens.shape[1] for t in parts)
    width = max(t.tokens.shape[2] for t in parts)
    tokens, valid = [], []
    for t in parts:
        rows, have, wide = t.tokens.shape
        padded = torch.cat([t.tokens, t.tokens[:, :, :1].expand(rows, have, width - wide)], 2)
        padded = torch.cat([padded, padded[:, :1].expand(rows, relations - have, width)], 1)
        tokens.append(padded)  # [row, relation, target]
        valid.append(torch.cat([t.valid, torch.zeros(rows, relations - have, dtype=torch.bool)], 1))
    return Targets(torch.cat(tokens), torch.cat(valid))


@contextmanager
def shared_ov_kernel(
    weights: Weights,
    calls: list[KernelCall],
    settings: KernelSettings,
    with_topk: bool = True,
    now: bool = False,
) -> Iterator[SharedKernel]:
    """Inside the block, `ov_ranks` calls with these inputs share one pass, run on entering the
    block (`now`) or at the first of them."""
    shared = SharedKernel(weights, calls, settings, with_topk)
    if now and calls:
        shared.compute()
    token = SHARED.set(shared if calls else None)
    try:
        yield shared
    finally:
        SHARED.reset(token)
