"""Edge attribution patching (EAP) and its integrated-gradients form (EAP-IG): approximations.

EAP (Syed et al. 2023): score(s -> t) = dM/d(input of t) . (corrupted - clean contribution of s),
summed over positions, averaged over prompts; the gradient is taken on the clean run, with every
target input a separate input of the graph (`layered.py`), so one backward gives them all.

EAP-IG (Hanna et al. 2024), on the inputs as MIB's circuit track runs it ("EAP-IG-inputs",
`ig_steps` 5): the same, with the gradient averaged over `steps` runs whose embedding is
corrupted + (k / steps) (clean - corrupted), k = 0..steps-1 (from the corrupted embedding, the
clean one left out: the left Riemann sum of the path integral, as `get_scores_eap_ig` of
hannamw/EAP-IG); every later activation flows freely from that embedding. The difference that
multiplies the gradient is still each source's corrupted - clean contribution of the two real runs.
Both estimate the exact effect `metric(edge patched) - metric(clean)`.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.models.architecture import Architecture
from headscope.scores.circuit.activations import Acts
from headscope.scores.circuit.graph import Target, targets
from headscope.scores.circuit.layered import RunState, layered_logits
from headscope.scores.interventions import Batch, InterventionRunner
from headscope.scores.metric import logit_diff


def target_gradients(
    runner: InterventionRunner, arch: Architecture, resid0: Tensor, batch: Batch, capped: bool = True
) -> dict[Target, Float[Tensor, "batch pos d_model"]]:
    """d(sum of the metric over the batch) / d(each target's input), at the embedding `resid0`
    (`capped` False: the metric of the logits before soft-capping)."""
    every = targets(arch, runner.n_layers)
    eps = {t: torch.zeros_like(resid0, requires_grad=True) for t in every}

    def offsets(chosen: list[Target], state: RunState) -> Tensor:
        return torch.stack([eps[t] for t in chosen])  # [target, batch, pos, d_model]

    with torch.enable_grad():
        logits = layered_logits(runner, arch, resid0.detach(), batch.end, offsets, capped).float()
        metric = logit_diff(logits, batch.answers.to(logits.device), batch.contrasts.to(logits.device)).sum()
        grads = torch.autograd.grad(metric, [eps[t] for t in every], allow_unused=True)
    return {
        t: (torch.zeros_like(resid0) if g is None else g.detach()) for t, g in zip(every, grads, strict=True)
    }


def path_points(clean: Acts, corrupted: Acts, steps: int) -> list[Tensor]:
    """Embeddings corrupted + k/steps (clean - corrupted), k = 0..steps-1 (MIB's EAP-IG-inputs)."""
    start, direction = corrupted.pre[0], clean.pre[0] - corrupted.pre[0]  # [batch, pos, d_model]
    return [start + k / steps * direction for k in range(steps)]


def mean_gradients(
    runner: InterventionRunner, arch: Architecture, points: list[Tensor], batch: Batch, capped: bool = True
) -> dict[Target, Tensor]:
    total: dict[Target, Tensor] = {}
    for point in points:
        for target, grad in target_gradients(runner, arch, point, batch, capped).items():
            total[target] = total.get(target, 0) + grad / len(points)
    return total
