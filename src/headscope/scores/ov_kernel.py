"""The fast core of the OV relation scores: every head's top-k tokens and target ranks.

For head l.h, a residual row x and a sign s (methods.md §2):

    v     = LN_l(x) W_V + b_V
    co    = v W_O C                      (C centres the row; identity for RMS norm)
    sigma = sqrt(mean(co^2) + eps)       (the final norm's statistics, on o alone)
    logits(s) = s (co / sigma) diag(g_f) W_U + (b_f W_U + b_U)

so `logits(+1) = a M_h + c` with `a = v / sigma` ([d_head]), `M_h = W_O C diag(g_f) W_U`
([d_head, V]) and `c = b_f W_U + b_U`; and `logits(-1) = 2c - logits(+1)`. One set of
logits serves every relation and both signs. `M_h` costs `d_head d V` multiply-adds and
then `d_head V` per row, against `d V` per row the direct way: the factored form is
used when it is cheaper for the number of rows at hand.

A target's rank is the number of other tokens whose logit is at least the best target
token's (0 = strictly top); a hit is `rank < k`. Ties count against the target, so a head
that writes nothing (all logits equal) scores 0, not 100%; the reference loop uses the
same rule.

Memory: rows are taken `chunk_rows` at a time, so the working set is the folded
unembedding (`d V` floats), one `M_h` (`d_head V`), one logits block (`chunk_rows V`)
and a boolean mask a quarter its size — about 0.5 GB for GPT-2 small with the default
256 MB block (1,335 rows), whatever the number of rows. The outputs grow with heads x rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from headscope.models.weights import Weights, normalize

CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class Targets:
    """Target tokens of each row per relation (padded by repeating one); `valid` marks real ones."""

    tokens: Int[Tensor, "row relation target"]
    valid: Bool[Tensor, "row relation"]


@dataclass(frozen=True)
class HeadRanks:
    """Per head, sign and row: the rank of each relation's best target, and the top-k tokens."""

    rank: Int[Tensor, "head sign row relation"]
    topk: Int[Tensor, "head sign row k"]


@dataclass(frozen=True)
class Readout:
    """The final norm and unembedding folded: logits = (co / sigma) @ W_gU + c."""

    W_gU: Float[Tensor, "d_model d_vocab"]
    c: Float[Tensor, "d_vocab"]


def readout(weights: Weights, dtype: torch.dtype) -> Readout:
    W_U = weights.W_U.to(dtype)
    W_gU = weights.lnf_w.to(dtype)[:, None] * W_U
    return Readout(W_gU, weights.lnf_b.to(dtype) @ W_U + weights.b_U.to(dtype))


@dataclass(frozen=True)
class HeadCircuit:
    """One head's OV circuit up to the logits; `M` is set when the factored form is used."""

    weights: Weights
    layer: int
    W_V: Float[Tensor, "d_model d_head"]
    b_V: Float[Tensor, "d_head"]
    W_Oc: Float[Tensor, "d_head d_model"]
    gram: Float[Tensor, "d_head d_head"]
    M: Float[Tensor, "d_head d_vocab"] | None

    def logits(self, x: Float[Tensor, "row d_model"], out: Readout) -> Float[Tensor, "row d_vocab"]:
        """logits(+1) of every row."""
        w = self.weights
        dtype = self.W_V.dtype
        ln_w, ln_b = w.ln1_w[self.layer].to(dtype), w.ln1_b[self.layer].to(dtype)
        v = normalize(x.to(dtype), ln_w, ln_b, w.eps, w.normalization) @ self.W_V + self.b_V
        sigma = (((v @ self.gram) * v).sum(-1) / w.d_model + w.eps).sqrt()  # |co|^2 = v G v^T
        a = v / sigma[:, None]
        if self.M is not None:
            return torch.addmm(out.c, a, self.M)
        return torch.addmm(out.c, a @ self.W_Oc, out.W_gU)


def factored_is_cheaper(weights: Weights, rows: int) -> bool:
    """d_head d V + rows d_head V multiply-adds against rows d V."""
    d, dh = weights.d_model, weights.d_head
    return dh * d + rows * dh < rows * d


def head_circuit(weights: Weights, layer: int, head: int, out: Readout, factored: bool) -> HeadCircuit:
    dtype = out.W_gU.dtype
    W_O = weights.W_O[layer, head].to(dtype)
    W_Oc = W_O - W_O.mean(-1, keepdim=True) if weights.normalization == "LN" else W_O
    return HeadCircuit(
        weights=weights,
        layer=layer,
        W_V=weights.W_V[layer, head].to(dtype),
        b_V=weights.b_V[layer, head].to(dtype),
        W_Oc=W_Oc,
        gram=W_Oc @ W_Oc.T,
        M=W_Oc @ out.W_gU if factored else None,
    )


def read_logits(
    logits: Float[Tensor, "row d_vocab"], targets: Int[Tensor, "row relation target"], k: int
) -> tuple[Int[Tensor, "row relation"], Int[Tensor, "row k"]]:
    """Ranks of each relation's best target (other logits at least as high) and the top-k tokens."""
    rows, relations, width = targets.shape
    best = logits.gather(1, targets.reshape(rows, relations * width))  # [row, relation * target]
    best = best.reshape(rows, relations, width).amax(-1)  # [row, relation]
    rank = torch.stack([(logits >= best[:, r, None]).sum(-1) - 1 for r in range(relations)], -1)
    return rank.to(torch.int32), logits.topk(k, dim=-1).indices.to(torch.int32)


def default_chunk_rows(d_vocab: int, dtype: torch.dtype) -> int:
    return max(1, CHUNK_BYTES // (d_vocab * torch.finfo(dtype).bits // 8))


def ov_ranks(
    weights: Weights,
    x: Float[Tensor, "row d_model"],
    targets: Targets,
    heads: list[tuple[int, int]],
    k: int,
    signs: tuple[int, ...] = (1,),
    dtype: torch.dtype = torch.float32,
    chunk_rows: int | None = None,
) -> HeadRanks:
    """Ranks and top-k of every head, sign and row; rows are processed `chunk_rows` at a time."""
    n_rows, n_relations = targets.valid.shape
    out = readout(weights, dtype)
    step = chunk_rows or default_chunk_rows(weights.d_vocab, dtype)
    factored = factored_is_cheaper(weights, n_rows)
    rank = torch.zeros(len(heads), len(signs), n_rows, n_relations, dtype=torch.int32)
    topk = torch.zeros(len(heads), len(signs), n_rows, k, dtype=torch.int32)
    twice_c = 2 * out.c
    for i, (layer, head) in enumerate(tqdm(heads, desc="OV scores", unit="head", leave=False, disable=None)):
        circuit = head_circuit(weights, layer, head, out, factored)
        for start in range(0, n_rows, step):
            block = slice(start, start + step)
            logits, current = circuit.logits(x[block], out), 1
            for j, sign in enumerate(signs):
                if sign != current:  # logits(-1) = 2c - logits(+1), in place
                    logits, current = logits.neg_().add_(twice_c), sign
                rank[i, j, block], topk[i, j, block] = read_logits(logits, targets.tokens[block], k)
    return HeadRanks(rank, topk)
