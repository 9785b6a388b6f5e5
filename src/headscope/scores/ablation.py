"""Knockouts (docs/methods.md §6): the task metric with heads and MLPs replaced by zero, mean or resample.

Values come from the task's corrupted twin, which shares every position with the clean prompts:
- `zero`: zeros;
- `mean`: at each token index, the mean over the corrupted prompts long enough to have it;
- `resample`: each prompt takes the activations of a corrupted prompt of the same length,
  drawn with `seed`.
The metric is the mean logit difference answer - contrast at `end`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from headscope.errors import HeadscopeError
from headscope.heads import Component as HeadOrMlp
from headscope.models.loading import Model
from headscope.options import names
from headscope.scores import interventions
from headscope.scores.intervals import paired_t_interval
from headscope.scores.interventions import Batch, DonorFn, Site, Values
from headscope.tasks.dataset import Dataset, require_corrupted

Component = Literal["heads", "mlps"]
Method = Literal["zero", "mean", "resample"]
METHODS: tuple[str, ...] = ("zero", "mean", "resample")
ZERO_FIX = "use method='zero', which needs none"  # what to do where a twin is missing


@dataclass(frozen=True)
class AblationOptions:
    components: tuple[Component, ...] = ("heads", "mlps")
    method: Method = "mean"
    positions: tuple[str, ...] = ("all",)  # 'all', 'end', or role names
    seed: int = 0
    batch_size: int = interventions.DEFAULT_BATCH
    # None: every component knocked out exactly. N: every head screened first by a first-order
    # estimate (one forward and backward pass per batch), then the N heads it ranks highest,
    # the heads in `exact_heads` and every MLP knocked out exactly; the other heads keep the estimate.
    exact_top: int | None = None
    exact_heads: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:  # "end" is one position, never ('e', 'n', 'd')
        object.__setattr__(self, "components", names(self.components, "components", allow_empty=True))
        object.__setattr__(self, "positions", names(self.positions, "positions", allow_empty=True))
        object.__setattr__(self, "exact_heads", tuple(tuple(head) for head in self.exact_heads))
        if self.exact_top is not None and self.exact_top < 0:
            raise HeadscopeError(
                f"exact_top={self.exact_top}: give 0 or more heads to knock out exactly (None: every head)"
            )


def position_mask(dataset: Dataset, positions: tuple[str, ...]) -> Bool[Tensor, "batch pos"]:
    """Where components are knocked out: every position, `end`, or the named roles."""
    if "all" in positions:
        return torch.ones_like(dataset.tokens, dtype=torch.bool)
    mask = torch.zeros_like(dataset.tokens, dtype=torch.bool)
    rows = torch.arange(dataset.n)
    for position in positions:
        for role in dataset.role_names(position):
            where = dataset.roles[role]
            mask[rows[where.present], where.index[where.present]] = True
    return mask


def sites_for(model: Model, components: tuple[str, ...]) -> list[Site]:
    unknown = set(components) - {"heads", "mlps"}
    if unknown or not components:
        raise HeadscopeError(f"components={','.join(components)!r}: choose heads, mlps or heads,mlps")
    heads = [Site(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    mlps = [Site(layer, None) for layer in range(model.n_layers)]
    return (heads if "heads" in components else []) + (mlps if "mlps" in components else [])


def _sliced(values: Values, batch: Batch) -> Values:
    width = batch.tokens.shape[1]
    return Values(values.z[:, :, :width], values.mlp[:, :, :width])


def zero_donor(model: Model) -> DonorFn:
    shape = model.identity

    def donor(batch: Batch) -> Values:
        size, width = batch.tokens.shape
        return Values(
            torch.zeros(shape.n_layers, 1, 1, shape.n_heads, shape.d_head).expand(-1, size, width, -1, -1),
            torch.zeros(shape.n_layers, 1, 1, shape.d_model).expand(-1, size, width, -1),
        )

    return donor


def mean_values(model: Model, corrupted: Dataset, batch_size: int) -> Values:
    """Per-position means over the corrupted prompts that reach each position: [layer, 1, pos, ...]."""
    z_sum = mlp_sum = None
    for start in range(0, corrupted.n, batch_size):
        stop = min(start + batch_size, corrupted.n)
        acts = interventions.activations(model.bridge, corrupted.tokens[start:stop])
        reach = (torch.arange(corrupted.tokens.shape[1]) < corrupted.lengths[start:stop, None]).float()
        z = (acts.z.double().cpu() * reach[None, :, :, None, None]).sum(1)  # [layer, pos, head, d_head]
        mlp = (acts.mlp.double().cpu() * reach[None, :, :, None]).sum(1)  # [layer, pos, d_model]
        z_sum, mlp_sum = (z, mlp) if z_sum is None else (z_sum + z, mlp_sum + mlp)
    count = (torch.arange(corrupted.tokens.shape[1]) < corrupted.lengths[:, None]).sum(0).clamp(min=1)
    z_mean = (z_sum / count[None, :, None, None]).float()[:, None]  # [layer, 1, pos, head, d_head]
    mlp_mean = (mlp_sum / count[None, :, None]).float()[:, None]  # [layer, 1, pos, d_model]
    return Values(z_mean, mlp_mean)


def mean_donor(model: Model, dataset: Dataset, batch_size: int) -> DonorFn:
    means = mean_values(model, require_corrupted(dataset, "mean ablation", ZERO_FIX), batch_size)

    def donor(batch: Batch) -> Values:
        size = batch.tokens.shape[0]
        sliced = _sliced(means, batch)
        return Values(sliced.z.expand(-1, size, -1, -1, -1), sliced.mlp.expand(-1, size, -1, -1))

    return donor


def resample_donors(dataset: Dataset, seed: int) -> Tensor:
    """For each prompt, a corrupted prompt of the same length, drawn with `seed`."""
    generator = torch.Generator().manual_seed(seed)
    lengths = dataset.lengths
    donors = torch.empty(dataset.n, dtype=torch.long)
    for length in lengths.unique():
        same = torch.nonzero(lengths == length).flatten()
        donors[same] = same[torch.randint(len(same), (len(same),), generator=generator)]
    return donors


def resample_donor(model: Model, dataset: Dataset, seed: int) -> DonorFn:
    corrupted = require_corrupted(dataset, "resample ablation", ZERO_FIX)
    donors = resample_donors(dataset, seed)

    def donor(batch: Batch) -> Values:
        tokens = corrupted.tokens[donors[batch.start : batch.stop], : batch.tokens.shape[1]]
        return interventions.activations(model.bridge, tokens)

    return donor


def donor_for(model: Model, dataset: Dataset, options: AblationOptions) -> DonorFn:
    if options.method == "zero":
        return zero_donor(model)
    if options.method == "mean":
        return mean_donor(model, dataset, options.batch_size)
    if options.method == "resample":
        return resample_donor(model, dataset, options.seed)
    raise HeadscopeError(f"method={options.method!r}: choose {', '.join(METHODS)}")


def batch_list(dataset: Dataset, mask: Tensor, batch_size: int) -> list[Batch]:
    return list(
        interventions.batches(
            dataset.tokens, dataset.lengths, dataset.answers, dataset.contrasts, mask, batch_size
        )
    )


def knockout_sweep(
    model: Model, dataset: Dataset, options: AblationOptions, fast: bool = True, progress: bool = True
) -> tuple[list[Site], Tensor, float]:
    """(sites, mean metric with each knocked out, clean metric); `fast=False` is the plain loop."""
    sites = sites_for(model, options.components)
    batches = batch_list(dataset, position_mask(dataset, options.positions), options.batch_size)
    sweep = interventions.sweep_sites if fast else interventions.reference_sweep
    metrics, clean = sweep(model.bridge, batches, donor_for(model, dataset, options), sites, progress)
    return sites, metrics, clean


@dataclass(frozen=True)
class Knockouts:
    """A knockout sweep: the mean metric per site and clean, which sites are exact, and the metric of
    each prompt (NaN for a site that only has the first-order estimate)."""

    sites: list[Site]
    metrics: Float[Tensor, "site"]
    clean: float
    exact: Bool[Tensor, "site"]
    per_prompt: Float[Tensor, "site prompt"]
    clean_per_prompt: Float[Tensor, "prompt"]


def screened_sweep(
    model: Model, dataset: Dataset, options: AblationOptions
) -> tuple[list[Site], Tensor, float, Tensor]:
    """`knockout_sweep` where `options.exact_top` is None or covers every head; else every site
    estimated to first order, then the chosen ones (`exact_choice`) knocked out exactly.
    Returns (sites, metric per site, clean metric, which sites are exact)."""
    found = screened_knockouts(model, dataset, options)
    return found.sites, found.metrics, found.clean, found.exact


def screened_knockouts(model: Model, dataset: Dataset, options: AblationOptions) -> Knockouts:
    """`screened_sweep`, with each prompt's metric kept where a site is knocked out exactly."""
    sites = sites_for(model, options.components)
    n_heads = sum(s.head is not None for s in sites)
    batches = batch_list(dataset, position_mask(dataset, options.positions), options.batch_size)
    donor = donor_for(model, dataset, options)
    if not screens(options, n_heads):
        swept = interventions.sweep_sites_per_prompt(model.bridge, batches, donor, sites)
        every = torch.ones(len(sites), dtype=torch.bool)
        return Knockouts(sites, swept.metrics, swept.clean, every, swept.per_prompt, swept.clean_per_prompt)
    exact, estimate, _ = screen(model, batches, donor, sites, options)
    chosen = [sites[i] for i in torch.nonzero(exact).flatten().tolist()]
    measured = interventions.sweep_sites_per_prompt(model.bridge, batches, donor, chosen)
    metrics = estimate.clone()
    metrics[exact] = measured.metrics
    per_prompt = torch.full((len(sites), dataset.n), float("nan"))  # [site, prompt]
    per_prompt[exact] = measured.per_prompt
    return Knockouts(sites, metrics, measured.clean, exact, per_prompt, measured.clean_per_prompt)


