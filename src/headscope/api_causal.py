"""The notebook's causal analyses: knockouts, circuits kept or pruned, patching, edges.

Re-exported by `headscope.api` (`hs.ablate`, ...), which turns a model in memory into a Model.
"""

from __future__ import annotations

from typing import Literal

import pandas as pd

from headscope.analyses import causal as _causal
from headscope.analyses import knockouts as _knockouts
from headscope.analyses import qk as _qk
from headscope.analyses.circuit import find_circuit
from headscope.api_common import Names, TaskLike, attach, dataset
from headscope.models.loading import Model
from headscope.options import names


def ablate(
    model: Model,
    task: TaskLike,
    components: Names = ("heads", "mlps"),
    method: Literal["zero", "mean", "resample"] = "mean",
    positions: Names = "all",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = _knockouts.DEFAULT_BATCH,
    exact_top: int | None = None,
) -> pd.DataFrame:
    """The task metric with each head and MLP knocked out in turn (docs/methods.md §6).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        components: "heads", "mlps" or both (a string or a list).
        method: "zero", "mean" (per-position mean of the corrupted twin) or "resample" (a
            corrupted prompt of the same length, drawn with `seed`).
        positions: "all", "end" or role names: where the components are knocked out.
        n, seed: prompts to build and the seed of the generator and of resampling.
        batch_size: prompts per forward pass.
        exact_top: None knocks every component out exactly; N first estimates every head to
            first order (one forward and backward pass per batch) and knocks out exactly only the
            N heads it ranks highest and every MLP (the others keep the estimate).

    Returns:
        One row per component: `component, layer, head, method, metric, pct_of_clean, exact,
        effect, n, ci_low, ci_high, ci_kind`; the metric is the mean logit difference at `end`,
        the clean one is `.attrs["clean"]`; `exact` is False where the value is the first-order
        estimate; `effect` is metric - clean, `ci_low`/`ci_high` its 95% paired t interval over
        the `n` prompts (docs/methods.md §C; NaN for an estimate).

    Example:
        >>> hs.ablate(model, "seq-digits", n=16).sort_values("pct_of_clean").head(3)
    """
    data = dataset(model, task, n, seed)
    options = _knockouts.ablation_options(
        model, data, components, method, positions, seed, batch_size, exact_top
    )
    return attach(_knockouts.ablate(model, data, options), model, data)


