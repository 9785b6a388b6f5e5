"""What the report computes on each task: one capture, every score, as tables for a Run.

A score module that has not landed in this install (the knockout module, say) is skipped
with a note on the console; every table that is computed is a real result.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Literal

import pandas as pd

from headscope.capture import Capture, Needs, capture
from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.run import Run, plain_record
from headscope.scores.labels import LabelThresholds, label_heads
from headscope.tasks.dataset import Dataset, build_dataset, dataset_from_pairs
from headscope.tasks.prompt import PromptPair
from headscope.tasks.task import Task

Say = Callable[[str], None]
Embedding = Literal["context", "token", "block0"]


@dataclass(frozen=True)
class ReportOptions:
    """Everything that decides the numbers of a report; saved in results.json."""

    tasks: tuple[str, ...]
    n: int = 200
    seed: int = 0
    k: int = 5
    embedding: Embedding = "context"
    top_heads: int = 4
    example_prompts: int = 2
    n_boot: int = 1000
    knockout_n: int = 32  # knockouts run on the first prompts only (0: none): one pass per component
    thresholds: LabelThresholds = field(default_factory=LabelThresholds)

    def as_dict(self) -> dict:
        return {**asdict(self), "tasks": list(self.tasks)}


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
    names = [task.name for task in tasks]  # a TOML file's task has its own name
    record = options.as_dict() | {"tasks": names, "task_sources": list(options.tasks)}
    provenance = plain_record({"options": record, "model": model.identity.as_dict()})
    return Run(tables=tables, seed=options.seed, **provenance)


def _task_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["task", *[c for c in table.columns if c != "task"]]]


def analyse_task(model: Model, task: Task, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    dataset = build_dataset(task, model.tokens, options.n, options.seed)
    say(f"task {task.name}: one forward pass over {dataset.n} prompts")
    cap = capture(model, dataset, needs_for(task))  # batched: memory bounded whatever --n
    tables: dict[str, pd.DataFrame] = {"tasks": task_info(task), "evaluation": _evaluation(dataset, cap)}
    for step in (_ov_tables, _attention_tables, _dla_table, _knockout_table):
        say(f"task {task.name}: {step.__name__.strip('_').replace('_', ' ')}")
        tables |= step(model, dataset, cap, options, say)
    tables["labels"] = label_heads(
        tables.get("ov_scores", pd.DataFrame()),
        tables.get("role_attention", pd.DataFrame()),
        tables.get("detectors", pd.DataFrame()),
        task.answer_role,
        options.thresholds,
    )
    top = top_heads(tables, options.top_heads)
    tables["top_heads"] = pd.DataFrame(top, columns=["layer", "head"])
    if "ov_per_token" in tables:  # every instance x every head is too big to keep: the top heads'
        tables["ov_per_token"] = _of_heads(tables["ov_per_token"], top)
    tables |= _scatter_tables(model, dataset, cap, top, options, say)
    tables |= example_patterns(model, dataset, top, options.example_prompts)
    return tables


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
    attribution = score_module("attribution")
    if attribution is None:
        return _missing("attribution", say)
    return {"dla": attribution.direct_logit_attribution(model.weights, dataset, cap)}


def _knockout_table(model, dataset, cap, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    ablation = score_module("ablation")
    if ablation is None:
        return _missing("ablation", say)
    if options.knockout_n < 1:
        return {}
    first = first_prompts(dataset, options.knockout_n, model)
    say(f"  mean-ablating each head and MLP on {first.n} prompts")
    return {"knockout": ablation.ablate(model, first, ablation.AblationOptions())}


def first_prompts(dataset: Dataset, count: int, model: Model) -> Dataset:
    """The first `count` prompts of `dataset` with their corrupted twins, tokenised alike."""
    if count >= dataset.n:
        return dataset
    twins = dataset.corrupted.prompts if dataset.corrupted is not None else dataset.prompts
    pairs = [
        PromptPair(clean, twin) for clean, twin in zip(dataset.prompts[:count], twins[:count], strict=True)
    ]
    return dataset_from_pairs(dataset.task, pairs, model.tokens)


def top_heads(tables: dict[str, pd.DataFrame], count: int) -> list[tuple[int, int]]:
    """The heads with the largest |direct logit attribution| (else the largest OV score)."""
    dla = tables.get("dla", pd.DataFrame())
    if not dla.empty:
        heads = dla[dla["head"].notna()].assign(size=lambda t: t["dla"].abs())
    elif not tables.get("ov_scores", pd.DataFrame()).empty:
        heads = tables["ov_scores"].groupby(["layer", "head"], as_index=False)["score"].max()
        heads = heads.rename(columns={"score": "size"})
    else:
        return []
    heads = heads.sort_values(["size", "layer", "head"], ascending=[False, True, True], kind="stable")
    return [
        (int(layer), int(head))
        for layer, head in heads[["layer", "head"]].head(count).itertuples(index=False)
    ]


def _of_heads(table: pd.DataFrame, heads: list[tuple[int, int]]) -> pd.DataFrame:
    keep = [
        (int(layer), int(head)) in heads for layer, head in zip(table["layer"], table["head"], strict=True)
    ]
    return table[keep].reset_index(drop=True)


def scatter_roles(task: Task) -> tuple[str, ...]:
    """The roles of the scatter: keyword roles, with grouped roles merged (IOI: IO, S)."""
    grouped = {member: group for group, members in task.role_groups.items() for member in members}
    return tuple(dict.fromkeys(grouped.get(role, role) for role in task.keyword_roles))


def _scatter_tables(model, dataset, cap, top, options: ReportOptions, say: Say) -> dict[str, pd.DataFrame]:
    scatter = score_module("scatter")
    if scatter is None or not top:
        return _missing("scatter", say) if scatter is None else {}
    say(f"task {dataset.task.name}: attention vs. logit scatter for {len(top)} heads")
    roles = tuple(r for r in scatter_roles(dataset.task) if _role_present(dataset, r))
    points, stats = [], []
    for layer, head in top:
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


def example_patterns(model: Model, dataset: Dataset, top, count: int) -> dict[str, pd.DataFrame]:
    """Whole attention patterns of the top heads on the first `count` prompts, and their tokens."""
    if not top or count < 1:
        return {}
    examples = first_prompts(dataset, count, model)
    prompts = examples.prompts
    full = capture(model, examples, Needs(pattern_full=True, logits_end=False)).pattern_full
    token_rows, pattern_rows = [], []
    texts = [
        {"prompt": i, "text": p.text, "answer": p.answer, "contrast": p.contrast}
        for i, p in enumerate(prompts)
    ]
    for i in range(examples.n):
        length = int(examples.lengths[i])
        ids = examples.tokens[i, :length].tolist()
        token_rows += [
            {"prompt": i, "position": p, "token_id": t, "token": model.tokens.decode(t)}
            for p, t in enumerate(ids)
        ]
        for layer, head in top:
            grid = full[i, layer, head, :length, :length]  # [dest, src]
            pattern_rows += [
                {
                    "prompt": i,
                    "layer": layer,
                    "head": head,
                    "dest": d,
                    "src": s,
                    "attention": float(grid[d, s]),
                }
                for d in range(length)
                for s in range(d + 1)
            ]
    tables = {"tokens": token_rows, "patterns": pattern_rows, "prompts": texts}
    return {name: pd.DataFrame(rows) for name, rows in tables.items()}


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