def screens(options: AblationOptions, n_heads: int) -> bool:
    """Whether the heads are screened first (`exact_top` leaves some of the `n_heads` estimated)."""
    return options.exact_top is not None and options.exact_top < n_heads


def screen(
    model: Model, batches: list[Batch], donor: DonorFn, sites: list[Site], options: AblationOptions
) -> tuple[Bool[Tensor, "site"], Float[Tensor, "site"], float]:
    """The first-order screen (one forward and backward pass per batch): which sites are knocked
    out exactly (`exact_choice`), every site's estimated metric and the clean metric it saw."""
    estimate, linear_clean = interventions.linear_sweep(model.bridge, batches, donor, sites)
    return exact_choice(sites, estimate - linear_clean, options), estimate, linear_clean


def exact_choice(sites: list[Site], effect: Float[Tensor, "site"], options: AblationOptions) -> Tensor:
    """Which sites are knocked out exactly: every MLP, the heads of `options.exact_heads`, and the
    `options.exact_top` heads with the largest estimated |effect| (ties: the earlier head)."""
    named = set(options.exact_heads)
    exact = torch.tensor([s.head is None or (s.layer, s.head) in named for s in sites])
    heads = [i for i, s in enumerate(sites) if s.head is not None]
    order = sorted(heads, key=lambda i: -abs(float(effect[i])))  # sorted() is stable
    exact[order[: options.exact_top]] = True
    return exact


