"""The runs the cast's behaviour rows read (docs/methods.md §7, the cast from the circuit).

- `attention_shift`: a head's output patched with its corrupted twin's (every position), and the
  movers' attention from `end` to the answer role minus to the contrast group, before and after;
- `pair_knockouts`: the task metric with a mover knocked out, a candidate knocked out, and both
  (§6's replacement values), and the candidate's attention `end` -> answer with the mover out.

Both are complete hooked forward passes on the given prompts: a few per head, bounded by the caller
to the labelled movers and their candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from headscope.models.loading import Model
from headscope.scores import ablation, interventions
from headscope.scores.ablation import AblationOptions
from headscope.scores.interventions import Batch, Site, Values
from headscope.tasks.dataset import Dataset, require_corrupted

Head = tuple[int, int]


def _role_mask(dataset: Dataset, role: str, rows: slice) -> Float[Tensor, "batch pos"]:
    """1 at the positions of `role` (a group: every member) in the prompts `rows`, else 0."""
    width = int(dataset.lengths[rows].max())
    mask = torch.zeros(dataset.tokens[rows].shape[0], width)
    for name in dataset.role_names(role):
        where = dataset.roles[name]
        present, index = where.present[rows], where.index[rows]
        mask[torch.arange(len(index))[present], index[present]] = 1.0
    return mask


def _end_attention(
    pattern: Float[Tensor, "batch head q k"], head: int, end: Tensor, mask: Tensor
) -> Float[Tensor, "batch"]:
    """The head's attention from each prompt's `end` to the positions of `mask`, summed."""
    rows = pattern[torch.arange(pattern.shape[0]), head, end.to(pattern.device)]  # [batch, k]
    return (rows.float().cpu()[:, : mask.shape[1]] * mask).sum(-1)


def _run(model: Model, tokens: Tensor, hooks: list, watch: Sequence[Head]) -> tuple[Tensor, dict]:
    """The logits and the patterns [batch, head, q, k] of the layers of `watch`, one hooked pass."""
    patterns: dict[int, Tensor] = {}
    keep = lambda layer: lambda p, hook: patterns.__setitem__(layer, p.detach())  # noqa: E731
    watched = [(f"blocks.{layer}.attn.hook_pattern", keep(layer)) for layer in {h[0] for h in watch}]
    with torch.no_grad():
        logits = model.bridge.run_with_hooks(tokens.to(model.bridge.cfg.device), fwd_hooks=hooks + watched)
    return logits, patterns


def _contrast(model, dataset, rows, hooks, movers, answer_mask, contrast_mask) -> Float[Tensor, "mover"]:
    """Each mover's attention end -> answer minus end -> contrast, summed over the prompts `rows`."""
    _, patterns = _run(model, dataset.tokens[rows, : answer_mask.shape[1]], hooks, movers)
    end = dataset.end[rows]
    return torch.stack(
        [
            (
                _end_attention(patterns[layer], head, end, answer_mask)
                - _end_attention(patterns[layer], head, end, contrast_mask)
            ).sum()
            for layer, head in movers
        ]
    )


def attention_shift(
    model: Model,
    dataset: Dataset,
    heads: Sequence[Head],
    movers: Sequence[Head],
    answer_role: str,
    contrast_role: str,
    batch_size: int = interventions.DEFAULT_BATCH,
) -> pd.DataFrame:
    """[layer, head, mover_layer, mover_head, before, after, attention_shift]: for each head and
    mover, the mover's mean attention end -> answer minus end -> contrast on the clean prompts
    (`before`) and with the head's `hook_z` replaced by its corrupted twin's at every position
    (`after`); `attention_shift` = before - after (positive: the head moves the mover's attention
    from the contrast to the answer)."""
    corrupted = require_corrupted(dataset, "the S-inhibition patch")
    before = torch.zeros(len(movers), dtype=torch.float64)
    after = torch.zeros(len(heads), len(movers), dtype=torch.float64)
    for start in range(0, dataset.n, batch_size):
        rows = slice(start, min(start + batch_size, dataset.n))
        answer, contrast = _role_mask(dataset, answer_role, rows), _role_mask(dataset, contrast_role, rows)
        width = answer.shape[1]
        before += _contrast(model, dataset, rows, [], movers, answer, contrast).double()
        twin = interventions.activations(model.bridge, corrupted.tokens[rows, :width])
        mask = torch.ones(answer.shape, dtype=torch.bool)
        for i, (layer, head) in enumerate(heads):
            hook = interventions.site_hook(Site(layer, head), twin, mask)
            after[i] += _contrast(model, dataset, rows, [hook], movers, answer, contrast).double()
    before, after = before / dataset.n, after / dataset.n
    rows = [
        (layer, head, ml, mh, float(before[j]), float(after[i, j]), float(before[j] - after[i, j]))
        for i, (layer, head) in enumerate(heads)
        for j, (ml, mh) in enumerate(movers)
    ]
    columns = ["layer", "head", "mover_layer", "mover_head", "before", "after", "attention_shift"]
    return pd.DataFrame(rows, columns=columns)


