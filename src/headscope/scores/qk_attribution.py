"""QK attribution: why a head attends from a query role to a key role (docs/methods.md §QK).

The quantity is the head's pre-softmax attention score s = score(q, k) between the query role's
position and the key role's position of each prompt, as the model computes it
(`attn.hook_attn_scores`: the scaled dot product after rotary, q/k norms and any position bias).
It is split over the components that write into the residual stream before the head reads it
(the embedding, every head and MLP of an earlier layer; `circuit.graph.sources`), once on each side:

- the query side: a component's output at the query position reaches the score only through the
  head's query there; the key side: its output at the key position only through the head's key
  (for grouped-query models, its key/value group's key);
- the baseline a component is replaced by: "mean", its mean output over the dataset's prompts
  at that role (a head: its z, through W_O and, where a norm acts on the attention output, its
  layer's norm recomputed, as `activations.source_deltas` writes it), or "zero";
- `exact`: s(clean) - s(that component's output at that one position replaced by the baseline,
  seen by the head's q input only, or by its k input only), every norm recomputed: path patching
  of one edge, at one position;
- `first_order`: grad of s with respect to the head's q (k) input at the position, dotted with
  (clean - baseline) output of the component there: EAP's first-order estimate of `exact`.

Both are means over prompts, with `n` prompts and a 95% t interval of the exact effect.
Two block runs do it: one on stacked copies of the block's input (one per patched component and
side, each copy's delta at its one position) keeps each copy's queries and keys; one on the clean
input with the head's queries and keys replaced by those reads each copy's score. Nothing in
either depends on the family: the block's own norm, projections, rotary and grouping run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from scipy import stats
from torch import Tensor

from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.scores import interventions
from headscope.scores.circuit import activations, blocks, graph
from headscope.scores.circuit.activations import Acts
from headscope.scores.circuit.graph import Source, Target
from headscope.scores.interventions import InterventionRunner
from headscope.tasks.dataset import Dataset

Baseline = Literal["mean", "zero"]
BASELINES: tuple[str, ...] = ("mean", "zero")
SIDES: tuple[str, ...] = ("query", "key")
COLUMNS = ["side", "component", "first_order", "exact", "n", "ci_low", "ci_high"]
CONFIDENCE = 0.95


@dataclass(frozen=True)
class QKOptions:
    """The head (layer, index), its query and key roles, the baseline and prompts per pass."""

    layer: int
    head: int
    key: str
    query: str = "end"
    baseline: Baseline = "mean"
    batch_size: int = 16


@dataclass(frozen=True)
class Positions:
    """Per prompt, the query and key positions of the pair of roles."""

    query: Int[Tensor, "batch"]
    key: Int[Tensor, "batch"]


# ---- the roles and the model's hooks --------------------------------------------------------------


def _role(dataset: Dataset, role: str, side: str) -> Tensor:
    """The positions of a role every prompt has, or one line naming the roles the task has."""
    where = dataset.roles.get(role)
    if where is None:
        known = ", ".join(sorted(dataset.roles))
        raise HeadscopeError(f"{side}={role!r}: task {dataset.task.name} has no such role; roles: {known}")
    if not bool(where.present.all()):
        missing = int((~where.present).sum())
        raise HeadscopeError(
            f"{side}={role!r}: {missing} of {dataset.n} prompts of task {dataset.task.name} lack it; "
            "give a role every prompt has"
        )
    return where.index


def positions(dataset: Dataset, options: QKOptions) -> Positions:
    """The two roles' positions, checked: the key must not come after the query (causal mask)."""
    query, key = _role(dataset, options.query, "query"), _role(dataset, options.key, "key")
    later = int((key > query).sum())
    if later:
        raise HeadscopeError(
            f"key={options.key!r} comes after query={options.query!r} in {later} of {dataset.n} prompts: "
            "a causal head cannot attend there, so the score is not defined; give a key role at or "
            "before the query"
        )
    return Positions(query, key)


