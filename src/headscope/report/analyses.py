"""What the report computes on each task: one capture, every score, as tables for a Run.

A score module that has not landed in this install (the knockout module, say) is skipped
with a note on the console; every table that is computed is a real result.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Literal

import pandas as pd

from headscope.capture import Capture, Needs, capture
from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.report.atlas_section import atlas_tables
from headscope.run import Run, plain_record
from headscope.scores.labels import LabelThresholds, contrast_group, label_heads
from headscope.tasks.dataset import Dataset, build_dataset, dataset_from_pairs
from headscope.tasks.prompt import PromptPair
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


def score_module(name: str) -> ModuleType | None:
    """headscope.scores.<name>, or None when this install does not have it yet."""
    full = f"headscope.scores.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as error:
        if error.name != full:
            raise
        return None


def needs_for(task: Task) -> Needs:
    """The union of what every score of the report reads: one capture per task."""
    return Needs(
        resid0_keywords=True,
        pattern_end=True,
        pattern_roles=True,
        pattern_full=task.name == "induction",
        z_end=True,
        mlp_end=True,
        embed_end=True,
        scale_end=True,
        logits_end=True,
    )


def build_run(model: Model, tasks: Sequence[Task], options: ReportOptions, say: Say = print) -> Run:
    """Every table of the report for `model` on `tasks` (named in `options.tasks`)."""
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
    tables |= atlas_tables(model, options.k, say)  # weights only: once for the model, not per task
    names = [task.name for task in tasks]  # a TOML file's task has its own name
    record = options.as_dict() | {"tasks": names, "task_sources": list(options.tasks)}
    computed_in = {"dtype": str(model.dtype).removeprefix("torch."), "device": model.device.type}
    provenance = plain_record({"options": record, "model": model.identity.as_dict() | computed_in})
    return Run(tables=tables, seed=options.seed, **provenance)


def _task_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["task", *[c for c in table.columns if c != "task"]]]


def analyse_task(model: Model, task: Task, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    dataset = build_dataset(task, model.tokens, options.n, options.seed)
    say(f"task {task.name}: one forward pass over {dataset.n} prompts")
    cap = capture(model, dataset, needs_for(task))  # batched: memory bounded whatever --n
    tables: dict[str, pd.DataFrame] = {"tasks": task_info(task), "evaluation": _evaluation(dataset, cap)}
    for step in (_ov_tables, _attention_tables, _dla_table):
        tables = _joined(tables, _step(step, model, dataset, cap, options, say))
    tables["labels"] = label_heads(
        tables.get("ov_scores", pd.DataFrame()),
        tables.get("role_attention", pd.DataFrame()),
        tables.get("detectors", pd.DataFrame()),
        task.answer_role,
        options.thresholds,
        contrast_group(task),
    )
    named = named_heads(tables, options.top_heads)  # knocked out exactly whatever the screen says
    tables = _joined(tables, _step(_knockout_table, model, dataset, cap, options, say, named))
    tables = _joined(tables, _step(_circuit_tables, model, dataset, cap, options, say))
    tables["top_heads"] = top_heads(tables, options.top_heads)
    tables["section_heads"] = section_heads(tables, options.top_heads)
    picked = pickable_heads(tables["section_heads"], model, options.every_head_up_to)
    tables |= _keyword_tables(tables, task, picked)
    tables |= _scatter_tables(model, dataset, cap, picked, options, say)
    tables |= example_patterns(model, dataset, picked, options.example_prompts)
    return tables


def _step(step: Callable, model: Model, dataset: Dataset, cap: Capture, options, say: Say, *more) -> dict:
    say(f"task {dataset.task.name}: {step.__name__.strip('_').replace('_', ' ')}")
    return step(model, dataset, cap, options, say, *more)


def named_heads(tables: dict[str, pd.DataFrame], count: int) -> tuple[tuple[int, int], ...]:
    """The heads the page names before knockouts: labelled heads and each section's leading heads."""
    named = section_heads(tables, count)[["layer", "head"]]
    labels = tables.get("labels", pd.DataFrame(columns=["layer", "head"]))[["layer", "head"]]
    pairs = pd.concat([named, labels]).astype(int).drop_duplicates().sort_values(["layer", "head"])
    return tuple((int(layer), int(head)) for layer, head in pairs.itertuples(index=False))


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


