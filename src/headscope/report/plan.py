"""The report as one explicit plan: `plan_report` decides, `run_plan` executes.

`plan_report(model, tasks, options)` chooses the tasks (the inclusion rule, `task_choice`), builds
each task's dataset once, fits the sample sizes to a time budget when one is given, and lists
every phase with its sample size and predicted cost (`cost`). `run_plan(plan)` runs it: the one OV
pass over the vocabulary for every task and the atlas (each share handed to the step that reads
it), then each task's analyses on its dataset (`compute.analyse_task`), the tables across tasks,
the atlas, and, with `out`, the page. `build_run` is the two in one, without a budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from headscope.analyses.atlas import atlas_tables
from headscope.analyses.fdr import run_fdr
from headscope.analyses.ov import task_options
from headscope.errors import HeadscopeError
from headscope.models.loading import Model, as_model
from headscope.models.product_rates import product_rate
from headscope.report import budget as _budget
from headscope.report.budget import DEFAULT_BUDGET
from headscope.report.compute import ReportOptions, Say, analyse_task
from headscope.report.phases import Phase, peak_bytes, phases_of, wall_seconds
from headscope.report.selection import compare_tasks, head_card
from headscope.report.task_choice import RULE, default_tasks
from headscope.report.workers import forked_map, in_order, task_workers
from headscope.run import Run, plain_record
from headscope.scores import atlas, ov
from headscope.scores.ov_shared import shared_ranks
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import get_task
from headscope.tasks.task import Task

OnPhase = Callable[[Phase], None]
UNMEASURED_RATE = 1e11  # FLOP/s: prices a plan that no budget reads (build_run), without measuring


@dataclass(frozen=True)
class ReportPlan:
    """What a report will compute: the tasks and their datasets, the options (sample sizes as
    chosen), and every phase with its predicted cost at the measured product `rate` (FLOP/s)."""

    model: Model
    datasets: tuple[Dataset, ...]  # one per task, in order, at the chosen number of prompts
    options: ReportOptions
    phases: tuple[Phase, ...]
    rate: float
    workers: int = 1  # processes the tasks are shared out to (`workers.task_workers`)

    @property
    def seconds(self) -> float:
        """The predicted wall time of the whole run (`phases.wall_seconds`)."""
        return wall_seconds(self.phases, self.workers)

    @property
    def peak(self) -> float:
        """The predicted peak resident bytes of the whole run (`phases.peak_bytes`)."""
        return peak_bytes(self.phases, self.workers)

    def table(self) -> pd.DataFrame:
        """One row per phase: phase, task, units, unit, GFLOP, predicted seconds, predicted peak GB
        (the model and the phase)."""
        return pd.DataFrame([phase.row() for phase in self.phases])


def plan_report(
    model: Model,
    tasks: Sequence[Task | str] | None = None,
    options: ReportOptions | None = None,
    budget: float | None = None,
    say: Say = print,
    rate: float | None = None,
    workers: int | None = None,
) -> ReportPlan:
    """The plan of a report on `tasks` (None: the built-in tasks the model does, by the inclusion
    rule); `budget`: seconds the sample sizes are fitted to (None: the counts of `options`);
    `rate` (FLOP/s) and `workers` (processes for the tasks): measured here where not given."""
    options = options or ReportOptions(tasks=())
    chosen, options = _tasks(model, tasks, options, say)
    if len({task.name for task in chosen}) < len(chosen):
        raise HeadscopeError("two of the report's tasks share a name; give each task once")
    full = tuple(build_dataset(task, model.tokens, options.n, options.seed) for task in chosen)
    rate = rate or product_rate()
    workers = workers or task_workers(model.device, len(full))
    if budget is not None:
        options = _budget.fit(model, full, options, budget, rate, workers)
    datasets = tuple(data.subset(options.n) for data in full)
    return ReportPlan(model, datasets, options, phases_of(model, datasets, options, rate), rate, workers)


def _tasks(
    model: Model, tasks: Sequence[Task | str] | None, options: ReportOptions, say: Say
) -> tuple[list[Task], ReportOptions]:
    """The tasks as given (names read as `get_task` does), or the default ones with the rule."""
    if tasks is None and not options.tasks:
        kept, left_out = default_tasks(model, options.seed, say)
        names = tuple(task.name for task in kept)
        return kept, replace(options, tasks=names, left_out=left_out, task_rule=RULE)
    given = list(tasks) if tasks is not None else list(options.tasks)
    chosen = [get_task(task) if isinstance(task, str) else task for task in given]
    sources = tuple(task if isinstance(task, str) else task.name for task in given)
    return chosen, replace(options, tasks=sources)


def run_plan(
    plan: ReportPlan,
    say: Say = print,
    out: Path | None = None,
    pngs: bool = False,
    on_phase: OnPhase | None = None,
) -> Run:
    """Every table of the plan's report (and with `out`, its page and files written there)."""
    done = on_phase or (lambda phase: None)
    model, options = plan.model, plan.options
    task_passes, atlas_pass = ov_pass(model, plan.datasets, options, say)
    done(_phase(plan, "OV pass"))
    per_task: dict[str, list[pd.DataFrame]] = {}
    for dataset, found in zip(plan.datasets, _analysed(plan, task_passes, say, done), strict=True):
        for table_name, table in found.items():
            per_task.setdefault(table_name, []).append(table.assign(task=dataset.task.name))
    run = _run(model, plan, per_task, _atlas(model, options, atlas_pass, say))
    done(_phase(plan, "atlas"))
    if out is not None:
        from headscope.report.html import write_report

        write_report(run, out, say, pngs=pngs)
        done(_phase(plan, "page"))
    return run


