"""What the report computes on each task: one capture, every analysis on it, as tables for a Run.

Each analysis is the core's (`headscope.analyses`); this module decides the report's share of it
(which prompts, which heads, the bounded defaults on large models) and runs them in order. Which
heads the page shows is `report.selection`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal

import pandas as pd

from headscope.analyses import attention as _attention
from headscope.analyses import cast as _cast
from headscope.analyses import knockouts as _knockouts
from headscope.analyses import logits as _logits
from headscope.analyses import ov as _ov
from headscope.analyses import qk as _qk
from headscope.analyses.circuit import LEVEL, find_circuit
from headscope.analyses.record import PerTask, union
from headscope.capture import Capture, Needs, capture
from headscope.models.loading import Model
from headscope.report.selection import (
    attention_roles,
    keyword_tables,
    named_heads,
    pickable_heads,
    scatter_roles,
    section_heads,
    top_heads,
)
from headscope.scores import labels as _labels
from headscope.scores.ablation import AblationOptions
from headscope.scores.labels import LabelThresholds
from headscope.scores.ov import OVPass
from headscope.scores.sampling import Looks
from headscope.tasks.dataset import Dataset, missing_corrupted
from headscope.tasks.task import Task

Say = Callable[[str], None]
Embedding = Literal["context", "token", "block0"]


CIRCUIT_PROMPTS = 32
AUTO_CIRCUIT_EDGES = 2000  # the organism has 175; GPT-2 small 32,491
LARGE_CIRCUIT_PROMPTS = 4  # the bounded default above AUTO_CIRCUIT_EDGES edges: eap-ig on 4 prompts,
LARGE_EXACT_TOP = 20  # its top 20 edges patched exactly
AUTO_EXACT_HEADS = 48  # models with at most this many heads: every knockout exact by default
KNOCKOUT_EXACT = 16  # on larger models: heads knocked out exactly besides those the page names
KNOCKOUT_FIRST_LOOK = 8  # a budgeted report's knockouts: prompts of the first look, and those each
KNOCKOUT_LOOK_BATCH = 8  # later look adds, up to knockout_n (`knockout_looks`; docs/methods.md §C)


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
    circuit_edges: int | None = None  # the circuit: the top edges by |exact| among those patched exactly
    # (None: the smallest circuit of MIB's curve whose normalized faithfulness reaches circuit_level)
    circuit_level: float = LEVEL
    circuit_exact: int = 50  # edges eap-ig ranks highest, each patched exactly (every edge where cheaper)
    qk_n: int | None = None  # QK attribution of the labelled heads (at most top_heads a task) on the
    # first prompts (0: none; None: the knockouts' count, knockout_n)
    thresholds: LabelThresholds = field(default_factory=LabelThresholds)
    left_out: tuple[tuple[str, str], ...] = ()  # (task, why) of the default tasks left out
    task_rule: str = ""  # the rule that chose the default tasks, in words (the page states it)
    budget: float | None = None  # seconds the plan fitted the sample sizes to (None: the counts as given)
    budget_notes: tuple[tuple[str, str], ...] = ()  # (analysis, why) left out by the budget
    ov_detail_n: int | None = None  # prompts (the first) whose OV rows get every rank and top-k token:
    # the per-token, per-keyword and category tables' sample; the other rows' ranks are capped at k
    # (the scores, which read hits, are exact on every prompt). None: every prompt

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "tasks": list(self.tasks),
            "left_out": dict(self.left_out),
            "budget_notes": dict(self.budget_notes),
        }


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


def analyse_task(
    model: Model, dataset: Dataset, options: ReportOptions, say: Say, ov_pass: OVPass | None = None
) -> dict[str, pd.DataFrame]:
    """Every table of the report on one task's dataset; `ov_pass`: its OV inputs and ranks from the
    report's one pass over the vocabulary (else computed here)."""
    task = dataset.task
    say(f"task {task.name}: one forward pass over {dataset.n} prompts")
    cap = capture(model, dataset, needs_for(task))  # batched: memory bounded whatever --n
    tables: dict[str, pd.DataFrame] = {"tasks": task_info(task)}
    if options.budget_notes:
        tables["not_computed"] = pd.DataFrame(options.budget_notes, columns=["analysis", "why"])
    tables |= {step.table_name: step.run(model, dataset, cap) for step in CAPTURE_STEPS if step.applies(task)}
    tables = _joined(tables, _step(_ov_tables, model, dataset, cap, options, say, ov_pass))
    tables = _joined(tables, _step(_dla_table, model, dataset, cap, options, say))
    tables["labels"] = _ov.labels_of(task, tables, options.thresholds)
    named = named_heads(tables, options.top_heads)  # knocked out exactly whatever the screen says
    tables = _joined(tables, _step(_knockout_table, model, dataset, cap, options, say, named))
    tables = _joined(tables, _step(_circuit_tables, model, dataset, cap, options, say))
    tables["labels"] = _labels.with_support(tables["labels"], tables, options.thresholds)  # + behaviour
    tables = _joined(tables, _step(_cast_tables, model, dataset, cap, options, say, tables))
    tables = _joined(tables, _step(_qk_tables, model, dataset, cap, options, say, tables))
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


