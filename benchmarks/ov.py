"""OV relation scores: the batched factored kernel against the seed notes' per-head loop.

A GPT-2-small-shaped model (12 layers x 12 heads, d_model 768, vocabulary 50257) with
random weights, built here as `Weights` (no download, no tokenizer: keywords are token ids).

- item 1, `context`: 400 keyword instances (100 seq-digits-style prompts x 4 members),
  each its own random residual vector; copy, next and negative copy for all 144 heads.
- item 2, `token`: 1,000 distinct keyword tokens, one random residual vector each.

The reference is run on a sample of heads (HEADSCOPE_BENCH_HEADS, default 6; `all` for
every head) and its time scaled to 144 heads; hits and ranks are compared on the sample.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from headscope.models.weights import Weights, normalize
from headscope.scores.ov_kernel import Targets, factored_is_cheaper, head_circuit, ov_ranks, readout

L, H, D, DH, V, N_CTX = 12, 12, 768, 64, 50257, 1024
K = 5
RELATIONS = (("copy", 1), ("next", 1), ("copy", -1))  # what the reference computes, once each
DIGIT_TOKENS = 16  # digits 1..20 are token ids 16..35 (" 1".." 20") and 116..135 ("1".."20")


def random_weights(
    n_layers: int, n_heads: int, d_model: int, d_head: int, d_vocab: int, seed: int = 0
) -> Weights:
    """Random GPT-2-style weights with non-trivial layer norms and a tied unembedding."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    shape = (n_layers, n_heads)
    W_E = rand(d_vocab, d_model, scale=0.1)
    return Weights(
        W_E=W_E, W_pos=rand(N_CTX, d_model), ln1_w=1 + rand(n_layers, d_model, scale=0.3),
        ln1_b=rand(n_layers, d_model, scale=0.3), ln2_w=1 + rand(n_layers, d_model, scale=0.3),
        ln2_b=rand(n_layers, d_model, scale=0.3), W_V=rand(*shape, d_model, d_head, scale=0.05),
        b_V=rand(*shape, d_head), W_O=rand(*shape, d_head, d_model, scale=0.05), b_O=rand(n_layers, d_model),
        lnf_w=1 + rand(d_model, scale=0.3), lnf_b=rand(d_model, scale=0.3), W_U=W_E.T.contiguous(),
        b_U=rand(d_vocab), eps=1e-5,
    )  # fmt: skip


def gpt2_small_shaped(seed: int = 0) -> Weights:
    return random_weights(L, H, D, DH, V, seed)


@dataclass(frozen=True)
class Item:
    name: str
    x: torch.Tensor  # [row, d_model]
    targets: Targets  # relations copy, next


def digits_item(seed: int = 1) -> Item:
    """100 prompts 'x1 .. x4' of consecutive digits 1..20: 400 instances, 2 target tokens each."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(1, 17, (100,), generator=g)  # a run x1..x5 fits in 1..20
    digits = (starts[:, None] + torch.arange(4)).reshape(-1)  # [instance]
    spelled = lambda d: torch.stack([DIGIT_TOKENS + d - 1, DIGIT_TOKENS + 100 + d - 1], -1)  # noqa: E731
    tokens = torch.stack([spelled(digits), spelled(digits + 1)], 1)  # [instance, relation, target]
    x = torch.randn(len(digits), D, generator=g)
    return Item("context, 400 instances", x, Targets(tokens, torch.ones(len(digits), 2, dtype=torch.bool)))


def token_item(seed: int = 2) -> Item:
    """1,000 distinct keyword tokens; copy = the token, next = the token after it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randperm(V - 1, generator=g)[:1000]
    tokens = torch.stack([ids, ids + 1], 1)[:, :, None]  # [row, relation, target=1]
    x = torch.randn(1000, D, generator=g)
    return Item("token, 1000 keywords", x, Targets(tokens, torch.ones(1000, 2, dtype=torch.bool)))


def reference_logits(w: Weights, x: torch.Tensor, layer: int, head: int, sign: int) -> torch.Tensor:
    """The seed notes' way: full-width OV output, final layer norm, full unembedding."""
    v = (
        normalize(x, w.ln1_w[layer], w.ln1_b[layer], w.eps, w.normalization) @ w.W_V[layer, head]
        + w.b_V[layer, head]
    )
    o = sign * (v @ w.W_O[layer, head])
    return normalize(o, w.lnf_w, w.lnf_b, w.eps, w.normalization) @ w.W_U + w.b_U


