"""Edge scores of a task: `eap`, `eap-ig` (approximations) and `exact` patching, as one table.

The score of edge s -> t estimates, or (for `exact`) is, the change of the task metric (mean
logit difference answer - contrast at `end`, with the clean answers) when s's contribution to
t's input alone is replaced by its value on the corrupted prompt (`exact.py`). `exact` is
computed for every edge with method "exact", else for the `exact_top` edges the approximation
ranks highest by |score| (0: none); the agreement of the approximation with exact patching is
the Spearman correlation on the edges where both exist (`attrs["spearman"]`) and on the 50
edges largest by |exact| (`attrs["spearman_top50"]`).
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
from tqdm.auto import tqdm

from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.scores import interventions
from headscope.scores.circuit import activations, blocks, eap, exact, graph, norms
from headscope.scores.circuit.graph import Edge, Source
from headscope.scores.interventions import Batch, InterventionRunner
from headscope.tasks.dataset import Dataset, require_corrupted

Method = Literal["eap", "eap-ig", "exact"]
Donor = Literal["corrupted", "mean"]
DONORS: tuple[str, ...] = ("corrupted", "mean")
METHODS: tuple[str, ...] = ("eap", "eap-ig", "exact")
TOP_AGREEMENT = 50
FROZEN_NORM_NOTE = (
    "convention: frozen-norm (norms on the head outputs or soft-capped logits): eap and eap-ig hold "
    "every norm's scale at its clean-run value and read the logits before the cap; exact is a real "
    "patch of the real model (the sender's output patched, every norm recomputed)"
)


@dataclass(frozen=True)
class EdgeOptions:
    method: Method = "eap-ig"
    steps: int = 5  # eap-ig: points on the corrupted -> clean path (MIB's ig_steps)
    exact_top: int | None = 50  # exactly patch this many top edges of the approximation; None: all
    batch_size: int = 16
    donor: Donor = "corrupted"  # each prompt's corrupted twin, or the per-position mean over the twins


@dataclass(frozen=True)
class BatchRun:
    """One batch with its clean and corrupted runs and every source's corrupted - clean delta:
    `deltas` in the real model (exact patching), `approx_deltas` in the convention's (the same
    where it is linear; frozen-norm: through each norm at its clean-run scale, `scales`)."""

    batch: Batch
    clean: activations.Acts
    corrupted: activations.Acts
    deltas: dict[Source, Tensor]
    approx_deltas: dict[Source, Tensor]
    scales: norms.FrozenScales | None = None


def corrupted_of(dataset: Dataset) -> Dataset:
    return require_corrupted(dataset, "edge patching")


def prepared(model: Model) -> InterventionRunner:
    """A InterventionRunner for the model, or one line saying why its edges are not defined."""
    runner = InterventionRunner(model.bridge)
    blocks.check_hooks(runner)
    return runner


def _batches(dataset: Dataset, batch_size: int) -> list[Batch]:
    mask = torch.ones_like(dataset.tokens, dtype=torch.bool)
    return list(
        interventions.batches(
            dataset.tokens, dataset.lengths, dataset.answers, dataset.contrasts, mask, batch_size
        )
    )


def mean_donor(runner: InterventionRunner, dataset: Dataset, batch_size: int) -> activations.Acts:
    """Per-position means of the corrupted twins' activations (a one-prompt Acts)."""
    corrupted = corrupted_of(dataset)
    runs, lengths = [], []
    for batch in _batches(corrupted, batch_size):
        runs.append(activations.capture(runner, batch.tokens, record=False))
        lengths.append(corrupted.lengths[batch.start : batch.stop])
    return activations.mean_acts(runs, lengths)


def batch_runs(
    model: Model, runner: InterventionRunner, dataset: Dataset, batch_size: int, donor: str = "corrupted"
):
    """Yield each batch's runs (the runner records the batch's block arguments on the way)."""
    corrupted = corrupted_of(dataset)
    if donor not in DONORS:
        raise HeadscopeError(f"donor={donor!r}: choose one of {', '.join(DONORS)}")
    mean = mean_donor(runner, dataset, batch_size) if donor == "mean" else None
    sources = graph.sources(model.arch, model.n_layers)
    frozen = model.arch.convention == "frozen-norm"
    for batch in _batches(dataset, batch_size):
        tokens = corrupted.tokens[batch.start : batch.stop, : batch.tokens.shape[1]]
        if mean is None:
            corrupt = activations.capture(runner, tokens, record=False)
        else:
            corrupt = activations.expand_mean(mean, *batch.tokens.shape)
        clean = activations.capture(runner, batch.tokens, scales=frozen)  # last: its block arguments
        real = activations.source_deltas(clean, corrupt, model.weights, sources)  # [source, batch, pos, d]
        approx = activations.source_deltas(clean, corrupt, model.weights, sources, frozen) if frozen else real
        scales = norms.FrozenScales(clean.scales, batch.end) if frozen else None
        by_source = dict(zip(sources, real, strict=True))
        yield BatchRun(batch, clean, corrupt, by_source, dict(zip(sources, approx, strict=True)), scales)