def hook_names(layer: int) -> dict[str, str]:
    return {
        kind: f"blocks.{layer}.attn.hook_{kind}" for kind in ("q", "k", "attn_scores")
    }  # the head's queries, keys and pre-softmax scores


def check_hooks(runner: InterventionRunner, layer: int) -> None:
    missing = [n for n in hook_names(layer).values() if n not in runner.bridge.hook_dict]
    if missing:
        raise HeadscopeError(
            f"QK attribution needs the hooks {', '.join(missing)}, which this model's bridge does not "
            "have: this architecture is not supported for QK attribution"
        )


UNEXPOSED = (
    "this model's bridge ({family}) does not expose head {head}'s pre-softmax scores (its "
    "hook_attn_scores is not what its softmax reads): QK attribution is not supported for this architecture"
)


def check_scores(
    runner: InterventionRunner,
    family: str,
    tokens: Int[Tensor, "batch pos"],
    options: QKOptions,
    query: Int[Tensor, "batch"],
) -> None:
    """One line where the bridge's `hook_attn_scores` is not what the head's softmax reads (some
    bridges hook the pattern there): at the query rows the head's pattern must be the softmax of
    the scores, and not the scores themselves."""
    names = {kind: f"blocks.{options.layer}.attn.hook_{kind}" for kind in ("attn_scores", "pattern")}
    head = f"{options.layer}.{options.head}"
    if names["pattern"] not in runner.bridge.hook_dict:
        raise HeadscopeError(UNEXPOSED.format(family=family, head=head))
    kept: dict[str, Tensor] = {}
    hooks = [(name, lambda a, hook, kind=kind: kept.setdefault(kind, a)) for kind, name in names.items()]
    with torch.no_grad():
        runner.bridge.run_with_hooks(
            tokens.to(runner.bridge.cfg.device), fwd_hooks=hooks, stop_at_layer=options.layer + 1
        )
    device = kept["pattern"].device
    rows, at = torch.arange(tokens.shape[0], device=device), query.to(device)
    scores_at = kept["attn_scores"][rows, options.head, at].float()  # [batch, key]
    pattern_at = kept["pattern"][rows, options.head, at].float()  # [batch, key]
    tolerance = max(1e-3, 4 * torch.finfo(kept["pattern"].dtype).eps)  # the pattern's own rounding
    is_pattern = bool((scores_at - pattern_at).abs().max() <= tolerance)  # the hook fired the pattern
    if is_pattern or (torch.softmax(scores_at, -1) - pattern_at).abs().max() > tolerance:
        raise HeadscopeError(UNEXPOSED.format(family=family, head=head))


def upstream(model: Model, layer: int) -> list[Source]:
    """Every source written before layer `layer`'s attention reads the residual stream."""
    target = Target(layer, "q", 0)
    return [s for s in graph.sources(model.arch, model.n_layers) if graph.feeds(s, target, model.arch)]


# ---- one block, its queries and keys from patched inputs, its scores -----------------------------


def _placed(
    resid: Float[Tensor, "batch pos d_model"],
    offsets: Float[Tensor, "copy batch d_model"],
    where: Int[Tensor, "batch"],
) -> Float[Tensor, "copy batch pos d_model"]:
    """Per copy, the residual with the copy's offset added at each prompt's position `where`."""
    onehot = torch.nn.functional.one_hot(where.to(resid.device), resid.shape[1]).to(resid)  # [batch, pos]
    return resid[None] + onehot[None, :, :, None] * offsets[:, :, None, :].to(resid)