def ablate(model: Model, dataset: Dataset, options: AblationOptions = AblationOptions()) -> pd.DataFrame:
    """One row per component knocked out: metric and percent of the clean metric, and whether
    the value is exact (`exact`; False: the first-order estimate of a screened head); then the
    effect `metric - clean` with its 95% interval over the `n` prompts (docs/methods.md §C):
    `ci_low`, `ci_high` the paired t interval of the per-prompt differences knocked out - clean
    (`ci_kind` "t"; "none", with NaN, for an estimated head, which has no per-prompt values).

    The clean metric is in `df.attrs['clean']`; the options in `df.attrs['options']`.
    """
    found = screened_knockouts(model, dataset, options)
    low, high = paired_t_interval(found.per_prompt.double().numpy(), found.clean_per_prompt.double().numpy())
    return knockout_table(found, options, dataset.n, (low, high), np.where(found.exact.numpy(), "t", "none"))


def knockout_table(found: Knockouts, options: AblationOptions, n, bounds: tuple, kind) -> pd.DataFrame:
    """`ablate`'s table from a sweep: `n` the prompts of each row (one count, or one per site),
    `bounds` the effect's (low, high) per site and `kind` their `ci_kind` (one, or one per site)."""
    metrics = found.metrics.double().numpy()
    low, high = bounds
    table = pd.DataFrame(
        {
            "component": [s.name for s in found.sites],
            "layer": [s.layer for s in found.sites],
            "head": pd.array([s.head for s in found.sites], dtype="Int64"),
            "method": options.method,
            "metric": metrics,
            "pct_of_clean": 100 * metrics / found.clean,
            "exact": found.exact.numpy(),
            "effect": metrics - found.clean,
            "n": n,
            "ci_low": low,
            "ci_high": high,
            "ci_kind": kind,
        }
    )
    table.attrs["clean"] = found.clean
    table.attrs["ci_of"] = "effect"
    table.attrs["options"] = options.__dict__ | {
        "positions": list(options.positions),
        "exact_heads": [list(h) for h in options.exact_heads],
    }
    return table