def corrupted_metric(model: Model, dataset: Dataset, batch_size: int) -> float:
    """Mean metric of the corrupted twins with the clean answers."""
    corrupted, total = corrupted_of(dataset), 0.0
    for batch in _batches(dataset, batch_size):
        tokens = corrupted.tokens[batch.start : batch.stop, : batch.tokens.shape[1]]
        with torch.no_grad():
            logits = model.bridge(tokens.to(model.bridge.cfg.device))
        total += float(interventions.end_metric(interventions.rows_at(logits, batch.end), batch).sum())
    return total / dataset.n


def _metric_rows(acts: activations.Acts, batch: Batch) -> Tensor:
    """The metric of a run on each prompt of its batch: [batch] (float32)."""
    return interventions.end_metric(interventions.rows_at(acts.logits, batch.end), batch)


def _approx_sums(
    model: Model, runner: InterventionRunner, run: BatchRun, edges: list[Edge], options: EdgeOptions
) -> tuple[Tensor, Tensor]:
    """grad(target input) . delta(source) per edge: summed over the batch [edge], and per prompt
    [edge, batch] (`edge_products`)."""
    if options.method == "eap-ig":
        points = eap.path_points(run.clean, run.corrupted, options.steps)
    else:
        points = [run.clean.pre[0]]
    with norms.frozen(runner.bridge, run.scales):
        grads = eap.mean_gradients(runner, model.arch, points, run.batch, capped=run.scales is None)
    return edge_products(grads, run.approx_deltas, edges)


def edge_products(
    grads: dict, deltas: dict[Source, Tensor], edges: list[Edge]
) -> tuple[Float[Tensor, " edge"], Float[Tensor, "edge batch"]]:
    """grad(target) . delta(source) per edge (float64): summed over the batch (one matrix-vector
    product per target over the deltas of every source feeding it, stacked once), and per prompt
    (one product per prompt of the batch on the same stacked rows; its sum over the batch is the
    first up to float rounding: a different order of the same additions)."""
    row = {source: i for i, source in enumerate(deltas)}
    stacked = torch.stack(list(deltas.values())).flatten(1)  # [source, batch * pos * d_model]
    n_batch = next(iter(deltas.values())).shape[0]
    by_target: dict = {}
    for i, edge in enumerate(edges):
        by_target.setdefault(edge.target, []).append(i)
    out = torch.zeros(len(edges), dtype=torch.float64)
    per_prompt = torch.zeros(len(edges), n_batch, dtype=torch.float64)
    for target, index in by_target.items():
        rows = _rows_of(stacked, torch.tensor([row[edges[i].source] for i in index]))
        grad = grads[target].reshape(-1).to(stacked)  # [batch * pos * d_model]
        out[index] = (rows @ grad).double().cpu()
        per_prompt[index] = _per_prompt_products(rows, grad, n_batch)
    return out, per_prompt


def _per_prompt_products(rows: Tensor, grad: Float[Tensor, " flat"], n_batch: int) -> Tensor:
    """rows . grad restricted to each prompt's slice: [row, batch] (float64); one matrix-vector
    product per prompt on a strided view, no copy of the rows."""
    by_prompt = rows.view(rows.shape[0], n_batch, -1)  # [row, batch * pos * d] -> [row, batch, pos * d]
    grad = grad.view(n_batch, -1)  # [batch * pos * d] -> [batch, pos * d]
    return torch.stack([by_prompt[:, b] @ grad[b] for b in range(n_batch)], 1).double().cpu()


def _rows_of(stacked: Tensor, rows: Int[Tensor, "row"]) -> Tensor:
    """stacked[rows]; a view, not a copy, where the rows are the first ones in order (every
    target's sources are those written before it: a prefix of the source order)."""
    if torch.equal(rows, torch.arange(len(rows))):
        return stacked[: len(rows)]
    return stacked[rows]