def reference_head(w: Weights, item: Item, layer: int, head: int) -> dict:
    """Per relation and sign, recomputed from scratch: ranks (same tie rule) and top-k."""
    out = {}
    for name, sign in RELATIONS:
        logits = reference_logits(w, item.x, layer, head, sign)
        best = logits.gather(1, item.targets.tokens[:, 0 if name == "copy" else 1]).amax(-1)
        rank = (logits >= best[:, None]).sum(-1) - 1
        out[(name, sign)] = (rank, logits.topk(K, -1).indices, logits, best)
    return out


def matmul_ceiling() -> float:
    """GFLOP/s of a plain float32 matrix multiply, best of 5."""
    a, b = torch.randn(2048, D), torch.randn(D, 4096)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 2048 * D * 4096 / best / 1e9


def fast_flops(w: Weights, rows: int, heads: int) -> float:
    """Multiply-adds x 2 of the fast path's matrix products (M_h, then rows x M_h, and v)."""
    per_head = 2 * DH * D * V + 2 * rows * DH * V if factored_is_cheaper(w, rows) else 2 * rows * D * V
    return heads * (per_head + 2 * rows * D * DH)


def sample_heads() -> list[tuple[int, int]]:
    every = [(la, h) for la in range(L) for h in range(H)]
    wanted = os.environ.get("HEADSCOPE_BENCH_HEADS", "6")
    if wanted == "all":
        return every
    step = len(every) // int(wanted)
    return every[:: step + 1][: int(wanted)] if step else every


def compare(w: Weights, item: Item, fast, heads_all, sample) -> dict:
    """Hits and ranks of the fast path against the reference on the sampled heads."""
    stats = {
        "instances": 0,
        "hit_mismatch": 0,
        "rank_mismatch": 0,
        "rank_unexplained": 0,
        "max_logit_diff": 0.0,
    }
    out = readout(w, torch.float32)
    start = time.perf_counter()
    ref = {head: reference_head(w, item, *head) for head in sample}
    seconds = time.perf_counter() - start
    for head in sample:
        i = heads_all.index(head)
        circuit = head_circuit(w, *head, out, factored_is_cheaper(w, len(item.x)))
        fast_logits = circuit.logits(item.x, out)
        for (name, sign), (rank, _, logits, best) in ref[head].items():
            j, r = (0 if sign == 1 else 1), (0 if name == "copy" else 1)
            got = fast.rank[i, j, :, r].long()
            stats["instances"] += len(got)
            stats["hit_mismatch"] += int(((got < K) != (rank < K)).sum())
            differ = got != rank
            stats["rank_mismatch"] += int(differ.sum())
            tol = 1e-5 * logits.abs().amax(-1)  # float32 rounding of a 768-term sum, with margin
            near = ((logits - best[:, None]).abs() <= tol[:, None]).sum(
                -1
            ) - 1  # other logits within rounding
            stats["rank_unexplained"] += int((differ & ((got - rank).abs() > near)).sum())
            if sign == 1:
                diff = (fast_logits - logits).abs().max().item()
                stats["max_logit_diff"] = max(stats["max_logit_diff"], diff)
    stats["reference_s"] = seconds
    return stats


def run_item(w: Weights, item: Item, ceiling: float) -> None:
    heads = [(la, h) for la in range(L) for h in range(H)]
    start = time.perf_counter()
    fast = ov_ranks(w, item.x, item.targets, heads, K, signs=(1, -1))
    fast_s = time.perf_counter() - start
    sample = sample_heads()
    stats = compare(w, item, fast, heads, sample)
    ref_s = stats["reference_s"] * len(heads) / len(sample)
    gflops = fast_flops(w, len(item.x), len(heads)) / fast_s / 1e9
    print(f"-- {item.name}: copy, next, negative copy (fast path also scores negative next), 144 heads")
    share = 100 * gflops / ceiling
    print(f"   fast path        {fast_s:8.2f} s   {gflops:6.1f} GFLOP/s = {share:.0f}% of matmul")
    label = "all heads" if len(sample) == len(heads) else f"{len(sample)} heads timed, scaled to 144"
    print(f"   reference loop   {ref_s:8.2f} s   ({label})")
    print(f"   speed-up         {ref_s / fast_s:8.1f} x")
    print(
        f"   agreement, {len(sample)} heads x 3 relation-signs x {len(item.x)} rows = {stats['instances']}: "
        f"hit mismatches {stats['hit_mismatch']}, rank mismatches {stats['rank_mismatch']} "
        f"(all but {stats['rank_unexplained']} within float rounding of another logit), "
        f"largest logit difference {stats['max_logit_diff']:.2e}"
    )


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    w = gpt2_small_shaped()
    ceiling = matmul_ceiling()
    print(f"plain matmul ceiling: {ceiling:.1f} GFLOP/s (float32, 2048x768 @ 768x4096)")
    for item in (digits_item(), token_item()):
        run_item(w, item, ceiling)