def keep_circuit(
    model: Model,
    task: TaskLike,
    keep: Names,
    components: Names = ("heads", "mlps"),
    method: Literal["zero", "mean", "resample"] = "mean",
    positions: Names = "all",
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The metric with every component but `keep` knocked out (a circuit's faithfulness).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        keep: the circuit, "1.1,2.1,mlp0" or a list of such names (heads LAYER.HEAD, MLPs mlpL).
        components, method, positions: what is knocked out and how, as in `hs.ablate`.
        n, seed: prompts to build and the seed.

    Returns:
        One row: `kept` (comma-joined), `metric`, `clean`, `pct_of_clean`; the component names
        are also in `.attrs["components"]`.

    Example:
        >>> hs.keep_circuit(model, "seq-digits", keep="1.1,2.1,mlp0", n=16)
    """
    data = dataset(model, task, n, seed)
    options = _knockouts.ablation_options(model, data, components, method, positions, seed)
    table = _knockouts.keep_circuit(model, data, names(keep, "keep"), options)
    return attach(table, model, data, components=table.attrs["components"])


def greedy_circuit(
    model: Model,
    task: TaskLike,
    threshold: float = 1.0,
    components: Names = ("heads", "mlps"),
    method: Literal["zero", "mean", "resample"] = "mean",
    positions: Names = "all",
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A circuit by pruning: drop each component (least important first) costing < `threshold` points.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        threshold: percent points of the clean metric a removal may cost.
        components, method, positions: what is knocked out and how, as in `hs.ablate`.
        n, seed: prompts to build and the seed.

    Returns:
        One row, as `hs.keep_circuit` gives for the circuit found: `kept, metric, clean,
        pct_of_clean`; `.attrs["components"]` lists the kept components in layer order.

    Example:
        >>> circuit = hs.greedy_circuit(model, "seq-digits", n=16)
        >>> circuit.attrs["components"]
    """
    data = dataset(model, task, n, seed)
    options = _knockouts.ablation_options(model, data, components, method, positions, seed)
    table = _knockouts.greedy_circuit(model, data, options, threshold)
    return attach(table, model, data, components=table.attrs["components"], threshold=float(threshold))


def patch(
    model: Model,
    task: TaskLike,
    direction: Literal["denoise", "noise"] = "denoise",
    by_position: bool = False,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = _causal.DEFAULT_BATCH,
) -> pd.DataFrame:
    """Activation patching of every head's output between clean and corrupted prompts (docs/methods.md §6).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset` (its task needs a corrupted twin).
        direction: "denoise" (clean head into the corrupted run: 1 = restores everything) or
            "noise" (corrupted head into the clean run: 0 = destroys everything).
        by_position: one value per head and token position.
        n, seed: prompts to build and the seed.
        batch_size: prompts per forward pass.

    Returns:
        `layer, head[, position], direction, patched, value` with value = (patched - corrupted)
        / (clean - corrupted); `.attrs["clean"]` and `.attrs["corrupted"]` hold the two metrics.

    Example:
        >>> grid = hs.patch(model, "seq-digits", n=16)
        >>> hs.plot.heatmap(grid)
    """
    data = dataset(model, task, n, seed)
    return attach(_causal.patch(model, data, direction, by_position, batch_size), model, data)


def attribution_patch(
    model: Model, task: TaskLike, n: int | None = None, seed: int = 0, batch_size: int = 64
) -> pd.DataFrame:
    """A first-order estimate of `patch(direction="denoise")` for every head and MLP (one backward pass).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset` (its task needs a corrupted twin).
        n, seed: prompts to build and the seed.
        batch_size: prompts per forward and backward pass.

    Returns:
        `component, layer, head, value, approximation` (always True: an approximation);
        `.attrs["clean"]` and `.attrs["corrupted"]` hold the two metrics.

    Example:
        >>> hs.attribution_patch(model, "seq-digits", n=16).head()
    """
    data = dataset(model, task, n, seed)
    return attach(_causal.attribution_patch(model, data, batch_size), model, data)


def edge_attribution(
    model: Model,
    task: TaskLike,
    method: Literal["eap", "eap-ig", "exact"] = "eap-ig",
    steps: int = 5,
    exact_top: int | Literal["all"] = 50,
    donor: Literal["corrupted", "mean"] = "corrupted",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    curve: bool = False,
) -> pd.DataFrame:
    """The effect of every edge (source -> one input of a later component) on the task metric.

    An edge's effect is the change of the mean logit difference at `end` when the source's
    contribution to that one input is replaced by its value on the corrupted twin (path patching;
    definitions in `headscope.scores.circuit.graph` and the README's Circuits section).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset` (its task needs a corrupted twin).
        method: "eap-ig" (integrated gradients on the inputs as MIB runs it, an approximation),
            "eap" (attribution patching, an approximation) or "exact" (each edge patched on its own).
        steps: eap-ig's points on the corrupted -> clean path of the embedding.
        exact_top: also patch exactly this many edges the approximation ranks highest, or "all".
        donor: "corrupted" (each prompt's twin) or "mean" (per-position mean of the twins).
        n, seed: prompts to build and the seed.
        batch_size: prompts per pass.
        curve: also MIB's faithfulness curve, CPR and CMD of the ranking (10 circuits run).

    Returns:
        One row per edge, largest |score| first: `source, target, input, score, exact, method,
        approximation, source_layer, target_layer` (sources `embed`, `l.h`, `mlpL`; targets
        `l.h` for q, `l.g` for the k/v group g, `mlpL`, `logits`); `exact` is NaN where not
        computed. `.attrs`: clean, corrupted, spearman (approximation vs exact where both exist),
        spearman_top50 (on the 50 edges largest by |exact|), twin (the corrupted twin's kind), and
        `curve`: MIB's faithfulness curve of the ranking (`mib.Curve.as_dict()`: points with
        fraction, edges, metric, f; m_empty, m_full, cpr, cmd, x_axis) when `curve=True`.

    Example:
        >>> edges = hs.edge_attribution(model, "induction", method="eap", n=20)
        >>> edges.head(10)
    """
    data = dataset(model, task, n, seed)
    options = _causal.edge_options(method, steps, exact_top, donor, batch_size)
    return attach(_causal.edge_attribution(model, data, options, curve), model, data)


def circuit(
    model: Model,
    task: TaskLike,
    method: Literal["eap", "eap-ig", "exact"] = "eap-ig",
    edges: int | None = None,
    level: float = 0.8,
    exact_top: int | Literal["all"] = 50,
    donor: Literal["corrupted", "mean"] = "corrupted",
    n: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A task's circuit, chosen and measured as the report does: edges scored by `method`, MIB's
    faithfulness curve of their ranking, and the circuit run with every other edge patched.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset` (its task needs a corrupted twin).
        method: "eap-ig", "eap" (approximations, their top `exact_top` patched exactly) or "exact".
        edges: the circuit's size, the top edges by |exact|; None: the smallest circuit of MIB's
            curve whose normalized faithfulness reaches `level`.
        level: that normalized faithfulness, (F(C) - F(no edge)) / (F(model) - F(no edge)).
        exact_top: edges the approximation ranks highest, each also patched exactly (or "all").
        donor: "corrupted" (each prompt's twin) or "mean" (per-position mean of the twins).
        n, seed: prompts to build and the seed.

    Returns:
        One row: `method, n, edges_total, circuit_edges, nodes, clean, no_edges, circuit,
        faithfulness` (% of clean), `normalized, chosen_by, cpr, cmd, spearman`, and the circuit's
        stability under 200 bootstrap resamples of the prompts (seeded by `seed`): `stability`
        (mean Jaccard overlap), `stability_low` (5th percentile), `stability_resamples`, `stable`
        (>= 0.8, Méloux et al. 2025). `.attrs`: `edges`
        (every edge's score, `in_circuit` marked) and `curve` (MIB's points: fraction, edges, metric, f).

    Example:
        >>> hs.circuit(model, "ioi", n=32)[["circuit_edges", "normalized", "chosen_by"]]
    """
    data = dataset(model, task, n, seed)
    options = _causal.edge_options(method, 5, exact_top, donor)
    found = find_circuit(model, data, options, edges, float(level), seed=seed)
    table = found.edges.assign(in_circuit=found.edges.index.isin(found.chosen.index))
    return attach(found.summary, model, data, edges=table, curve=found.curve.points)


def qk_attribution(
    model: Model,
    task: TaskLike,
    *,
    head: str,
    query: str = "end",
    key: str,
    baseline: Literal["mean", "zero"] = "mean",
    n: int | None = None,
    seed: int = 0,
    batch_size: int = _qk.DEFAULT_BATCH,
) -> pd.DataFrame:
    """Why a head attends from one role to another: its pre-softmax score split over the upstream
    components, on the query side and on the key side (docs/methods.md, "QK attribution").

    A component's share on the query (key) side is the score's drop when its output at the query
    (key) position alone is replaced by the baseline and only the head's query (key) sees the
    change (`exact`), and the first-order estimate of that drop (`first_order`: the gradient of the
    score at the head's query (key) input times the component's clean - baseline output).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        head: the head, "LAYER.HEAD" (e.g. "2.0").
        query: the role the head attends from ("end", or a role of the task).
        key: the role it attends to (at or before the query in every prompt), e.g. "t8" for
            induction (the token after the first occurrence of the end token).
        baseline: what a component is replaced by: "mean" (its mean output over the prompts at
            that role) or "zero".
        n, seed: prompts to build and the seed.
        batch_size: prompts per pass.

    Returns:
        One row per side and component (embed, earlier heads `l.h`, earlier MLPs `mlpL`):
        `side, component, first_order, exact, n, ci_low, ci_high`, each a mean over the `n`
        prompts, with a 95% t interval of `exact`; `.attrs`: head, query, key, baseline, score
        (the clean score's mean) with score_ci_low / score_ci_high, spearman (first_order vs
        exact over every row), spearman_query, spearman_key.

    Example:
        >>> qk = hs.qk_attribution(model, "induction", head="2.0", query="end", key="t8", n=20)
        >>> qk[qk["side"] == "key"].sort_values("exact", ascending=False).head(3)
    """
    options = _qk.qk_options(model, head, key, query, baseline, batch_size)
    data = dataset(model, task, n, seed)
    return attach(_qk.qk_attribution(model, data, options), model, data)


__all__ = [
    "ablate",
    "attribution_patch",
    "circuit",
    "edge_attribution",
    "greedy_circuit",
    "keep_circuit",
    "patch",
    "qk_attribution",
]
