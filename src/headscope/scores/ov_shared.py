"""The OV kernel once per model: several score sets' rows in one pass over the vocabulary.

Every OV score of one model (each task's table, the atlas) reads the same per-head circuits, the
same readout and, a block of vocabulary columns at a time, the same unembedding blocks
`W_Oc W_gU` (`d_head x d_model x V` multiply-adds per head: on a 262k vocabulary more than a
task's own rows cost). `shared_ranks(weights, calls, settings)` stacks the rows of every call into
one `ov_ranks` pass, so those blocks are formed once for all of them, and hands each call its
share. Nothing is looked up or cached: the caller passes each share to the score that reads it
(`scores.ov.ov_scores(..., computed=...)`, `scores.atlas.atlas_scores(..., computed=...)`).

The stacked rows carry as many relation slots as the widest call and as many targets per slot:
a call with fewer is padded with copies of its first slot, marked not valid. A copy is the same
token as a slot before it, so it changes no count (`ov_kernel`: each distinct target token of a
row is counted once), and its own ranks are dropped. Each row's ranks and top-k are computed as
in a call of its own (same thresholds, exact counts); the float rounding of a product may differ
with the number of rows stacked, which moves a rank only where another token's logit ties the
target's to the last bit. A call that reads only hits (`KernelCall.capped`: the atlas without its
per-source table) takes the kernel's exact early exit on its own rows (`ov_kernel.RankCap`): its
ranks of k or more come back as k, while the other calls' rows, stacked in the same pass, are
read to the end for their exact ranks and top-k. A call may cap all its rows but some
(`KernelCall.exact`: a report task's rows outside its detail sample, `ReportOptions.ov_detail_n`):
those are read to the end with their top-k, the rest take the exit.

Memory: the pass is bounded as any `ov_ranks` call (rows are taken `ROW_BLOCK` at a time); its
ranks and top-k (heads x signs x rows x (relations + k), int32) are held by the shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from headscope.models.weights import Weights
from headscope.scores.ov_kernel import HeadRanks, RankCap, Targets, ov_ranks


@dataclass(frozen=True)
class KernelCall:
    """The inputs of one `ov_ranks` call that vary between score sets: its rows and their targets.

    `capped`: the score set reads only hits (rank < k), so its rows take the kernel's exact early
    exit (`RankCap`): ranks of k or more come back as k, and the rows get no top-k tokens; with
    `exact`, the rows it marks are left out of the cap (read to the end: exact ranks and top-k)."""

    x: Float[Tensor, "row d_model"]
    targets: Targets
    capped: bool = False
    exact: Bool[Tensor, "row"] | None = None  # with `capped`: the rows not capped (None: none)

    def capped_rows(self) -> Bool[Tensor, "row"]:
        """Which of the call's rows take the exit."""
        rows = torch.full((self.x.shape[0],), self.capped)
        return rows if self.exact is None else rows & ~self.exact.bool()


@dataclass(frozen=True)
class KernelSettings:
    """What every call of one shared pass has in common."""

    heads: tuple[tuple[int, int], ...]
    k: int
    signs: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    products: torch.dtype | None = None  # the vocabulary products' operands (None: `dtype`)


def shared_ranks(
    weights: Weights, calls: list[KernelCall], settings: KernelSettings, with_topk: bool = True
) -> list[HeadRanks]:
    """The ranks (and top-k) of each call, in order, from one `ov_ranks` pass over their stacked
    rows: each the ranks of a call of its own (see the module's note on float ties); a capped
    call's rows take the early exit at `settings.k` while the others are read to the end."""
    s = settings
    x = torch.cat([c.x for c in calls])  # [row, d_model]: the calls' rows, stacked
    capped = torch.cat([c.capped_rows() for c in calls])  # [row]
    cap = RankCap(s.k, capped) if capped.any() else None
    with_topk = with_topk and not capped.all()  # capped rows get no top-k
    ranks = ov_ranks(
        weights, x, stacked_targets([c.targets for c in calls]), list(s.heads), s.k, s.signs, s.dtype,
        with_topk, s.device, cap, s.products,
    )  # fmt: skip
    starts = torch.tensor([0, *[c.x.shape[0] for c in calls]]).cumsum(0).tolist()
    return [_share(ranks, starts[i], starts[i + 1], c) for i, c in enumerate(calls)]


def _share(ranks: HeadRanks, start: int, stop: int, call: KernelCall) -> HeadRanks:
    """One call's rows of the pass: its relations' ranks, its top-k (none where every row was
    capped, -1 on the capped rows of a call capped in part), its cap and the column blocks read
    for its rows."""
    rank = ranks.rank[:, :, start:stop, : call.targets.valid.shape[1]]  # [head, sign, row, relation]
    capped = call.capped_rows()
    whole = call.exact is None or bool(capped.all())  # every row capped (or none)
    width = 0 if call.capped and whole else ranks.topk.shape[-1]
    topk = ranks.topk[:, :, start:stop, :width]  # [head, sign, row, k]
    cap = None
    if bool(capped.any()):
        cap = RankCap(ranks.cap.k) if whole else RankCap(ranks.cap.k, capped)
    blocks = None if ranks.blocks is None else ranks.blocks[:, start:stop].contiguous()
    return HeadRanks(rank.contiguous(), topk.contiguous(), cap, blocks)


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