def _knocked(
    model: Model, batch: Batch, values: Values, knocked: list[Site], watch: Sequence[Head], answer: Tensor
) -> tuple[float, list[float]]:
    """The summed metric with `knocked` replaced, and each of `watch`'s summed attention end -> answer."""
    hooks = [interventions.site_hook(site, values, batch.mask) for site in knocked]
    logits, patterns = _run(model, batch.tokens, hooks, watch)
    metric = float(interventions.end_metric(interventions.rows_at(logits, batch.end), batch).sum())
    return metric, [float(_end_attention(patterns[la], h, batch.end, answer).sum()) for la, h in watch]


def pair_knockouts(
    model: Model,
    dataset: Dataset,
    movers: Sequence[Head],
    candidates: Sequence[Head],
    answer_role: str,
    options: AblationOptions | None = None,
) -> pd.DataFrame:
    """[mover_layer, mover_head, layer, head, clean, mover_out, candidate_out, both_out,
    backup_attention, backup_growth]: the mean metric clean, with the mover knocked out, with the
    candidate, with both (`options`' method and positions), the candidate's mean attention end ->
    answer with the mover out, and backup_growth = ((mover_out - both_out) - (clean - candidate_out))
    / |clean|: how much more knocking the candidate out costs once the mover is out. Passes per
    batch: 1 + movers + candidates + movers x candidates."""
    options = options or AblationOptions()
    mask = ablation.position_mask(dataset, options.positions)
    donor = ablation.donor_for(model, dataset, options)
    M, C = len(movers), len(candidates)
    clean, out, alone = 0.0, torch.zeros(M, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    both, attention = torch.zeros(M, C, dtype=torch.float64), torch.zeros(M, C, dtype=torch.float64)
    for batch in ablation.batch_list(dataset, mask, options.batch_size):
        values = donor(batch)
        answer = _role_mask(dataset, answer_role, slice(batch.start, batch.stop))
        clean += _knocked(model, batch, values, [], [], answer)[0]
        for j, candidate in enumerate(candidates):
            alone[j] += _knocked(model, batch, values, [Site(*candidate)], [], answer)[0]
        for i, mover in enumerate(movers):
            metric, attended = _knocked(model, batch, values, [Site(*mover)], candidates, answer)
            out[i] += metric
            attention[i] += torch.tensor(attended, dtype=torch.float64)
            for j, candidate in enumerate(candidates):
                both[i, j] += _knocked(model, batch, values, [Site(*mover), Site(*candidate)], [], answer)[0]
    n = dataset.n
    rows = []
    for i, mover in enumerate(movers):
        for j, candidate in enumerate(candidates):
            m_out, c_out, b_out = float(out[i]) / n, float(alone[j]) / n, float(both[i, j]) / n
            growth = ((m_out - b_out) - (clean / n - c_out)) / max(abs(clean / n), 1e-12)
            seen = float(attention[i, j]) / n
            rows.append((*mover, *candidate, clean / n, m_out, c_out, b_out, seen, growth))
    columns = ["mover_layer", "mover_head", "layer", "head", "clean", "mover_out", "candidate_out"]
    return pd.DataFrame(rows, columns=[*columns, "both_out", "backup_attention", "backup_growth"])