def scores(
    runner: InterventionRunner,
    options: QKOptions,
    resid: Float[Tensor, "batch pos d_model"],
    q_offsets: Float[Tensor, "copy batch d_model"],
    k_offsets: Float[Tensor, "copy batch d_model"],
    where: Positions,
) -> Float[Tensor, "copy batch"]:
    """The head's score at (query, key) per copy: its queries computed from the block input plus
    the copy's q offset at the query position, its keys from the input plus the k offset at the
    key position (grad follows the caller)."""
    names, copies, rows = hook_names(options.layer), q_offsets.shape[0], resid.shape[0]
    q_in = _placed(resid, q_offsets, where.query).flatten(0, 1)  # [copy * batch, pos, d_model]
    k_in = _placed(resid, k_offsets, where.key).flatten(0, 1)  # [copy * batch, pos, d_model]
    found = blocks.block_values(runner, options.layer, torch.cat([q_in, k_in]), [names["q"], names["k"]])
    q, k = found[names["q"]][: copies * rows], found[names["k"]][copies * rows :]
    replaced = [(names["q"], lambda a, hook: q.to(a)), (names["k"], lambda a, hook: k.to(a))]
    with runner.bridge.hooks(fwd_hooks=replaced):
        stacked = resid.repeat(copies, 1, 1)  # [copy * batch, pos, d_model]
        found = blocks.block_values(runner, options.layer, stacked, [names["attn_scores"]])
    every = found[names["attn_scores"]].reshape(copies, rows, *found[names["attn_scores"]].shape[1:])
    batch = torch.arange(rows, device=every.device)  # every: [copy, batch, head, query, key]
    return every[:, batch, options.head, where.query.to(every.device), where.key.to(every.device)]


# ---- baselines and each component's change -----------------------------------------------------


@dataclass(frozen=True)
class RoleValues:
    """What the sources wrote at one role: the embedding, every earlier layer's z and MLP output."""

    embed: Float[Tensor, "batch d_model"]
    z: Float[Tensor, "layer batch head d_head"]
    mlp: Float[Tensor, "layer batch d_model"]

    def acts(self) -> Acts:
        """As a one-position Acts (what `activations.source_deltas` reads)."""
        empty = torch.zeros(0)
        return Acts(self.embed[None, :, None], None, self.z[:, :, None], self.mlp[:, :, None], empty, empty)


def at_role(acts: Acts, where: Int[Tensor, "batch"], layers: int) -> RoleValues:
    """The clean run's sources at each prompt's position `where`, layers before `layers`."""
    batch, at = torch.arange(len(where), device=acts.pre.device), where.to(acts.pre.device)
    z = acts.z[:layers][:, batch, at]  # [layer, batch, head, d_head]
    mlp = acts.mlp[:layers][:, batch, at]  # [layer, batch, d_model]
    return RoleValues(acts.pre[0][batch, at], z, mlp)


def _sum(values: RoleValues) -> RoleValues:
    """The sum over prompts, in float64 (one prompt)."""
    return RoleValues(
        values.embed.double().sum(0, keepdim=True),
        values.z.double().sum(1, keepdim=True),
        values.mlp.double().sum(1, keepdim=True),
    )


def _baseline_of(mean: RoleValues | None, clean: RoleValues) -> RoleValues:
    """The baseline at the role for this batch: the dataset's mean, or zero."""
    if mean is None:
        return RoleValues(*(torch.zeros_like(x) for x in (clean.embed, clean.z, clean.mlp)))
    rows = clean.embed.shape[0]
    return RoleValues(
        mean.embed.to(clean.embed).expand(rows, -1),
        mean.z.to(clean.z).expand(-1, rows, -1, -1),
        mean.mlp.to(clean.mlp).expand(-1, rows, -1),
    )


def deltas(
    model: Model, clean: RoleValues, baseline: RoleValues, sources: list[Source]
) -> Float[Tensor, "source batch d_model"]:
    """Per source, baseline - clean write into the residual stream at the role."""
    found = activations.source_deltas(clean.acts(), baseline.acts(), model.weights, sources)
    return found[:, :, 0]  # [source, batch, d_model]


def check_attends(clean: Float[Tensor, "batch"], options: QKOptions) -> None:
    """One line where the head's mask hides the key from the query (local-window attention)."""
    fill = torch.finfo(clean.dtype).min / 2  # the mask writes the dtype's minimum (or -inf)
    masked = int((~torch.isfinite(clean) | (clean <= fill)).sum())
    if masked:
        raise HeadscopeError(
            f"head {options.layer}.{options.head} cannot attend from {options.query!r} to {options.key!r} "
            f"in {masked} of {len(clean)} prompts of a batch (its attention mask hides the key: a local "
            "window): the score is not defined there; give a key role nearer the query, or another head"
        )


