"""What the report computes on each task: one capture, every analysis on it, as tables for a Run.

Each analysis is the core's (`headscope.analyses`); this module decides the report's share of it
(which prompts, which heads, the bounded defaults on large models) and runs them in order. Which
heads the page shows is `report.selection`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import pandas as pd

from headscope.analyses import attention as _attention
from headscope.analyses import causal as _causal
from headscope.analyses import knockouts as _knockouts
from headscope.analyses import logits as _logits
from headscope.analyses import ov as _ov
from headscope.analyses.atlas import atlas_tables
from headscope.analyses.record import PerTask, union
from headscope.capture import Capture, Needs, capture
from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.report.ov_once import ov_once
from headscope.report.selection import (  # noqa: F401  (named here by earlier callers)
    attention_roles,
    compare_tasks,
    head_card,
    head_ranking,
    keyword_order,
    keyword_table,
    keyword_tables,
    named_heads,
    pickable_heads,
    scatter_roles,
    section_heads,
    top_heads,
)
from headscope.run import Run, plain_record
from headscope.scores.ablation import AblationOptions
from headscope.scores.atlas import AtlasOptions
from headscope.scores.labels import LabelThresholds
from headscope.tasks.dataset import Dataset, build_dataset, missing_corrupted
from headscope.tasks.task import Task

Say = Callable[[str], None]
Embedding = Literal["context", "token", "block0"]


CIRCUIT_PROMPTS = 32
AUTO_CIRCUIT_EDGES = 2000  # the organism has 175; GPT-2 small 32,491
LARGE_CIRCUIT_PROMPTS = 4  # the bounded default above AUTO_CIRCUIT_EDGES edges: eap-ig on 4 prompts,
LARGE_EXACT_TOP = 20  # its top 20 edges patched exactly
AUTO_EXACT_HEADS = 48  # models with at most this many heads: every knockout exact by default
KNOCKOUT_EXACT = 16  # on larger models: heads knocked out exactly besides those the page names


@dataclass(frozen=True)
class ReportOptions:
    """Everything that decides the numbers of a report; saved in results.json."""

    tasks: tuple[str, ...]
    n: int = 200
    seed: int = 0
    k: int = 5
    embedding: Embedding = "context"
    top_heads: int = 4  # heads each section leads with: labelled heads, then the section's top scorers
    example_prompts: int = 10  # prompts of the attention viewer
    every_head_up_to: int = 32  # models with at most this many heads: every head can be picked
    n_boot: int = 1000
    knockout_n: int = 32  # knockouts run on the first prompts only (0: none): one pass per component
    knockout_exact: int | None = None  # heads knocked out exactly besides those the page names, the
    # others screened (first-order estimate); None: every head on a model of at most AUTO_EXACT_HEADS
    # heads, else KNOCKOUT_EXACT
    circuit_n: int | None = None  # edge attribution and the circuit on the first prompts (0: none;
    # None: CIRCUIT_PROMPTS where the model has at most AUTO_CIRCUIT_EDGES edges, else LARGE_CIRCUIT_PROMPTS)
    circuit_edges: int = 10  # the circuit: the top edges by |exact| among those patched exactly
    circuit_exact: int = 50  # edges eap-ig ranks highest, each patched exactly (every edge where cheaper)
    thresholds: LabelThresholds = field(default_factory=LabelThresholds)
    left_out: tuple[tuple[str, str], ...] = ()  # (task, why) of the default tasks left out

    def as_dict(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks), "left_out": dict(self.left_out)}


# The analyses of the one capture with no options of their own, in the order they run; each
# table lands in the run under the analysis's table name, on the tasks it applies to.
CAPTURE_STEPS: tuple[PerTask, ...] = (
    _logits.EVALUATION,
    _attention.ROLE_ATTENTION,
    _attention.HEAD_DETECTORS,
    _attention.ATTENTION_ENTROPY,
)


def needs_for(task: Task) -> Needs:
    """The union of what every analysis of the report reads: one capture per task."""
    steps = [step.needs for step in CAPTURE_STEPS if step.applies(task)]
    return union(_ov.OV_NEEDS, _logits.DLA_NEEDS, _logits.SCATTER_NEEDS, *steps)


def build_run(model: Model, tasks: Sequence[Task], options: ReportOptions, say: Say = print) -> Run:
    """Every table of the report for `model` on `tasks` (named in `options.tasks`)."""
    with ov_once(model, tasks, options, say):  # the OV kernel once for every task and the atlas
        return _build_run(model, tasks, options, say)


def _build_run(model: Model, tasks: Sequence[Task], options: ReportOptions, say: Say) -> Run:
    if len({task.name for task in tasks}) < len(tasks):
        raise HeadscopeError("two of the report's tasks share a name; give each task once")
    per_task: dict[str, list[pd.DataFrame]] = {}
    for task in tasks:
        say(f"task {task.name}: building {options.n} prompts")
        for table_name, table in analyse_task(model, task, options, say).items():
            per_task.setdefault(table_name, []).append(table.assign(task=task.name))
    tables = {name: _task_first(pd.concat(parts, ignore_index=True)) for name, parts in per_task.items()}
    tables["comparison"] = compare_tasks(tables, tuple(t.name for t in tasks))
    tables["head_card"] = head_card(tables)
    tables |= _atlas_tables(model, options.k, say)  # weights only: once for the model, not per task
    names = [task.name for task in tasks]  # a TOML file's task has its own name
    record = options.as_dict() | {"tasks": names, "task_sources": list(options.tasks)}
    computed_in = {"dtype": str(model.dtype).removeprefix("torch."), "device": model.device.type}
    provenance = plain_record({"options": record, "model": model.identity.as_dict() | computed_in})
    return Run(tables=tables, seed=options.seed, **provenance)


def _atlas_tables(model: Model, k: int, say: Say) -> dict[str, pd.DataFrame]:
    """The atlas of every head on the whole library, both signs; none, with a note, when the
    tokenizer spells too little of the library."""
    say(f"head atlas: {model.n_layers * model.n_heads} heads x the relation library, weights only")
    try:
        return atlas_tables(model, None, AtlasOptions(k=k))
    except HeadscopeError as error:
        say(f"head atlas left out: {error}")
        return {}


def _task_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["task", *[c for c in table.columns if c != "task"]]]


def analyse_task(model: Model, task: Task, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    dataset = build_dataset(task, model.tokens, options.n, options.seed)
    say(f"task {task.name}: one forward pass over {dataset.n} prompts")
    cap = capture(model, dataset, needs_for(task))  # batched: memory bounded whatever --n
    tables: dict[str, pd.DataFrame] = {"tasks": task_info(task)}
    tables |= {step.table_name: step.run(model, dataset, cap) for step in CAPTURE_STEPS if step.applies(task)}
    for step in (_ov_tables, _dla_table):
        tables = _joined(tables, _step(step, model, dataset, cap, options, say))
    tables["labels"] = _ov.labels_of(task, tables, options.thresholds)
    named = named_heads(tables, options.top_heads)  # knocked out exactly whatever the screen says
    tables = _joined(tables, _step(_knockout_table, model, dataset, cap, options, say, named))
    tables = _joined(tables, _step(_circuit_tables, model, dataset, cap, options, say))
    tables["top_heads"] = top_heads(tables, options.top_heads)
    tables["section_heads"] = section_heads(tables, options.top_heads)
    picked = pickable_heads(tables["section_heads"], model, options.every_head_up_to)
    tables |= keyword_tables(tables, task, picked)
    tables |= _scatter_tables(model, dataset, cap, picked, options, say)
    tables |= _attention.example_patterns(model, dataset, picked, options.example_prompts)
    return tables


def _step(step: Callable, model: Model, dataset: Dataset, cap: Capture, options, say: Say, *more) -> dict:
    say(f"task {dataset.task.name}: {step.__name__.strip('_').replace('_', ' ')}")
    return step(model, dataset, cap, options, say, *more)


def _joined(tables: dict[str, pd.DataFrame], more: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """`tables` with `more` added; two steps' `not_computed` rows are kept, one after the other."""
    if "not_computed" in tables and "not_computed" in more:
        more = more | {"not_computed": pd.concat([tables["not_computed"], more["not_computed"]])}
    return tables | more