def _analysed(plan: ReportPlan, passes: dict[str, ov.OVPass], say: Say, done: OnPhase) -> list[dict]:
    """Each task's tables (`compute.analyse_task`), in the plan's order; side by side in forked
    processes where the model runs on one thread and cores are idle (`workers`). In one process
    each line is said as it comes; side by side a task's lines are said, and its phases marked
    done, once it and every task before it are done."""
    model, options = plan.model, plan.options

    def job(dataset: Dataset) -> tuple[list[str], dict[str, pd.DataFrame]]:
        lines: list[str] = []
        tell = lines.append if plan.workers > 1 else say
        tell(f"task {dataset.task.name}: {dataset.n} prompts")
        return lines, analyse_task(model, dataset, options, tell, passes.get(dataset.task.name))

    def finished(index: int, result: tuple[list[str], dict]) -> None:
        for line in result[0]:
            say(line)
        for phase in plan.phases:
            if phase.task == plan.datasets[index].task.name:
                done(phase)

    costs = [sum(p.seconds for p in plan.phases if p.task == d.task.name) for d in plan.datasets]
    return [found for _, found in forked_map(job, plan.datasets, costs, plan.workers, in_order(finished))]


def _phase(plan: ReportPlan, name: str) -> Phase:
    return next((p for p in plan.phases if p.name == name and not p.task), Phase(name, "", 0, "", 0.0, 0.0))


def _run(model: Model, plan: ReportPlan, per_task: dict, atlas_found: dict[str, pd.DataFrame]) -> Run:
    names = [dataset.task.name for dataset in plan.datasets]  # a TOML file's task has its own name
    tables = {name: _task_first(pd.concat(parts, ignore_index=True)) for name, parts in per_task.items()}
    tables = run_fdr(tables | atlas_found)  # the atlas: weights only, once for the model, not per task;
    tables["comparison"] = compare_tasks(tables, tuple(names))  # the false discovery rate over every
    tables["head_card"] = head_card(tables)  # test of the run, before the labels are read
    record = plan.options.as_dict() | {"tasks": names, "task_sources": list(plan.options.tasks)}
    computed_in = {"dtype": str(model.dtype).removeprefix("torch."), "device": model.device.type}
    provenance = plain_record({"options": record, "model": model.identity.as_dict() | computed_in})
    return Run(tables=tables, seed=plan.options.seed, **provenance)


def _task_first(table: pd.DataFrame) -> pd.DataFrame:
    return table[["task", *[c for c in table.columns if c != "task"]]]