def _exact_edges(edges: list[Edge], approx: Tensor | None, options: EdgeOptions) -> list[int]:
    if approx is None or options.exact_top is None:
        return list(range(len(edges)))
    order = torch.argsort(approx.abs(), descending=True, stable=True)
    return sorted(order[: options.exact_top].tolist())


@dataclass(frozen=True)
class EdgeScores:
    """The edge table and each edge's value per prompt, rows in the table's order (float64):
    `score_rows` [edge, prompt] whose mean over the prompts is `score` (up to float rounding: the
    table's mean is summed in another order), `exact_rows` likewise for `exact` (NaN rows where not
    patched). Memory: 2 x 8 bytes x edges x prompts (GPT-2 small, 32,491 edges, 32 prompts: 17 MB);
    with method "exact" the two are one array."""

    table: pd.DataFrame
    score_rows: Float[np.ndarray, "edge prompt"]
    exact_rows: Float[np.ndarray, "edge prompt"]


def edge_scores(
    model: Model, dataset: Dataset, options: EdgeOptions = EdgeOptions(), progress: bool = True
) -> pd.DataFrame:
    """One row per edge: source, target, input, score, exact (NaN where not computed), ... ."""
    return scored_edges(model, dataset, options, progress).table


def scored_edges(
    model: Model, dataset: Dataset, options: EdgeOptions = EdgeOptions(), progress: bool = True
) -> EdgeScores:
    """`edge_scores`' table with every edge's score and exact value per prompt beside it."""
    if options.method not in METHODS:
        raise HeadscopeError(f"method={options.method!r}: choose one of {', '.join(METHODS)}")
    runner = prepared(model)
    edges = graph.all_edges(model.arch, model.n_layers)
    approx = approx_rows = None
    if options.method != "exact":
        approx, approx_rows = _approximation(model, runner, dataset, edges, options, progress)
    chosen = _exact_edges(edges, approx, options)
    patched, patched_rows, clean = _exact_patching(model, runner, dataset, edges, chosen, options)
    corrupted = corrupted_metric(model, dataset, options.batch_size) * dataset.n
    twin = dataset.task.twin_kind
    conv = model.arch.convention
    table, order = _table(edges, approx, patched, options, clean, corrupted / dataset.n, twin, conv)
    score_rows = patched_rows if approx_rows is None else approx_rows
    return EdgeScores(table, score_rows.numpy()[order], patched_rows.numpy()[order])