def _ov_tables(
    model, dataset, cap, options: ReportOptions, say: Say, computed=None
) -> dict[str, pd.DataFrame]:
    return _ov.ov_tables(model, dataset, options.k, options.embedding, cap, computed, options.ov_detail_n)


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
    every head screened to first order and exact knockouts of the top ones and of `named`. In a
    budgeted report the exact knockouts run in looks (`knockout_looks`) until the order of the
    page's `top_heads` heads by |effect| is settled, and `knockout_stops` says where they stopped."""
    if options.knockout_n < 1:
        return {}
    first = dataset.subset(options.knockout_n)
    top = knockout_exact(model, options.knockout_exact)
    looks = knockout_looks(options, first.n)
    prompts = f"{first.n} prompts" if looks is None else f"up to {first.n} prompts, {looks.batch} at a time"
    if top is None:
        say(f"  mean-ablating each head and MLP on {prompts}")
    else:
        say(
            f"  mean-ablating on {prompts}: every head estimated to first order, then exactly "
            f"the top {top} by the estimate, the {len(named)} heads the page names and every MLP"
        )
    chosen = AblationOptions(exact_top=top, exact_heads=named if top is not None else ())
    if looks is None:
        return {"knockout": _knockouts.ablate(model, first, chosen)}
    table, stop = _knockouts.ablate_in_looks(model, first, chosen, looks, options.top_heads)
    say(f"  knockouts: {stop['why'].iloc[0]} (each look's intervals at {looks.level():.2%})")
    return {"knockout": table, "knockout_stops": stop}


def knockout_looks(options: ReportOptions, prompts: int) -> Looks | None:
    """The looks of a budgeted report's knockouts on `prompts` (the cap, `knockout_n` at most):
    KNOCKOUT_FIRST_LOOK prompts, then KNOCKOUT_LOOK_BATCH more at a time; None (one fixed count, as
    asked) without a budget (`--exhaustive`) or below 2 prompts."""
    if options.budget is None or prompts < 2:
        return None
    return Looks(min(KNOCKOUT_FIRST_LOOK, prompts), KNOCKOUT_LOOK_BATCH, prompts)


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
    from headscope.scores.circuit import edges

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
    found = find_circuit(
        model, first, edge_options, options.circuit_edges, options.circuit_level, seed=options.seed
    )
    table, curve = found.edges, found.curve
    if table.attrs["convention"] == "frozen-norm":
        say(f"  {edges.FROZEN_NORM_NOTE}")
    say(f"  circuit step: {time.perf_counter() - started:.1f} s")  # the console only: a run's files
    points = curve.points.assign(method=table.attrs["method"], cpr=curve.cpr, cmd=curve.cmd)
    points = points.assign(m_empty=curve.empty, m_full=curve.full)  # are the same for the same seed
    shown = table.head(EDGE_ROWS).drop(columns=["method", "approximation"])
    shown = shown.assign(in_circuit=[i in set(found.chosen.index) for i in shown.index])
    return {"edges": shown, "circuit": found.summary, "circuit_curve": points}


def _cast_tables(model, dataset, cap, options: ReportOptions, say: Say, tables: dict) -> dict:
    """S-inhibition, backup movers and feeders from the labelled movers and the edges, on the
    knockouts' prompts (`analyses.cast`); nothing without knockouts or edges."""
    if options.knockout_n < 1 or "edges" not in tables:
        return {}
    return _cast.cast_tables(model, dataset.subset(options.knockout_n), tables, options.thresholds)


def qk_prompts(options: ReportOptions) -> int:
    """Prompts of the report's QK attribution: as asked, by default the knockouts' count."""
    return options.knockout_n if options.qk_n is None else options.qk_n


def _qk_tables(model, dataset, cap, options: ReportOptions, say: Say, tables: dict) -> dict:
    """Each labelled head's score from `end` to the key its label reads, split over the components
    upstream on each side (`analyses.qk.labelled_qk`), at most `top_heads` heads, on the first
    `qk_prompts` prompts; a head the core refuses gives a `not_computed` row saying why."""
    prompts = qk_prompts(options)
    if prompts < 1:
        return {}
    first = dataset.subset(prompts)
    table, refused = _qk.labelled_qk(model, first, tables, options.top_heads)
    if not table.empty:
        heads = table.groupby(["layer", "head"]).ngroups
        say(f"  QK attribution of {heads} labelled heads, {first.n} prompts")
    found = {"qk_attribution": table}
    if refused:
        why = [{"analysis": "QK attribution", "why": reason} for reason in refused]
        found["not_computed"] = pd.DataFrame(why)
    return found


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