CHANCE_MARGIN = 0.1  # the answer beating the contrast on at most 1/2 + this share of prompts is chance
CHECK_PROMPTS = 32


def doable_tasks(
    model: Model, tasks: Sequence[Task], seed: int = 0, margin: float = CHANCE_MARGIN
) -> tuple[list[Task], list[tuple[str, str]]]:
    """The tasks the model does better than chance on the first 32 prompts, and each other task
    with why it is left out (`at_chance`): a report on a task the model cannot do shows only noise
    (the organism was never trained on seq-letters). A task the model does imperfectly stays: a
    135M model answers induction's top-1 less than half the time while its induction heads score
    0.61, and those heads are what a reader looks for."""
    kept, left_out = [], []
    for task in tasks:
        dataset = build_dataset(task, model.tokens, CHECK_PROMPTS, seed)
        why = at_chance(model, dataset, margin)
        if why is None:
            kept.append(task)
        else:
            left_out.append((task.name, why))
    return kept, left_out


def at_chance(model: Model, dataset: Dataset, margin: float = CHANCE_MARGIN) -> str | None:
    """Why the model is at chance on the dataset, or None: its mean logit difference (answer -
    contrast at the end) is no larger on the clean prompts than on their corrupted twins (with the
    clean answers), or the answer beats the contrast (the candidate pair: chance 1/2) on at most
    1/2 + `margin` of the prompts."""
    from headscope.scores import metric

    def diffs(data: Dataset):  # [batch]
        logits = capture(model, data, Needs(logits_end=True)).logits_end
        return metric.logit_diff(logits, dataset.answers, dataset.contrasts)

    clean = diffs(dataset)
    if dataset.corrupted is not None:
        twin = float(diffs(dataset.corrupted).mean())
        if float(clean.mean()) <= twin:
            return (
                f"logit difference {float(clean.mean()):.2f} no larger than on the corrupted twins "
                f"({twin:.2f}) on {dataset.n} prompts"
            )
    wins = float((clean > 0).float().mean())
    if wins <= 0.5 + margin:
        return f"the answer beats the contrast on {wins:.2f} of {dataset.n} prompts (chance 0.50)"
    return None


