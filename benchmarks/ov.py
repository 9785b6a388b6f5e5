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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from headscope.models.weights import Weights, normalize
from headscope.scores.ov_kernel import Targets, circuits, factored_is_cheaper, head_factors, ov_ranks, readout

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
    rand(N_CTX, d_model)  # positions: no score reads them, drawn so the other weights stay as before
    return Weights(
        ln1_w=1 + rand(n_layers, d_model, scale=0.3),
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
    reference_heads: int = L * H // 3  # heads the reference runs on (its time is scaled to 144)


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
    valid = torch.ones(1000, 2, dtype=torch.bool)
    return Item("token, 1000 keywords", x, Targets(tokens, valid), reference_heads=L * H // 6)


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


def _matmul_runs(a: torch.Tensor, b: torch.Tensor, seconds: float) -> list[float]:
    times: list[float] = []
    while sum(times) < seconds or len(times) < 6:
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return times


def matmul_ceiling(seconds: float = 3.0) -> tuple[float, float]:
    """GFLOP/s of a plain float32 matrix multiply (2048x768 @ 768x4096): the best of torch's own
    threaded product and of the fast path's arrangement (one single-threaded product per worker,
    all at once); each taken as the best run and as sustained over `seconds` back to back."""
    a, b = torch.randn(2048, D), torch.randn(D, 4096)
    flops = 2 * 2048 * D * 4096
    threaded = _matmul_runs(a, b, seconds)
    threads = torch.get_num_threads()

    def worker() -> list[float]:
        torch.set_num_threads(1)
        return _matmul_runs(a, b, seconds)

    try:
        with ThreadPoolExecutor(threads) as pool:
            per_worker = [f.result() for f in [pool.submit(worker) for _ in range(threads)]]
    finally:
        torch.set_num_threads(threads)
    best = max(flops / min(threaded), threads * flops / max(min(t) for t in per_worker))
    sustained = max(flops * len(threaded) / sum(threaded), sum(flops * len(t) / sum(t) for t in per_worker))
    return best / 1e9, sustained / 1e9


def fast_flops(w: Weights, rows: int, heads: int, slots: int) -> float:
    """2 x multiply-adds of every matrix product the fast path does (ov_kernel._row_block)."""
    d, dh, vocab = w.d_model, w.d_head, w.d_vocab
    factors = 2 * rows * d * dh + 2 * rows * dh * dh  # v = LN(x) W_V, then v G for sigma
    targets = 2 * rows * dh * d + 2 * rows * slots * d  # a W_Oc, then its dot with each target column
    if factored_is_cheaper(w, rows):
        logits = 2 * dh * d * vocab + 2 * rows * dh * vocab  # M_h block by block, then a M_h
    else:
        logits = 2 * rows * d * vocab
    return heads * (factors + targets + logits) + 2 * heads * dh * d * dh  # + the grams


def reference_sample(item: Item) -> list[tuple[int, int]]:
    every = [(la, h) for la in range(L) for h in range(H)]
    wanted = os.environ.get("HEADSCOPE_BENCH_HEADS", str(item.reference_heads))
    n = len(every) if wanted == "all" else int(wanted)
    return every[:: max(1, len(every) // n)][:n]


def fast_logits(w: Weights, item: Item, head: tuple[int, int]) -> torch.Tensor:
    """logits(+1) of one head the fast path's way (factored form), for the logit difference."""
    cpu = torch.device("cpu")
    out = readout(w, torch.float32, cpu)
    circ = circuits(w, [head], torch.float32, cpu)
    a = head_factors(w, circ, item.x)[0]  # [row, d_head]
    return torch.addmm(out.c, a, circ.W_Oc[0] @ out.columns(slice(None)))


def compare(w: Weights, item: Item, fast, sample) -> dict:
    """Time the reference on `sample`, and compare its hits and ranks with the fast path's."""
    stats = dict(instances=0, hit_mismatch=0, rank_mismatch=0, rank_unexplained=0, max_rank_diff=0)
    stats["max_logit_diff"] = 0.0
    every = [(la, h) for la in range(L) for h in range(H)]
    seconds = 0.0
    for n, head in enumerate(sample):
        start = time.perf_counter()
        ref = reference_head(w, item, *head)
        seconds += time.perf_counter() - start
        i = every.index(head)
        for (name, sign), (rank, _, logits, best) in ref.items():
            got = fast.rank[i, 0 if sign == 1 else 1, :, 0 if name == "copy" else 1].long()
            stats["instances"] += len(got)
            stats["hit_mismatch"] += int(((got < K) != (rank < K)).sum())
            differ = got != rank
            stats["rank_mismatch"] += int(differ.sum())
            stats["max_rank_diff"] = max(stats["max_rank_diff"], int((got - rank).abs().max()))
            tol = 1e-5 * logits.abs().amax(-1, keepdim=True)  # float32 rounding of a 768-term sum
            near = ((logits - best[:, None]).abs() <= tol).sum(-1) - 1  # other logits within rounding
            stats["rank_unexplained"] += int((differ & ((got - rank).abs() > near)).sum())
            if sign == 1 and n < 6:
                diff = (fast_logits(w, item, head) - logits).abs().max().item()
                stats["max_logit_diff"] = max(stats["max_logit_diff"], diff)
    stats["reference_s"] = seconds
    return stats


def timed_fast(w: Weights, item: Item, with_topk: bool) -> tuple[object, float, tuple[float, float]]:
    """The fast path's result, its seconds, and the matmul ceiling measured just before."""
    heads = [(la, h) for la in range(L) for h in range(H)]
    ceiling = matmul_ceiling()
    start = time.perf_counter()
    fast = ov_ranks(w, item.x, item.targets, heads, K, signs=(1, -1), with_topk=with_topk)
    return fast, time.perf_counter() - start, ceiling


def print_fast(label: str, seconds: float, gflops: float, ceiling: tuple[float, float]) -> None:
    best, sustained = ceiling
    print(
        f"   {label:16} {seconds:8.2f} s   {gflops:6.1f} GFLOP/s = {100 * gflops / best:.0f}% of the "
        f"ceiling measured just before ({best:.1f} best, {sustained:.1f} sustained: "
        f"{100 * gflops / sustained:.0f}%)",
        flush=True,
    )


def run_item(w: Weights, item: Item) -> None:
    heads = L * H
    print(f"-- {item.name}: copy, next, negative copy (fast path also scores negative next), 144 heads")
    print(f"   load average before: {os.getloadavg()[0]:.1f}", flush=True)
    slots = item.targets.tokens.shape[1] * item.targets.tokens.shape[2]
    flops = fast_flops(w, len(item.x), heads, slots)
    fast, fast_s, ceiling = timed_fast(w, item, with_topk=False)
    print_fast("fast path", fast_s, flops / fast_s / 1e9, ceiling)
    with_top, top_s, top_ceiling = timed_fast(w, item, with_topk=True)
    assert torch.equal(with_top.rank, fast.rank)
    print_fast(f"fast + top-{K}", top_s, flops / top_s / 1e9, top_ceiling)
    sample = reference_sample(item)
    stats = compare(w, item, fast, sample)
    ref_s = stats["reference_s"] * heads / len(sample)
    label = "all heads" if len(sample) == heads else f"{len(sample)} heads timed, scaled to 144"
    print(f"   reference loop   {ref_s:8.2f} s   ({label})")
    print(f"   speed-up         {ref_s / fast_s:8.1f} x   ({ref_s / top_s:.1f} x with top-{K})")
    print(
        f"   agreement, {len(sample)} heads x 3 relation-signs x {len(item.x)} rows = {stats['instances']}: "
        f"hit mismatches {stats['hit_mismatch']}, rank mismatches {stats['rank_mismatch']} "
        f"(largest {stats['max_rank_diff']}; all but {stats['rank_unexplained']} within float rounding "
        f"of another logit), largest logit difference {stats['max_logit_diff']:.2e}"
    )
    print(f"   load average after: {os.getloadavg()[0]:.1f}", flush=True)


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    w = gpt2_small_shaped()
    for item in (digits_item(), token_item()):
        run_item(w, item)