def _approximation(
    model: Model, runner: InterventionRunner, dataset: Dataset, edges: list[Edge], options, progress: bool
) -> tuple[Tensor, Tensor]:
    """The approximation's mean over the prompts [edge] and its value per prompt [edge, prompt]."""
    approx = torch.zeros(len(edges), dtype=torch.float64)
    rows = []
    runs = batch_runs(model, runner, dataset, options.batch_size, options.donor)
    total = -(-dataset.n // options.batch_size)
    for run in tqdm(runs, total=total, desc=options.method, leave=False, disable=not progress or None):
        sums, per_prompt = _approx_sums(model, runner, run, edges, options)
        approx += sums
        rows.append(per_prompt)
    approx /= dataset.n
    return approx, torch.cat(rows, 1)  # [edge, prompt]


def _exact_patching(
    model: Model, runner: InterventionRunner, dataset: Dataset, edges: list[Edge], chosen: list[int], options
) -> tuple[Tensor, Tensor, float]:
    """The `chosen` edges patched exactly: their mean effect [edge] and effect per prompt
    [edge, prompt] (NaN for the others), and the clean metric."""
    patched = torch.full((len(edges),), float("nan"), dtype=torch.float64)
    rows = torch.full((len(edges), dataset.n), float("nan"), dtype=torch.float64)
    sums = torch.zeros(len(chosen), dtype=torch.float64)
    clean = 0.0
    kept = [edges[i] for i in chosen]
    for run in batch_runs(model, runner, dataset, options.batch_size, options.donor):
        base = _metric_rows(run.clean, run.batch)  # [batch]
        if chosen:
            metric = exact.exact_per_prompt(runner, run.clean, run.deltas, kept, run.batch)  # [edge, batch]
            sums += metric.sum(1).double()  # exact.exact_sums
            rows[chosen, run.batch.start : run.batch.stop] = metric.double() - base.double()
        clean += float(base.sum())
    if chosen:
        patched[chosen] = sums / dataset.n - clean / dataset.n
    return patched, rows, clean / dataset.n


def frozen_patching(
    model: Model, dataset: Dataset, chosen: list[Edge], batch_size: int = 16, donor: str = "corrupted"
) -> Tensor:
    """Frozen-scale edge patching: per edge, the mean metric of the logits before any cap with the
    edge patched (its frozen-norm delta) in the model whose every residual-stream norm keeps its
    clean-run scale, minus that model's clean metric: [edge] (float64). What EAP and EAP-IG
    approximate under the frozen-norm convention; under the linear one, the `exact` column."""
    runner = prepared(model)
    sums = torch.zeros(len(chosen), dtype=torch.float64)
    clean = 0.0
    for run in batch_runs(model, runner, dataset, batch_size, donor):
        capped = run.scales is None
        with norms.frozen(runner.bridge, run.scales):
            sums += exact.exact_sums(runner, run.clean, run.approx_deltas, chosen, run.batch, capped)
            with torch.no_grad():
                final = blocks.readout(runner, interventions.rows_at(run.clean.post, run.batch.end), capped)
        clean += float(interventions.end_metric(final, run.batch).sum())
    return sums / dataset.n - clean / dataset.n


def agreement(score: pd.Series, exact_values: pd.Series, top: int | None = None) -> float:
    """Spearman correlation of an approximation with exact patching where both exist (on the
    `top` edges largest by |exact| when given); NaN with fewer than 3 edges."""
    both = pd.DataFrame({"score": score, "exact": exact_values}).dropna()
    if top is not None:
        both = both.reindex(both["exact"].abs().sort_values(ascending=False).index[:top])
    if len(both) < 3:
        return float("nan")
    return float(stats.spearmanr(both["score"], both["exact"]).statistic)


def _table(
    edges,
    approx,
    patched,
    options: EdgeOptions,
    clean: float,
    corrupted: float,
    twin: str | None = None,
    convention: str = "linear",
) -> tuple[pd.DataFrame, np.ndarray]:
    """The table, largest |score| first, and its rows as positions in `edges`."""
    exact_values = patched.numpy()
    table = pd.DataFrame(
        {
            "source": [e.source.name for e in edges],
            "target": [e.target.name for e in edges],
            "input": [e.target.kind for e in edges],
            "score": exact_values if approx is None else approx.numpy(),
            "exact": exact_values,
            "method": options.method,
            "approximation": approx is not None,
            "convention": convention,
            "source_layer": [e.source.layer for e in edges],
            "target_layer": [e.target.layer for e in edges],
        }
    )
    order = table["score"].abs().sort_values(ascending=False, kind="stable").index
    table = table.reindex(order).reset_index(drop=True)
    table.attrs.update(
        method=options.method,
        donor=options.donor,
        twin=twin,
        approximation=approx is not None,
        convention=convention,
        steps=options.steps if options.method == "eap-ig" else None,
        clean=clean,
        corrupted=corrupted,
        n_exact=int(table["exact"].notna().sum()),
        spearman=agreement(table["score"], table["exact"]) if approx is not None else 1.0,
        spearman_top50=agreement(table["score"], table["exact"], TOP_AGREEMENT)
        if approx is not None
        else 1.0,
    )
    return table, order.to_numpy()


def edges_of(table: pd.DataFrame, model: Model) -> list[Edge]:
    """The edges named by a table's source, target and input columns."""
    by_name = {
        (e.source.name, e.target.name, e.target.kind): e for e in graph.all_edges(model.arch, model.n_layers)
    }
    found = []
    for s, t, k in zip(table["source"], table["target"], table["input"], strict=True):
        edge = by_name.get((s, t, k))
        found.append(edge if edge is not None else graph.parse_edge(s, t, k, model.arch, model.n_layers))
    return found


# Measured on the organism (ioi, 32 prompts, a loaded 2-core machine, three runs each): every one
# of its 175 edges patched exactly 48.7 / 15.5 / 27.5 s; eap-ig (5 steps) alone 13.6 / 9.3 / 8.3 s,
# with its top 50 patched 19.6 / 12.8 / 18.9 s: one IG step costs about as much as patching 10
# edges exactly (a step's stacked copies stop at q/k/v; an exact patch resumes every later block).
EDGES_PER_STEP = 10


def exact_is_cheaper(n_edges: int, options: EdgeOptions) -> bool:
    """Whether patching every edge exactly costs less than the approximation plus its exact check."""
    if options.method == "exact" or options.exact_top is None:
        return True
    steps = options.steps if options.method == "eap-ig" else 1
    return n_edges <= options.exact_top + EDGES_PER_STEP * (steps + 1)
