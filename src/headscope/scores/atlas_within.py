"""The atlas's within-set ranks (methods.md section 11): is a source's target the best of its
relation's candidate targets?

For head l.h, sign s and the source row x of a relation with candidate targets T, each candidate's
logit is the largest of its tokens' logits (first token mid-prompt, and bare where one token),
with the logits of the OV kernel (`ov_kernel`: `logits(+1) = a M_h + c`, `a = v / sigma`,
`logits(-1) = 2c - logits(+1)`). The within-set rank of the source is the number of other
candidates whose logit is at least its target's (ties count against the target, as in the top-k
rank); a within-set hit is rank 0.

Only the candidates' columns of the unembedding are read: per block of heads (`head_block`, as
the kernel takes them), `W_Oc W_gU[:, C]` for the union C of every relation's candidate tokens
(`heads x d_head x |C|`), then one small product per relation.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.models.weights import Weights
from headscope.scores.ov_kernel import circuits, head_block, head_factors, readout


@dataclass(frozen=True)
class CandidateSet:
    """One relation's rows and candidates: `columns` index the union of candidate tokens."""

    rows: Int[Tensor, "pair"]  # rows of x, one per kept pair
    columns: Int[Tensor, "candidate spelling"]  # each candidate's tokens (padded by repeating one)
    answer: Int[Tensor, "pair"]  # each pair's target among the candidates


def candidate_sets(
    rows: list[list[int]], candidates: list[tuple[tuple[int, ...], ...]], answers: list[tuple[int, ...]]
) -> tuple[Int[Tensor, "token"], list[CandidateSet]]:
    """The union of candidate tokens and, per relation, its rows, candidate columns and answers."""
    union = sorted({t for spelled in candidates for c in spelled for t in c})
    column = {t: i for i, t in enumerate(union)}
    width = max([len(c) for spelled in candidates for c in spelled] + [1])
    sets = []
    for relation_rows, spelled, answer in zip(rows, candidates, answers, strict=True):
        padded = [[column[t] for t in (*c, *[c[0]] * (width - len(c)))] for c in spelled]
        sets.append(
            CandidateSet(
                torch.tensor(relation_rows, dtype=torch.long),
                torch.tensor(padded, dtype=torch.long).reshape(len(spelled), width),
                torch.tensor(answer, dtype=torch.long),
            )
        )
    return torch.tensor(union, dtype=torch.long), sets


def _set_ranks(a: Tensor, M: Tensor, c: Tensor, one: CandidateSet, signs: tuple[int, ...]) -> Tensor:
    """Within-set ranks [head, sign, pair] of one relation for a block of heads."""
    n_cand, width = one.columns.shape
    flat = one.columns.reshape(-1)  # [candidate * spelling]
    plus = a[:, one.rows] @ M[:, :, flat] + c[flat]  # [head, pair, candidate * spelling]
    ranks = []
    for sign in signs:
        logits = plus if sign == 1 else 2 * c[flat] - plus
        word = logits.reshape(*logits.shape[:2], n_cand, width).amax(-1)  # [head, pair, candidate]
        best = word.gather(-1, one.answer[None, :, None].expand(word.shape[0], -1, 1))  # [head, pair, 1]
        ranks.append((word >= best).sum(-1) - 1)
    return torch.stack(ranks, 1)  # [head, sign, pair]


def within_ranks(
    weights: Weights,
    x: Float[Tensor, "row d_model"],
    heads: list[tuple[int, int]],
    union: Int[Tensor, "token"],
    sets: list[CandidateSet],
    signs: tuple[int, ...] = (1, -1),
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> list[Int[Tensor, "head sign pair"]]:
    """Per relation, the within-set rank of each head, sign and kept pair. On the CPU the heads are
    split among one worker thread per torch thread, each with no intra-op threads (as the OV kernel
    does: many small products, no barrier waits on a sibling thread a busy machine has paused)."""
    device = weights.W_U.device if device is None else device
    out, x = readout(weights, dtype, device), x.to(device, dtype)
    columns = out.rows_of(union.to(device)).T  # [d_model, |C|]: W_gU's candidate columns
    c = out.c[union.to(device)]  # [|C|]
    on = [_on(one, device) for one in sets]
    threads = torch.get_num_threads()
    workers = min(threads, len(heads)) if device.type == "cpu" else 1
    parts = [[heads[i] for i in p] for p in np.array_split(np.arange(len(heads)), workers) if len(p)]

    def work(chosen: list[tuple[int, int]]) -> list[Tensor]:
        if device.type == "cpu":
            torch.set_num_threads(1)
        return _heads_ranks(weights, x, chosen, columns, c, on, signs, dtype)

    try:
        with ThreadPoolExecutor(len(parts)) as pool:
            done = [f.result() for f in [pool.submit(work, p) for p in parts]]
    finally:
        torch.set_num_threads(threads)
    return [torch.cat([d[i] for d in done], 0) for i in range(len(sets))]


def _heads_ranks(weights, x, heads, columns, c, sets, signs, dtype) -> list[Tensor]:
    """Per relation, ranks [head, sign, pair] of `heads`, `head_block` heads at a time."""
    parts: list[list[Tensor]] = [[] for _ in sets]
    step = head_block(weights)
    for start in range(0, len(heads), step):
        circ = circuits(weights, heads[start : start + step], dtype, x.device)
        a = head_factors(weights, circ, x)  # [head, row, d_head]
        M = circ.W_Oc @ columns  # [head, d_head, |C|]
        for i, one in enumerate(sets):
            parts[i].append(_set_ranks(a, M, c, one, signs).to(torch.int32).cpu())
    return [torch.cat(p, 0) for p in parts]


def _on(one: CandidateSet, device: torch.device) -> CandidateSet:
    return CandidateSet(one.rows.to(device), one.columns.to(device), one.answer.to(device))
