"""A time budget turned into sample sizes, before anything runs (statistics: time -> sizes once).

`fit` tries the report's sample sizes from the largest (the options as given) down a fixed
ladder and keeps the first whose predicted time fits the budget: fewer knockout prompts, fewer
heads knocked out exactly (the others screened to first order), fewer circuit prompts, fewer
prompts per task, then the labelled heads' QK attribution left out, the circuit, the knockouts,
then a smaller OV detail sample and none (the per-token and category tables left out: on a large
vocabulary the rows read whole are most of the OV pass, `cost.ov_flops`).
What the budget leaves out is recorded (`ReportOptions.budget_notes`) and shown as a
`not_computed` row, never silently. The OV pass reads its ranks and top-k tokens on a detail
sample of `OV_DETAIL_PROMPTS` prompts (the scores on every prompt, exact). The sizes are a
function of the budget, the shapes and the product rate measured at the start, and are recorded in
the run, so `--from`, merging and sweeps need no rerun.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from headscope.models.loading import Model
from headscope.report.compute import ReportOptions, circuit_prompts, knockout_exact, qk_prompts
from headscope.report.phases import phases_of, wall_seconds
from headscope.tasks.dataset import Dataset

DEFAULT_BUDGET = 300.0  # seconds: a few minutes on a laptop for a 100M-300M model
KNOCKOUT_LADDER = (32, 24, 16)  # prompts: 16 keeps a t interval over prompts meaningful
EXACT_LADDER = (4,)  # heads knocked out exactly besides the named ones, the others screened
CIRCUIT_LADDER = (32, 16, 8, 4)
PROMPT_LADDER = (200, 100)  # at 50 a label near its threshold flipped on the organism (test_calibration)
# Prompts whose OV rows a budgeted report reads whole (ranks and top-k tokens: the per-token,
# per-keyword and category tables), the other rows capped at k; the scores read every prompt. 32:
# the knockouts' first prompts, a sample of every keyword for the examples, and 100+ instances per
# relation for a category share; on the 270M shape (vocabulary 262k) the OV pass then reads about
# a third of its task rows whole at 100 prompts (benchmarks/results/ov_exit.md).
OV_DETAIL_PROMPTS = 32
OV_DETAIL_LADDER = (8, 0)  # 0: every row capped at k, the per-token and category tables left out


def fit(
    model: Model,
    datasets: Sequence[Dataset],
    options: ReportOptions,
    budget: float,
    rate: float,
    workers: int = 1,
) -> ReportOptions:
    """The largest sample sizes on the ladder whose predicted wall time (tasks shared out to
    `workers` processes) is within `budget` seconds (the smallest, with a note, when none is).
    The OV detail sample is `OV_DETAIL_PROMPTS` unless the options name one."""
    if options.ov_detail_n is None:
        options = replace(options, ov_detail_n=OV_DETAIL_PROMPTS)
    chosen = options = replace(options, budget=float(budget))  # priced as run: knockouts in looks
    for chosen in _ladder(model, options):
        sized = [data.subset(chosen.n) for data in datasets]
        if wall_seconds(phases_of(model, sized, chosen, rate), workers) <= budget:
            break
    return replace(chosen, budget=float(budget), budget_notes=_notes(options, chosen, budget))


def _ladder(model: Model, options: ReportOptions) -> Iterator[ReportOptions]:
    """The options as given, then each step that asks for less (a size already below a step's is
    kept, so an automatic size is replaced only by a smaller one)."""
    yield options
    steps = [("knockout_n", k) for k in KNOCKOUT_LADDER] + [("knockout_exact", e) for e in EXACT_LADDER]
    steps += [("circuit_n", c) for c in CIRCUIT_LADDER]
    steps += [("n", n) for n in PROMPT_LADDER] + [("qk_n", 0), ("circuit_n", 0), ("knockout_n", 0)]
    steps += [("ov_detail_n", d) for d in OV_DETAIL_LADDER]
    for name, size in steps:
        if size < _now(model, options, name):
            options = replace(options, **{name: size})
            yield options


def _now(model: Model, options: ReportOptions, name: str) -> int:
    """The size `name` has under `options` (automatic sizes resolved as the report resolves them)."""
    if name == "circuit_n":
        return circuit_prompts(model, options.circuit_n)
    if name == "qk_n":
        return qk_prompts(options)
    if name == "knockout_exact":  # a model knocked out whole (at most 48 heads) is cheap: never screened
        top = knockout_exact(model, options.knockout_exact)
        return 0 if top is None else top
    return getattr(options, name)


def _notes(asked: ReportOptions, chosen: ReportOptions, budget: float) -> tuple[tuple[str, str], ...]:
    why = f"left out to fit the budget of {budget:g} s (--budget SECONDS to raise it, --exhaustive for all)"
    notes = []
    if qk_prompts(chosen) == 0 and qk_prompts(asked) != 0:
        notes.append(("QK attribution", why))
    if chosen.circuit_n == 0 and asked.circuit_n != 0:
        notes.append(("circuit", why))
    if chosen.knockout_n == 0 and asked.knockout_n != 0:
        notes.append(("knockouts", why))
    if chosen.ov_detail_n == 0 and asked.ov_detail_n != 0:
        notes.append(("OV detail (per-token ranks, top-k tokens, categories)", why))
    return tuple(notes)
