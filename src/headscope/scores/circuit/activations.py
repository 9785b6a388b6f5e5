"""One run's activations and each source's contribution to the residual stream."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.models.weights import Weights
from headscope.scores.circuit import norms
from headscope.scores.circuit.graph import Source
from headscope.scores.interventions import InterventionRunner


@dataclass(frozen=True)
class Acts:
    """What one batch's forward pass wrote: residuals, head outputs, MLP outputs, logits."""

    pre: Float[Tensor, "layer batch pos d_model"]
    mid: Float[Tensor, "layer batch pos d_model"] | None  # None for parallel blocks
    z: Float[Tensor, "layer batch pos head d_head"]
    mlp: Float[Tensor, "layer batch pos d_model"]
    post: Float[Tensor, "batch pos d_model"]  # the final residual stream (before the final norm)
    logits: Float[Tensor, "batch pos d_vocab"]
    scales: dict[str, Tensor] | None = None  # hook_scale name -> [batch, pos, 1] (frozen-norm runs)


def capture(
    runner: InterventionRunner, tokens: Int[Tensor, "batch pos"], record: bool = True, scales: bool = False
) -> Acts:
    """Every layer's residual, z and MLP output; with `record`, the block call arguments too;
    with `scales`, every residual-stream norm's scale (`norms.scale_hook_names`)."""
    bridge, n_layers = runner.bridge, runner.n_layers
    kept: dict[str, list[Tensor]] = {"pre": [], "mid": [], "z": [], "mlp": [], "post": []}
    found: dict[str, Tensor] = {}
    names = [("pre", "hook_resid_pre"), ("z", "attn.hook_z"), ("mlp", "hook_mlp_out")]
    names += [("mid", "hook_resid_mid")] if runner.sequential else []
    hooks = [
        (f"blocks.{layer}.{name}", lambda a, hook, key=key: kept[key].append(a.detach()))
        for layer in range(n_layers)
        for key, name in names
    ]
    hooks.append((f"blocks.{n_layers - 1}.hook_resid_post", lambda a, hook: kept["post"].append(a.detach())))
    if scales:
        names = norms.scale_hook_names(bridge, n_layers)
        hooks += [(n, lambda a, hook, n=n: found.update({n: a.detach()})) for n in names]  # None: observed
    handle = bridge.blocks[0].register_forward_pre_hook(runner._record, with_kwargs=True) if record else None
    try:
        with torch.no_grad():
            logits = bridge.run_with_hooks(tokens.to(bridge.cfg.device), fwd_hooks=hooks)
    finally:
        if handle is not None:
            handle.remove()
    mid = torch.stack(kept["mid"]) if runner.sequential else None
    return Acts(
        torch.stack(kept["pre"]),
        mid,
        torch.stack(kept["z"]),
        torch.stack(kept["mlp"]),
        kept["post"][0],
        logits,
        found or None,
    )


def head_outputs(
    z: Float[Tensor, "batch pos head d_head"], W_O: Float[Tensor, "head d_head d_model"]
) -> Float[Tensor, "head batch pos d_model"]:
    """Each head's write into the residual stream, z_h @ W_O[h] (no bias)."""
    return torch.einsum("bphe,hed->hbpd", z, W_O.to(z))


def contributions(
    acts: Acts, weights: Weights, sources: list[Source]
) -> Float[Tensor, "source batch pos d_model"]:
    """Each source's contribution to the residual stream in this run."""
    per_layer = {}
    rows = []
    for source in sources:
        if source.kind == "embed":
            rows.append(acts.pre[0])
        elif source.kind == "mlp":
            rows.append(acts.mlp[source.layer])
        else:
            if source.layer not in per_layer:
                per_layer[source.layer] = head_outputs(acts.z[source.layer], weights.W_O[source.layer])
            rows.append(per_layer[source.layer][source.index])
    return torch.stack(rows)


def source_deltas(
    clean: Acts, corrupted: Acts, weights: Weights, sources: list[Source], frozen: bool = False
) -> Float[Tensor, "source batch pos d_model"]:
    """Each source's corrupted - clean write into the residual stream. Where a norm acts on the
    attention output, a head's is the real one (its layer's norm recomputed with that head's z
    corrupted) or, `frozen`, through the norm at its clean-run scale (`norms.py`)."""
    delta = contributions(corrupted, weights, sources) - contributions(clean, weights, sources)
    if weights.attn_out_w is None:
        return delta
    per_head = norms.frozen_head_deltas if frozen else norms.real_head_deltas
    row = {source: i for i, source in enumerate(sources)}
    for layer in range(clean.z.shape[0]):
        heads = per_head(clean.z[layer], corrupted.z[layer], weights, layer)  # [head, batch, pos, d]
        for head in range(heads.shape[0]):
            delta[row[Source(layer, "head", head)]] = heads[head]
    return delta


def mean_acts(acts: list[Acts], lengths: list[Tensor]) -> Acts:
    """Per-position means over prompts that reach each position (padding left out), as a
    one-prompt Acts; expanded over a batch it replaces the corrupted run ("mean" ablation)."""
    width = max(a.pre.shape[2] for a in acts)
    sums: dict[str, Tensor] = {}
    count = torch.zeros(width, dtype=torch.float64)
    for a, length in zip(acts, lengths, strict=True):
        reach = (torch.arange(a.pre.shape[2]) < length[:, None]).double()  # [batch, pos]
        count[: a.pre.shape[2]] += reach.sum(0)
        for key in ("pre", "z", "mlp"):
            x = getattr(a, key).double().cpu()  # [layer, batch, pos, ...]
            w = reach.reshape(1, *reach.shape, *[1] * (x.ndim - 3))
            total = torch.zeros(x.shape[0], width, *x.shape[3:], dtype=torch.float64)
            total[:, : x.shape[2]] = (x * w).sum(1)
            sums[key] = sums.get(key, 0) + total
    dtype, device = acts[0].pre.dtype, acts[0].pre.device
    mean = {
        k: (v / count.clamp(min=1).reshape(1, width, *[1] * (v.ndim - 2)))[:, None].to(dtype).to(device)
        for k, v in sums.items()
    }
    empty = torch.zeros(0)
    return Acts(mean["pre"], None, mean["z"], mean["mlp"], empty, empty)


def expand_mean(mean: Acts, size: int, width: int) -> Acts:
    """A one-prompt mean Acts as a batch of `size` prompts of `width` positions."""
    return Acts(
        mean.pre[:, :, :width].expand(-1, size, -1, -1),
        None,
        mean.z[:, :, :width].expand(-1, size, -1, -1, -1),
        mean.mlp[:, :, :width].expand(-1, size, -1, -1),
        mean.post,
        mean.logits,
    )