def ov_pass(
    model: Model, datasets: Sequence[Dataset], options: ReportOptions, say: Say
) -> tuple[dict[str, ov.OVPass], atlas.AtlasPass | None]:
    """Every task's OV inputs and the atlas's, and their ranks from one pass over the vocabulary
    where their settings agree (a task whose inputs cannot be built is left to its own step,
    which says why; the atlas likewise). A task's rows outside its detail sample (the first
    `ov_detail_n` prompts) and the atlas's are capped at k (the kernel's exact early exit)."""
    sets: dict[str, tuple] = {}
    for dataset in datasets:
        chosen = task_options(dataset.task, options.k, options.embedding)
        try:
            inputs = ov.ov_inputs(model, dataset, chosen)
        except (HeadscopeError, ValueError):
            continue
        exact = ov.detail_rows(dataset, inputs.embeddings, options.ov_detail_n)
        sets[dataset.task.name] = (inputs, *ov.kernel_call(model, inputs, chosen, exact))
    try:
        found = atlas.atlas_inputs(model, None, atlas.AtlasOptions(k=options.k))
        sets[""] = (found, *atlas.kernel_call(model, found, atlas.AtlasOptions(k=options.k)))
    except HeadscopeError:
        pass
    return _shared(model, sets, say)


def _shared(model: Model, sets: dict[str, tuple], say: Say):
    """One pass for the score sets whose settings match the first's; the others get none (their
    steps compute their own)."""
    if not sets:
        return {}, None
    settings = next(iter(sets.values()))[2]
    kept = {name: found for name, found in sets.items() if found[2] == settings}
    rows = sum(found[1].x.shape[0] for found in kept.values())
    capped = sum(int(found[1].capped_rows().sum()) for found in kept.values())
    say(
        f"OV kernel: one pass over the vocabulary for {len(kept)} score sets ({rows} rows, "
        f"{capped} of them capped at k)"
    )
    ranks = shared_ranks(model.weights, [found[1] for found in kept.values()], settings)
    passes = {name: (found[0], r) for (name, found), r in zip(kept.items(), ranks, strict=True)}
    atlas_found = passes.pop("", None)
    tasks = {name: ov.OVPass(*found) for name, found in passes.items()}
    return tasks, atlas.AtlasPass(*atlas_found) if atlas_found else None


def _atlas(model: Model, options: ReportOptions, computed, say: Say) -> dict[str, pd.DataFrame]:
    """The atlas of every head on the whole library, both signs; none, with a note, when the
    tokenizer spells too little of the library."""
    say(f"head atlas: {model.n_layers * model.n_heads} heads x the relation library, weights only")
    try:
        return atlas_tables(model, None, atlas.AtlasOptions(k=options.k), computed)
    except HeadscopeError as error:
        say(f"head atlas left out: {error}")
        return {}


def build_run(model: Model, tasks: Sequence[Task], options: ReportOptions, say: Say = print) -> Run:
    """Every table of the report for `model` on `tasks` (named in `options.tasks`), at the counts
    of `options` (no budget): `run_plan(plan_report(...))`. With no budget the predicted costs
    decide nothing, so no product rate is measured (`UNMEASURED_RATE` prices the phases)."""
    plan = plan_report(model, list(tasks), options, say=say, rate=UNMEASURED_RATE)
    return run_plan(replace(plan, options=replace(plan.options, tasks=options.tasks)), say)


def report(
    model,
    tasks: Sequence[str | Task] | None = None,
    out: str | Path | None = None,
    budget: float | None = DEFAULT_BUDGET,
    n: int = 200,
    seed: int = 0,
    plan_only: bool = False,
    quiet: bool = False,
):
    """Every analysis of the report on `tasks`, planned to fit `budget` seconds, as a `Run`
    (`hs.report`: the report package called).

    Args:
        model: from `hs.load_model` (or a bridge / Hugging Face model in memory).
        tasks: task names, `Task`s or TOML paths; None: the built-in tasks the model does better
            than chance (the inclusion rule, which the run records).
        out: a folder for the page (`index.html`), `results.json` and the CSVs; None: none written.
        budget: seconds the plan fits its sample sizes to (what it cannot afford is left out with a
            `not_computed` row); None: every sample size as given (`--exhaustive`).
        n, seed: prompts per task and the generator's seed.
        plan_only: return the plan (`ReportPlan`: `.table()`, `.seconds`) without running it.
        quiet: no progress lines.

    Returns:
        The `Run` (its tables by name: `run.table("ov_scores")`; its summary shows in a notebook), or
        with `plan_only` the `ReportPlan`.

    Example:
        >>> run = hs.report(model, ["ioi", "induction"], out="report", budget=120)
        >>> run.table("labels")
    """
    say = (lambda message: None) if quiet else print
    options = ReportOptions(tasks=(), n=n, seed=seed)
    chosen = None if tasks is None else list(tasks)
    found = plan_report(as_model(model), chosen, options, budget, say)
    if plan_only:
        return found
    return run_plan(found, say, out=Path(out) if out is not None else None)