def task_info(task: Task) -> pd.DataFrame:
    """What the page says about a task (it renders without the task's files)."""
    row = {
        "description": task.description,
        "answer_role": task.answer_role or "",
        "contrast_role": task.contrast_role or "",
        "relations": ",".join(task.relations),
        "scatter_roles": ",".join(scatter_roles(task)),
        "attention_roles": ",".join(attention_roles(task)),
    }
    return pd.DataFrame([row])


def _ov_tables(model, dataset, cap, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    return _ov.ov_tables(model, dataset, options.k, options.embedding, cap)


def _dla_table(model, dataset, cap, options, say: Say) -> dict[str, pd.DataFrame]:
    """DLA, or where the architecture has no such sum (Gemma 2/3), a `not_computed` row saying why."""
    refusal = _logits.dla_refusal(model)
    if refusal is not None:
        say(f"  not computed: DLA: {refusal}")
        return {"not_computed": pd.DataFrame([{"analysis": "DLA", "why": refusal}])}
    if model.arch.convention_note is not None:
        say(f"  DLA: {model.arch.convention_note}")
    return {"dla": _logits.direct_logit_attribution(model, dataset, cap)}


def _knockout_table(
    model, dataset, cap, options: ReportOptions, say: Say, named: tuple[tuple[int, int], ...] = ()
) -> dict[str, pd.DataFrame]:
    """Every head and MLP mean-ablated on the first prompts; on a large model (`knockout_exact`)
    every head screened to first order and exact knockouts of the top ones and of `named`."""
    if options.knockout_n < 1:
        return {}
    first = dataset.subset(options.knockout_n)
    top = knockout_exact(model, options.knockout_exact)
    if top is None:
        say(f"  mean-ablating each head and MLP on {first.n} prompts")
    else:
        say(
            f"  mean-ablating on {first.n} prompts: every head estimated to first order, then exactly "
            f"the top {top} by the estimate, the {len(named)} heads the page names and every MLP"
        )
    chosen = AblationOptions(exact_top=top, exact_heads=named if top is not None else ())
    return {"knockout": _knockouts.ablate(model, first, chosen)}


def knockout_exact(model: Model, asked: int | None) -> int | None:
    """Heads the report knocks out exactly besides the named ones: as asked (None when that covers
    every head); by default every head on a model of at most AUTO_EXACT_HEADS, else KNOCKOUT_EXACT."""
    heads = model.n_layers * model.n_heads
    top = asked if asked is not None else (None if heads <= AUTO_EXACT_HEADS else KNOCKOUT_EXACT)
    return None if top is None or top >= heads else top


EDGE_ROWS = 1000  # the edge table keeps the strongest edges by |score| (GPT-2 small has ~35,000)


def circuit_prompts(model: Model, asked: int | None) -> int:
    """Prompts of the report's circuit step: as asked; by default CIRCUIT_PROMPTS on a model of at
    most AUTO_CIRCUIT_EDGES edges, and LARGE_CIRCUIT_PROMPTS on a larger one (a bounded default:
    eap-ig on few prompts, its top LARGE_EXACT_TOP edges patched exactly; `circuit_options`)."""
    if asked is not None:
        return asked
    return CIRCUIT_PROMPTS if not is_large(model) else LARGE_CIRCUIT_PROMPTS


def is_large(model: Model) -> bool:
    from headscope.scores.circuit import graph

    return len(graph.all_edges(model.arch, model.n_layers)) > AUTO_CIRCUIT_EDGES


def _circuit_tables(model, dataset, cap, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    """Every edge's eap score, the top `circuit_exact` patched exactly, and the circuit of the
    top `circuit_edges` by |exact| run with every other edge patched (its faithfulness)."""
    from headscope.scores.circuit import edges, faithfulness

    prompts = circuit_prompts(model, options.circuit_n)
    if prompts < 1:
        return {}
    why = missing_corrupted(dataset, "edge patching")
    if why is not None:
        say(f"  not computed: circuit: {why}")
        return {"not_computed": pd.DataFrame([{"analysis": "circuit", "why": why}])}
    first = dataset.subset(prompts)
    edge_options = circuit_options(model, options)
    if edge_options.method == "exact":
        say(f"  every edge patched exactly, {first.n} prompts (cheaper than eap-ig and its exact check)")
    else:
        say(f"  eap-ig on every edge, {first.n} prompts; the top {edge_options.exact_top} patched exactly")
    started = time.perf_counter()
    table = _causal.edge_attribution(model, first, edge_options)
    if table.attrs["convention"] == "frozen-norm":
        say(f"  {edges.FROZEN_NORM_NOTE}")
    chosen = _causal.circuit_edges(table, options.circuit_edges)
    say(f"  the circuit of the top {len(chosen)} edges, and MIB's curve: every other edge patched")
    evaluator = faithfulness.Evaluator(model, first)  # the batches' runs, once for both
    summary = circuit_summary(model, first, table, chosen, evaluator)
    curve = faithfulness.ranking_curve(model, first, table, evaluator=evaluator)
    say(f"  circuit step: {time.perf_counter() - started:.1f} s")  # the console only: a run's files
    summary = summary.assign(cpr=curve.cpr, cmd=curve.cmd)  # are the same for the same seed
    summary = summary.assign(convention=table.attrs["convention"])
    points = curve.points.assign(method=table.attrs["method"], cpr=curve.cpr, cmd=curve.cmd)
    points = points.assign(m_empty=curve.empty, m_full=curve.full)
    shown = table.head(EDGE_ROWS).drop(columns=["method", "approximation"])
    shown = shown.assign(in_circuit=[i in set(chosen.index) for i in shown.index])
    return {"edges": shown, "circuit": summary, "circuit_curve": points}


def circuit_options(model: Model, options: ReportOptions):
    """eap-ig with its top `circuit_exact` edges patched exactly (LARGE_EXACT_TOP by default on a
    model of more than AUTO_CIRCUIT_EDGES edges), or every edge patched exactly where that costs
    less (`edges.exact_is_cheaper`: a model of at most 110 edges)."""
    from headscope.scores.circuit import edges, graph

    bounded = options.circuit_n is None and is_large(model)
    chosen = edges.EdgeOptions("eap-ig", exact_top=LARGE_EXACT_TOP if bounded else options.circuit_exact)
    if edges.exact_is_cheaper(len(graph.all_edges(model.arch, model.n_layers)), chosen):
        return edges.EdgeOptions("exact", exact_top=None)
    return chosen


def circuit_summary(
    model: Model, dataset: Dataset, table: pd.DataFrame, chosen: pd.DataFrame, evaluator=None
) -> pd.DataFrame:
    """One row: the method and its agreement with exact patching, and the circuit's faithfulness
    F(C) / F(every edge) with F(no edge) (scores.circuit.faithfulness; completeness and minimality
    are `headscope circuit`'s). F(every edge) is the clean metric and F(no edge) the corrupted
    one, which the edge table holds already: one patched run per task, not three. `evaluator`:
    a `faithfulness.Evaluator` of `dataset` already made (its batches' runs are reused)."""
    from headscope.scores.circuit import edges, faithfulness

    kept = set(edges.edges_of(chosen, model))
    metric = (evaluator or faithfulness.Evaluator(model, dataset)).metric(kept)
    attrs = table.attrs
    full, none = attrs["clean"], attrs["corrupted"]
    row = {
        "method": attrs["method"],
        "approximation": bool(attrs["approximation"]),
        "n": dataset.n,
        "edges_total": len(table),
        "exact_checked": int(attrs["n_exact"]),
        "spearman": attrs["spearman"],
        "spearman_top50": attrs["spearman_top50"],
        "circuit_edges": len(chosen),
        "nodes": ",".join(faithfulness.nodes_of(sorted(kept), model)),
        "clean": full,
        "no_edges": none,
        "circuit": metric,
        "faithfulness": 100 * metric / full if full else float("nan"),
        "normalized": (metric - none) / (full - none) if full != none else float("nan"),
        "group_size": model.arch.group_size,
    }
    return pd.DataFrame([row])


def first_prompts(dataset: Dataset, count: int, model: Model) -> Dataset:
    """The first `count` prompts with their twins: `dataset.subset(count)` (kept for earlier callers)."""
    return dataset.subset(count)


def _scatter_tables(model, dataset, cap, heads, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    if not heads:
        return {}
    say(f"task {dataset.task.name}: attention vs. logit scatter for {len(heads)} heads")
    roles = tuple(r for r in scatter_roles(dataset.task) if _role_present(dataset, r))
    points, stats = [], []
    for layer, head in heads:
        found, found_stats = _logits.scatter(
            model, dataset, (layer, head), roles, "none", options.n_boot, options.seed, cap
        )
        points.append(found.assign(layer=layer, head=head))
        stats.append(found_stats.assign(layer=layer, head=head))
    return {
        "scatter_points": pd.concat(points, ignore_index=True),
        "scatter_stats": pd.concat(stats, ignore_index=True),
    }


def _role_present(dataset: Dataset, role: str) -> bool:
    return any(
        bool(dataset.roles[name].present.any()) for name in dataset.role_names(role) if name in dataset.roles
    )