# ---- per batch: the exact effects and the first-order estimates -------------------------------


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def exact_effects(
    runner: InterventionRunner,
    options: QKOptions,
    resid: Tensor,
    change: dict[str, Float[Tensor, "source batch d_model"]],
    where: Positions,
) -> tuple[dict[str, Float[Tensor, "source batch"]], Float[Tensor, "batch"]]:
    """Per side, s(clean) - s(one source patched on that side), per source and prompt; and s(clean)."""
    rows = resid.shape[0]
    zero = torch.zeros(1, rows, resid.shape[-1], dtype=resid.dtype, device=resid.device)
    with torch.no_grad():
        clean = scores(runner, options, resid, zero, zero, where)[0]
        check_attends(clean, options)
        effects = {}
        for side in SIDES:
            patched = []
            for part in _chunks(change[side].shape[0], max(1, interventions.MAX_ROWS // rows)):
                offsets = change[side][part]
                rest = zero.expand(offsets.shape[0], -1, -1)
                q, k = (offsets, rest) if side == "query" else (rest, offsets)
                patched.append(scores(runner, options, resid, q, k, where))
            effects[side] = clean[None] - torch.cat(patched)
    return effects, clean


def first_order(
    runner: InterventionRunner,
    options: QKOptions,
    resid: Tensor,
    change: dict[str, Float[Tensor, "source batch d_model"]],
    where: Positions,
) -> dict[str, Float[Tensor, "source batch"]]:
    """Per side, grad of s at the head's q (k) input there . (clean - baseline) of each source."""
    eps = {
        side: torch.zeros(1, *resid.shape[::2], dtype=resid.dtype, device=resid.device, requires_grad=True)
        for side in SIDES
    }
    with torch.enable_grad():
        score = scores(runner, options, resid.detach(), eps["query"], eps["key"], where).sum()
        grads = torch.autograd.grad(score, [eps[side] for side in SIDES])
    return {
        side: -torch.einsum("sbd,bd->sb", change[side].to(grad), grad[0])
        for side, grad in zip(SIDES, grads, strict=True)
    }


# ---- the table ---------------------------------------------------------------------------------


def _batches(dataset: Dataset, size: int) -> list[slice]:
    return _chunks(dataset.n, size)


def _capture(runner: InterventionRunner, dataset: Dataset, part: slice) -> Acts:
    width = int(dataset.lengths[part].max())
    return activations.capture(runner, dataset.tokens[part, :width])


def _added(a: RoleValues, b: RoleValues) -> RoleValues:
    return RoleValues(a.embed + b.embed, a.z + b.z, a.mlp + b.mlp)


def role_means(
    runner: InterventionRunner, dataset: Dataset, where: Positions, options: QKOptions
) -> dict[str, RoleValues]:
    """Per side, every source's mean output over the dataset's prompts at that side's role."""
    sums: dict[str, RoleValues] = {}
    for part in _batches(dataset, options.batch_size):
        acts = _capture(runner, dataset, part)
        for side, role in (("query", where.query), ("key", where.key)):
            found = _sum(at_role(acts, role[part], options.layer))
            sums[side] = _added(sums[side], found) if side in sums else found
    n = dataset.n
    return {side: RoleValues(v.embed / n, v.z / n, v.mlp / n) for side, v in sums.items()}


@dataclass(frozen=True)
class PerPrompt:
    """Per side, [source, prompt] exact effects and first-order estimates; the clean scores."""

    exact: dict[str, Tensor]
    first: dict[str, Tensor]
    clean: Tensor


def _batch_shares(
    model: Model,
    runner: InterventionRunner,
    acts: Acts,
    here: Positions,
    means: dict[str, RoleValues] | None,
    options: QKOptions,
) -> PerPrompt:
    """One batch's shares (its clean run `acts`, captured last: the runner holds its arguments)."""
    sources = upstream(model, options.layer)
    change = {}
    for side, role in (("query", here.query), ("key", here.key)):
        clean = at_role(acts, role, options.layer)
        baseline = _baseline_of(None if means is None else means[side], clean)
        change[side] = deltas(model, clean, baseline, sources)
    resid = acts.pre[options.layer]
    effects, clean_score = exact_effects(runner, options, resid, change, here)
    estimates = first_order(runner, options, resid, change, here)
    as_cpu = lambda found: {side: found[side].detach().double().cpu() for side in SIDES}  # noqa: E731
    return PerPrompt(as_cpu(effects), as_cpu(estimates), clean_score.double().cpu())


def per_prompt(model: Model, dataset: Dataset, options: QKOptions) -> tuple[list[Source], PerPrompt]:
    """Every upstream source's exact and first-order share of the score on each prompt."""
    runner = InterventionRunner(model.bridge)
    check_hooks(runner, options.layer)
    where = positions(dataset, options)
    parts = _batches(dataset, options.batch_size)
    check_scores(runner, model.arch.family, dataset.tokens[parts[0]], options, where.query[parts[0]])
    means = role_means(runner, dataset, where, options) if options.baseline == "mean" else None
    found = []
    for part in parts:
        acts = _capture(runner, dataset, part)  # records this batch's block arguments
        here = Positions(where.query[part], where.key[part])
        found.append(_batch_shares(model, runner, acts, here, means, options))
    joined = PerPrompt(
        {side: torch.cat([f.exact[side] for f in found], 1) for side in SIDES},  # [source, prompt]
        {side: torch.cat([f.first[side] for f in found], 1) for side in SIDES},  # [source, prompt]
        torch.cat([f.clean for f in found]),
    )
    return upstream(model, options.layer), joined


def t_interval(values: np.ndarray) -> tuple[float, float]:
    """The 95% t interval of the mean of `values` (NaN for fewer than two; the mean where they
    are all equal)."""
    if len(values) < 2:
        return float("nan"), float("nan")
    mean, sem = float(values.mean()), float(stats.sem(values))
    if sem == 0:
        return mean, mean
    low, high = stats.t.interval(CONFIDENCE, len(values) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def table(sources: list[Source], found: PerPrompt) -> pd.DataFrame:
    """One row per side and source: mean first-order and exact shares, n, the exact's t interval."""
    rows = []
    for side in SIDES:
        for i, source in enumerate(sources):
            exact = found.exact[side][i].numpy()
            low, high = t_interval(exact)
            first = float(found.first[side][i].mean())
            rows.append([side, source.name, first, float(exact.mean()), len(exact), low, high])
    return pd.DataFrame(rows, columns=COLUMNS)


def agreement(frame: pd.DataFrame) -> float:
    """Spearman's rho of first_order against exact over the rows (NaN under three rows)."""
    if len(frame) < 3:
        return float("nan")
    return float(stats.spearmanr(frame["first_order"], frame["exact"]).statistic)


def qk_attribution(model: Model, dataset: Dataset, options: QKOptions) -> pd.DataFrame:
    """The head's score between the roles, split over upstream components on each side.

    Returns one row per side and component: `side, component, first_order, exact, n, ci_low,
    ci_high`; `.attrs`: head, query, key, baseline, score and its interval (the clean score's
    mean over prompts), spearman (first_order vs exact over every row), spearman_query,
    spearman_key."""
    sources, found = per_prompt(model, dataset, options)
    frame = table(sources, found)
    low, high = t_interval(found.clean.numpy())
    frame.attrs.update(
        head=f"{options.layer}.{options.head}",
        query=options.query,
        key=options.key,
        baseline=options.baseline,
        score=float(found.clean.mean()),
        score_ci_low=low,
        score_ci_high=high,
        spearman=agreement(frame),
        **{f"spearman_{side}": agreement(frame[frame["side"] == side]) for side in SIDES},
    )
    return frame