def _evaluation(dataset: Dataset, cap: Capture) -> pd.DataFrame:
    from headscope.scores import metric

    diff = metric.logit_diff(cap.logits_end, dataset.answers, dataset.contrasts)
    row = {
        "accuracy": float(metric.top1_correct(cap.logits_end, dataset.answers).float().mean()),
        "logit_diff": float(diff.mean()),
        "answer_prob": float(metric.answer_prob(cap.logits_end, dataset.answers).mean()),
        "n": dataset.n,
        "dropped": dataset.dropped,
    }
    evaluate = score_module("evaluate")
    if evaluate is not None:
        row |= {key: value for key, value in evaluate.evaluate(dataset, cap).items() if key in row}
    return pd.DataFrame([row])


def _missing(name: str, say: Say) -> dict[str, pd.DataFrame]:
    say(f"  skipped: headscope.scores.{name} is not in this install")
    return {}


def _ov_tables(model, dataset, cap, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    ov = score_module("ov")
    if ov is None:
        return _missing("ov", say)
    ov_options = ov.OVOptions(
        relations=tuple(dataset.task.relations), k=options.k, embedding=options.embedding, negative=True
    )
    result = ov.ov_scores(model, dataset, ov_options, capture=cap)
    return {"ov_scores": result.table, "ov_per_token": result.per_token, "ov_categories": result.categories}


def _attention_tables(model, dataset, cap, options, say: Say) -> dict[str, pd.DataFrame]:
    attention = score_module("attention")
    if attention is None:
        return _missing("attention", say)
    tables = {"role_attention": attention.role_attention(dataset, cap)}
    if cap.pattern_full is not None:
        tables["detectors"] = attention.head_detectors(dataset, cap)
    return tables


def _dla_table(model, dataset, cap, options, say: Say) -> dict[str, pd.DataFrame]:
    """DLA, or where the architecture has no such sum (Gemma 2/3), a `not_computed` row saying why."""
    attribution = score_module("attribution")
    if attribution is None:
        return _missing("attribution", say)
    refusal = model.arch.dla_refusal if model.arch is not None else None
    if refusal is not None:
        say(f"  not computed: DLA: {refusal}")
        return {"not_computed": pd.DataFrame([{"analysis": "DLA", "why": refusal}])}
    return {"dla": attribution.direct_logit_attribution(model.weights, dataset, cap)}


def _knockout_table(
    model, dataset, cap, options: ReportOptions, say: Say, named: tuple[tuple[int, int], ...] = ()
) -> dict[str, pd.DataFrame]:
    """Every head and MLP mean-ablated on the first prompts; on a large model (`knockout_exact`)
    every head screened to first order and exact knockouts of the top ones and of `named`."""
    ablation = score_module("ablation")
    if ablation is None:
        return _missing("ablation", say)
    if options.knockout_n < 1:
        return {}
    first = first_prompts(dataset, options.knockout_n, model)
    top = knockout_exact(model, options.knockout_exact)
    if top is None:
        say(f"  mean-ablating each head and MLP on {first.n} prompts")
    else:
        say(
            f"  mean-ablating on {first.n} prompts: every head estimated to first order, then exactly "
            f"the top {top} by the estimate, the {len(named)} heads the page names and every MLP"
        )
    chosen = ablation.AblationOptions(exact_top=top, exact_heads=named if top is not None else ())
    return {"knockout": ablation.ablate(model, first, chosen)}


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
    if score_module("circuit") is None:
        return _missing("circuit", say)
    from headscope.scores.circuit import edges, faithfulness, graph

    prompts = circuit_prompts(model, options.circuit_n)
    if prompts < 1:
        return {}
    why = graph.refusal(model.arch)
    if why is None and dataset.corrupted is None:
        why = f"task {dataset.task.name} has no corrupted twin, which edge patching needs"
    if why is not None:
        say(f"  not computed: circuit: {why}")
        return {"not_computed": pd.DataFrame([{"analysis": "circuit", "why": why}])}
    first = first_prompts(dataset, prompts, model)
    edge_options = circuit_options(model, options)
    if edge_options.method == "exact":
        say(f"  every edge patched exactly, {first.n} prompts (cheaper than eap-ig and its exact check)")
    else:
        say(f"  eap-ig on every edge, {first.n} prompts; the top {edge_options.exact_top} patched exactly")
    started = time.perf_counter()
    table = edges.edge_scores(model, first, edge_options, progress=False)
    chosen = circuit_edges(table, options.circuit_edges)
    say(f"  the circuit of the top {len(chosen)} edges, and MIB's curve: every other edge patched")
    summary = circuit_summary(model, first, table, chosen)
    curve = faithfulness.ranking_curve(model, first, table)
    say(f"  circuit step: {time.perf_counter() - started:.1f} s")  # the console only: a run's files
    summary = summary.assign(cpr=curve.cpr, cmd=curve.cmd)  # are the same for the same seed
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


def circuit_edges(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """The circuit: the top `count` edges by |exact| among those patched exactly (by |score| where
    none was), so the approximation only proposes the candidates (as `headscope circuit`)."""
    key = table["exact"].abs() if table["exact"].notna().any() else table["score"].abs()
    return table.loc[key.sort_values(ascending=False, na_position="last", kind="stable").index[:count]]


def circuit_summary(
    model: Model, dataset: Dataset, table: pd.DataFrame, chosen: pd.DataFrame
) -> pd.DataFrame:
    """One row: the method and its agreement with exact patching, and the circuit's faithfulness
    F(C) / F(every edge) with F(no edge) (scores.circuit.faithfulness; completeness and minimality
    are `headscope circuit`'s). F(every edge) is the clean metric and F(no edge) the corrupted
    one, which the edge table holds already: one patched run per task, not three."""
    from headscope.scores.circuit import edges, faithfulness

    kept = set(edges.edges_of(chosen, model))
    metric = faithfulness.Evaluator(model, dataset).metric(kept)
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
    """The first `count` prompts of `dataset` with their corrupted twins, tokenised alike."""
    if count >= dataset.n:
        return dataset
    twins = dataset.corrupted.prompts if dataset.corrupted is not None else dataset.prompts
    pairs = [
        PromptPair(clean, twin) for clean, twin in zip(dataset.prompts[:count], twins[:count], strict=True)
    ]
    return dataset_from_pairs(dataset.task, pairs, model.tokens)


def head_ranking(tables: dict[str, pd.DataFrame]) -> tuple[str, list[tuple[int, int, str]]]:
    """Every head, largest first, by the measure that ranks the report's heads, and that measure:
    |direct logit attribution|; where DLA is not computed (Gemma 2/3), the knockout's effect
    |% of clean - 100|; without knockouts, the largest OV score. Each head comes with its value."""
    dla = tables.get("dla", pd.DataFrame())
    knockout = tables.get("knockout", pd.DataFrame())
    ov = tables.get("ov_scores", pd.DataFrame())
    if not dla.empty:
        heads = dla[dla["head"].notna()].assign(size=lambda t: t["dla"].abs())
        return "|DLA|", [(int(r.layer), int(r.head), f"|DLA| {r.size:.2f}") for r in _by(heads, "size")]
    if not knockout.empty:
        heads = knockout[knockout["head"].notna()]
        heads = heads[heads["method"] == heads["method"].iloc[0]]
        heads = heads.assign(size=(heads["pct_of_clean"] - 100.0).abs().fillna(0.0))
        ranked = [
            (int(r.layer), int(r.head), f"knockout {r.pct_of_clean:.0f}% of clean")
            for r in _by(heads, "size")
        ]
        return "knockout effect |% of clean - 100|", ranked
    if not ov.empty:
        heads = ov.groupby(["layer", "head"], as_index=False)["score"].max()
        return "OV score", [
            (int(r.layer), int(r.head), f"OV score {r.score:.2f}") for r in _by(heads, "score")
        ]
    return "", []


def top_heads(tables: dict[str, pd.DataFrame], count: int) -> pd.DataFrame:
    """The `count` heads first by `head_ranking`, with the measure that chose them (`by`)."""
    measure, ranked = head_ranking(tables)
    rows = [{"layer": layer, "head": head, "by": measure} for layer, head, _ in ranked[:count]]
    return pd.DataFrame(rows, columns=["layer", "head", "by"])


Section = tuple[str, str, int, tuple[str, ...]]  # (section, score column, sign, labels that lead)
OV_SECTIONS: tuple[Section, ...] = (
    ("copy", "copy", 1, ("name mover",)),
    ("next", "next", 1, ("successor",)),
    ("negative copy", "copy", -1, ("negative name mover", "copy suppression")),
)
MOVER_LABELS = ("name mover", "negative name mover", "copy suppression", "successor")


def section_heads(tables: dict[str, pd.DataFrame], count: int) -> pd.DataFrame:
    """The heads each section leads with, and why: its labelled heads, then its top scorers.

    Sections: `copy`, `next` and `negative copy` (the per-keyword OV tables: the labels of that
    relation, then the largest scores of that relation and sign), and `scatter` and `viewer`
    (every mover or successor label, then the heads first by `head_ranking`: |DLA| where it exists).
    """
    labels = tables.get("labels", pd.DataFrame(columns=["layer", "head", "label"]))
    ov = tables.get("ov_scores", pd.DataFrame())
    rows = []
    for section, relation, sign, leading in OV_SECTIONS:
        mine = ov[(ov["relation"] == relation) & ov["sign"].isin(_signs(sign))] if not ov.empty else ov
        if not mine.empty:
            ranked = [
                (int(r.layer), int(r.head), f"{section} score {r.score:.2f}") for r in _by(mine, "score")
            ]
            rows += _lead(section, labels, leading, ranked, count)
    _, ranked = head_ranking(tables)
    if ranked:
        rows += _lead("scatter", labels, MOVER_LABELS, ranked, count)
        rows += _lead("viewer", labels, tuple(labels["label"].unique()), ranked, count)
    return pd.DataFrame(rows, columns=["section", "rank", "layer", "head", "why"])


def _signs(sign: int) -> tuple:
    return (sign, "positive" if sign > 0 else "negative")


def _by(table: pd.DataFrame, column: str) -> list:
    order = table.sort_values([column, "layer", "head"], ascending=[False, True, True], kind="stable")
    return list(order.itertuples(index=False))


def _lead(section: str, labels: pd.DataFrame, leading, ranked: list, count: int) -> list[dict]:
    """Labelled heads (in score order), then the best of the rest, `count` in all (all labelled ones)."""
    score_of = {(layer, head): why for layer, head, why in ranked}
    chosen = labels[labels["label"].isin(leading)]
    labelled = {(int(r.layer), int(r.head)): r.label for r in chosen.itertuples(index=False)}
    heads = [(h, f"{labelled[h]}; {score_of.get(h, '')}") for h in score_of if h in labelled]
    heads += [(h, f"top {score_of[h]}") for h in score_of if h not in labelled]
    heads = heads[: max(count, len(labelled))]
    return [
        {"section": section, "rank": rank, "layer": h[0], "head": h[1], "why": why.rstrip("; ")}
        for rank, (h, why) in enumerate(heads)
    ]


def pickable_heads(sections: pd.DataFrame, model: Model, every_head_up_to: int) -> list[tuple[int, int]]:
    """Heads the reader can pick in the page: every head of a small model, else the sections' heads."""
    if model.n_layers * model.n_heads <= every_head_up_to:
        return [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    return sorted({(int(r.layer), int(r.head)) for r in sections.itertuples(index=False)})


def keyword_order(task: Task) -> dict[str, int]:
    """Each member's place in the task's own order (1, 2, ..., 10; January, February, ...)."""
    words = [m for family in task.families for m in family.members]
    words += [w for members in task.categories.values() for w in members]
    return {word: i for i, word in reversed(list(enumerate(words)))}


def _keyword_tables(tables: dict[str, pd.DataFrame], task: Task, picked) -> dict[str, pd.DataFrame]:
    """Per keyword, every picked head: share hit and median target rank per relation and sign;
    the per-instance table is kept for the sections' heads only (it is every instance x head)."""
    per_token = tables.get("ov_per_token")
    if per_token is None or per_token.empty:
        return {}
    shown = {(int(r.layer), int(r.head)) for r in tables["section_heads"].itertuples(index=False)}
    return {
        "ov_keywords": keyword_table(_of_heads(per_token, picked), task),
        "ov_per_token": _of_heads(per_token, sorted(shown)),
    }


def keyword_table(per_token: pd.DataFrame, task: Task) -> pd.DataFrame:
    """[layer, head, relation, sign, keyword] -> order, n, hit share, median rank, top-k of the first."""
    groups = per_token.groupby(["layer", "head", "relation", "sign", "keyword"], sort=False)
    table = groups.agg(
        n=("hit", "size"), hit=("hit", "mean"), median_rank=("rank", "median"), topk=("topk", "first")
    ).reset_index()
    order = keyword_order(task)
    first_seen = {word: i for i, word in reversed(list(enumerate(per_token["keyword"])))}
    table.insert(5, "order", [order.get(w, len(order) + first_seen[w]) for w in table["keyword"]])
    return table.sort_values(["layer", "head", "relation", "sign", "order"], kind="stable").reset_index(
        drop=True
    )


def _of_heads(table: pd.DataFrame, heads: list[tuple[int, int]]) -> pd.DataFrame:
    keep = [
        (int(layer), int(head)) in heads for layer, head in zip(table["layer"], table["head"], strict=True)
    ]
    return table[keep].reset_index(drop=True)


def scatter_roles(task: Task) -> tuple[str, ...]:
    """The roles of the scatter: keyword roles, with grouped roles merged (IOI: IO, S)."""
    grouped = {member: group for group, members in task.role_groups.items() for member in members}
    return tuple(dict.fromkeys(grouped.get(role, role) for role in task.keyword_roles))


def _scatter_tables(model, dataset, cap, heads, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    scatter = score_module("scatter")
    if scatter is None or not heads:
        return _missing("scatter", say) if scatter is None else {}
    say(f"task {dataset.task.name}: attention vs. logit scatter for {len(heads)} heads")
    roles = tuple(r for r in scatter_roles(dataset.task) if _role_present(dataset, r))
    points, stats = [], []
    for layer, head in heads:
        found = scatter.scatter_points(model.weights, dataset, cap, (layer, head), roles)
        points.append(found.assign(layer=layer, head=head))
        stats.append(
            scatter.scatter_stats(found, n_boot=options.n_boot, seed=options.seed).assign(
                layer=layer, head=head
            )
        )
    return {
        "scatter_points": pd.concat(points, ignore_index=True),
        "scatter_stats": pd.concat(stats, ignore_index=True),
    }


def attention_roles(task: Task) -> tuple[str, ...]:
    """Key roles of the end -> role heatmaps: the answer role and the contrast role's group."""
    grouped = {member: group for group, members in task.role_groups.items() for member in members}
    roles = (task.answer_role, grouped.get(task.contrast_role, task.contrast_role))
    return tuple(dict.fromkeys(role for role in roles if role is not None))


def _role_present(dataset: Dataset, role: str) -> bool:
    return any(
        bool(dataset.roles[name].present.any()) for name in dataset.role_names(role) if name in dataset.roles
    )


def example_patterns(model: Model, dataset: Dataset, heads, count: int) -> dict[str, pd.DataFrame]:
    """Whole attention patterns of `heads` on the first `count` prompts, their tokens and texts.

    `patterns` has one row per prompt, head and destination position; `attention` holds the
    weights on sources 0..dest, space-separated with 4 decimals (a compact lower triangle).
    """
    if not heads or count < 1:
        return {}
    examples = first_prompts(dataset, count, model)
    full = capture(model, examples, Needs(pattern_full=True, logits_end=False)).pattern_full
    texts = [
        {"prompt": i, "text": p.text, "answer": p.answer, "contrast": p.contrast}
        for i, p in enumerate(examples.prompts)
    ]
    token_rows, pattern_rows = [], []
    for i in range(examples.n):
        length = int(examples.lengths[i])
        ids = examples.tokens[i, :length].tolist()
        token_rows += [
            {"prompt": i, "position": p, "token_id": t, "token": model.tokens.decode(t)}
            for p, t in enumerate(ids)
        ]
        for layer, head in heads:
            grid = full[i, layer, head, :length, :length].tolist()  # [dest, src]
            pattern_rows += [
                {
                    "prompt": i,
                    "layer": layer,
                    "head": head,
                    "dest": d,
                    "attention": _weights(grid[d][: d + 1]),
                }
                for d in range(length)
            ]
    tables = {"tokens": token_rows, "patterns": pattern_rows, "prompts": texts}
    return {name: pd.DataFrame(rows) for name, rows in tables.items()}


def _weights(values: list[float]) -> str:
    return " ".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in values)


def head_card(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per task and head: copy, next and negative copy score, DLA and knockout (% of clean)."""
    parts = []
    ov = tables.get("ov_scores", pd.DataFrame())
    if not ov.empty:
        names = [
            f"negative_{r}" if s in (-1, "negative") else str(r)
            for r, s in zip(ov["relation"], ov["sign"], strict=True)
        ]
        wide = ov.assign(name=names).pivot_table(
            index=["task", "layer", "head"], columns="name", values="score"
        )
        parts.append(wide[[c for c in ("copy", "next", "negative_copy") if c in wide.columns]])
    for name, column, new in (("dla", "dla", "dla"), ("knockout", "pct_of_clean", "knockout_pct")):
        table = tables.get(name, pd.DataFrame())
        if not table.empty:
            heads = table[table["head"].notna()].astype({"layer": int, "head": int})
            if "method" in heads.columns:  # one knockout method per report; the first if ever more
                heads = heads[heads["method"] == heads["method"].iloc[0]]
            kept = [column, "exact"] if name == "knockout" and "exact" in heads.columns else [column]
            renamed = {column: new, "exact": "knockout_exact"}
            parts.append(heads.set_index(["task", "layer", "head"])[kept].rename(columns=renamed))
    if not parts:
        return pd.DataFrame(columns=["task", "layer", "head"])
    return pd.concat(parts, axis=1).reset_index()


def compare_tasks(tables: dict[str, pd.DataFrame], tasks: tuple[str, ...]) -> pd.DataFrame:
    """Per head: in which tasks it matters (a top head by |DLA| or labelled), and whether in all."""
    top = tables.get("top_heads", pd.DataFrame(columns=["task", "layer", "head"]))
    labels = tables.get("labels", pd.DataFrame(columns=["task", "layer", "head"]))
    pairs = pd.concat([top[["task", "layer", "head"]], labels[["task", "layer", "head"]]]).drop_duplicates()
    rows = []
    for (layer, head), group in pairs.groupby(["layer", "head"], sort=True):
        found = [t for t in tasks if t in set(group["task"])]
        scope = "every task" if len(found) == len(tasks) else "some tasks"
        rows.append(
            {
                "layer": int(layer),
                "head": int(head),
                "tasks": ",".join(found),
                "n_tasks": len(found),
                "scope": scope,
            }
        )
    table = pd.DataFrame(rows, columns=["layer", "head", "tasks", "n_tasks", "scope"])
    return table.sort_values(
        ["n_tasks", "layer", "head"], ascending=[False, True, True], kind="stable"
    ).reset_index(drop=True)