# ---- circuits: knock out everything but a set of components --------------------------------


def parse_component(text: str, model: Model) -> Site:
    """'9.1' -> head 1 of layer 9, 'mlp9' -> the MLP of layer 9; an error names the bad value."""
    component = HeadOrMlp.parse(text, model.n_layers, model.n_heads)
    return Site(component.layer, component.head)


def _knockout_hooks(knocked: list[Site], values: Values, mask: Tensor) -> list[tuple]:
    """Hooks that replace every site in `knocked` (several heads of a layer in one hook)."""
    hooks = [interventions.site_hook(s, values, mask) for s in knocked if s.head is None]
    by_layer: dict[int, list[int]] = {}
    for site in knocked:
        if site.head is not None:
            by_layer.setdefault(site.layer, []).append(site.head)
    for layer, heads in by_layer.items():
        value = values.z[layer]

        def hook(z, hook, heads=heads, value=value):
            for head in heads:
                z = interventions.replace_head(z, head, value, mask)
            return z

        hooks.append((interventions.z_hook(layer), hook))
    return hooks


@dataclass(frozen=True)
class _Prepared:
    """Batches with their replacement values and clean metric, reused across circuit evaluations."""

    batches: list[Batch]
    values: list[Values]
    clean: float
    sites: list[Site]


def _prepare(model: Model, dataset: Dataset, options: AblationOptions) -> _Prepared:
    batches = batch_list(dataset, position_mask(dataset, options.positions), options.batch_size)
    donor = donor_for(model, dataset, options)
    clean = _circuit_metric(model, batches, [], [])
    return _Prepared(batches, [donor(b) for b in batches], clean, sites_for(model, options.components))


def _circuit_metric(model: Model, batches: list[Batch], values: list[Values], knocked: list[Site]) -> float:
    total, n = 0.0, 0
    device = model.bridge.cfg.device
    for i, batch in enumerate(batches):
        hooks = _knockout_hooks(knocked, values[i], batch.mask) if knocked else []
        with torch.no_grad():
            logits = model.bridge.run_with_hooks(batch.tokens.to(device), fwd_hooks=hooks)
        total += float(interventions.end_metric(interventions.rows_at(logits, batch.end), batch).sum())
        n += batch.tokens.shape[0]
    return total / n


def _kept_metric(model: Model, prepared: _Prepared, keep: set[Site]) -> float:
    knocked = [s for s in prepared.sites if s not in keep]
    return _circuit_metric(model, prepared.batches, prepared.values, knocked)


def keep_circuit(
    model: Model, dataset: Dataset, keep: list[str], options: AblationOptions = AblationOptions()
) -> dict:
    """The metric with every component but `keep` knocked out, the clean metric, and the percent kept."""
    kept = {parse_component(item, model) for item in keep}
    prepared = _prepare(model, dataset, options)
    metric = _kept_metric(model, prepared, kept)
    return {
        "keep": [s.name for s in prepared.sites if s in kept],
        "metric": metric,
        "clean": prepared.clean,
        "pct_of_clean": 100 * metric / prepared.clean,
    }


def greedy_circuit(
    model: Model, dataset: Dataset, options: AblationOptions = AblationOptions(), threshold: float = 1.0
) -> list[str]:
    """Iterative pruning: starting from every component, least important first (by single
    knockouts), drop a component when dropping it costs less than `threshold` percent of the
    clean metric; returns the components left, in layer order."""
    sites, single, clean = knockout_sweep(model, dataset, options, progress=False)
    order = sorted(range(len(sites)), key=lambda i: abs(clean - float(single[i])))
    prepared = _prepare(model, dataset, options)
    circuit = set(sites)
    current = 100 * _kept_metric(model, prepared, circuit) / prepared.clean
    for i in tqdm(order, desc="pruning", leave=False, disable=None):
        trial = circuit - {sites[i]}
        pct = 100 * _kept_metric(model, prepared, trial) / prepared.clean
        if current - pct < threshold:
            circuit, current = trial, pct
    return [s.name for s in sites if s in circuit]
