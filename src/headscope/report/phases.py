"""The phases of a report with their sample sizes and predicted cost (`cost` for the arithmetic).

Model-wide: the OV pass (every task's keyword rows and the atlas's, one pass over the
vocabulary), the atlas's tables, the page. Per task: the capture (one forward pass), the OV
tables, DLA, knockouts, the circuit, the cast, the labelled heads' QK attribution, the scatter.
Each phase names its units (prompts, rows, components, heads) and how many; its seconds are
FLOPs / (rate x efficiency) plus its calls' fixed time; its peak memory is the loaded model's
(`models.memory.resident_bytes`) plus what the phase holds (`cost`'s memory section).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from math import ceil

import torch

from headscope.analyses.qk import may_have_keys
from headscope.models.loading import Model
from headscope.models.memory import resident_bytes
from headscope.report import cost
from headscope.report.compute import (
    ReportOptions,
    circuit_options,
    circuit_prompts,
    knockout_exact,
    knockout_looks,
    needs_for,
    qk_prompts,
)
from headscope.report.workers import PARALLEL_EFFICIENCY, shares
from headscope.scores.qk_attribution import upstream
from headscope.tasks.dataset import Dataset

ATLAS_ROWS = 470  # the library's source tokens, about (the plan counts no spelling)
SECTIONS = 3  # sections whose leading heads a larger model's scatter draws, about
CAST_MOVERS = 2  # labelled movers a task's cast reads, about (the plan runs before any label)


@dataclass(frozen=True)
class Phase:
    """One phase of a report: on which task ("" for the model), its sample and predicted cost."""

    name: str
    task: str
    units: int
    unit: str
    flops: float
    seconds: float
    memory: float = 0.0  # bytes the phase holds above the loaded model
    resident: float = 0.0  # bytes of the loaded model (models.memory.resident_bytes)

    @property
    def peak(self) -> float:
        """The predicted peak resident bytes of the process during this phase."""
        return self.resident + self.memory

    def row(self) -> dict:
        return {
            "phase": self.name,
            "task": self.task or "(model)",
            "units": self.units,
            "unit": self.unit,
            "gflop": round(self.flops / 1e9, 1),
            "seconds": round(self.seconds, 1),
            "peak_gb": round(self.peak / 1e9, 2),
        }


def phases_of(
    model: Model, datasets: Sequence[Dataset], options: ReportOptions, rate: float
) -> tuple[Phase, ...]:
    """Every phase of a report on `datasets` (at their sizes) with these options."""
    shape = cost.Shape.of(model)
    rows = sum(_rows(data, options) for data in datasets) + ATLAS_ROWS
    capped = rows - sum(_detail_rows(data, options) for data in datasets)  # the atlas's: all capped
    flops = cost.ov_flops(shape, rows, capped)
    found = [_phase("OV pass", "", rows, "rows", flops, rate, len(datasets) + 1)]
    for data in datasets:
        found += task_phases(model, shape, data, options, rate)
    found.append(_phase("atlas", "", ATLAS_ROWS, "rows", 0.0, rate, 1))
    found.append(_phase("page", "", len(datasets), "tasks", 0.0, rate, 1))
    return with_memory(model, shape, found, datasets, options)


def with_memory(
    model: Model, shape: cost.Shape, phases: Sequence[Phase], datasets: Sequence[Dataset], options
) -> tuple[Phase, ...]:
    """The phases with the model's resident bytes and what each holds above it (`cost`)."""
    resident = resident_bytes(model)
    by_task = {data.task.name: data for data in datasets}
    threads = torch.get_num_threads()

    def held(phase: Phase) -> float:
        if phase.task:
            return _task_memory(shape, by_task[phase.task], options, phase)
        return _model_memory(shape, phase, threads, options.k)

    return tuple(replace(phase, memory=held(phase), resident=resident) for phase in phases)


def _model_memory(shape: cost.Shape, phase: Phase, threads: int, k: int) -> float:
    """The OV pass's blocks and outputs, the atlas's per-source rows, the page's figures."""
    if phase.name == "OV pass":
        return cost.MEMORY_FACTOR["OV pass"] * cost.ov_memory(shape, phase.units, threads, k)
    if phase.name == "atlas":
        return cost.ATLAS_ROW_BYTES * shape.n_layers * shape.n_heads * phase.units * 2  # head, row, sign
    return cost.PAGE_BYTES * phase.units if phase.name == "page" else 0.0


def _task_memory(shape: cost.Shape, data: Dataset, options: ReportOptions, phase: Phase) -> float:
    """What the capture keeps, and from the capture on, each phase's own batch (`cost`)."""
    length = float(data.lengths.max())
    kept = cost.kept_bytes(shape, data.n, length, needs_for(data.task).pattern_full)
    knocked = min(options.knockout_n, data.n)
    own = {
        "capture": cost.forward_memory(shape, data.n, length, cost.CAPTURE_BATCH, gradients=False),
        "knockouts": cost.forward_memory(shape, knocked, length, cost.KNOCKOUT_BATCH, gradients=True),
        "circuit": cost.circuit_memory(shape, phase.units, length),
        "cast": cost.forward_memory(shape, knocked, length, cost.KNOCKOUT_BATCH, gradients=False),
        "QK": cost.forward_memory(shape, min(qk_prompts(options), data.n), length, cost.GRADIENT_BATCH, True),
    }
    return kept + cost.TASK_BYTES + cost.MEMORY_FACTOR.get(phase.name, 0.0) * own.get(phase.name, 0.0)


def task_phases(
    model: Model, shape: cost.Shape, data: Dataset, options: ReportOptions, rate: float
) -> list[Phase]:
    """The phases of one task: capture, OV tables, DLA, knockouts, circuit, cast, QK, scatter."""
    name, length = data.task.name, float(data.lengths.float().mean())
    batches = ceil(data.n / cost.BATCH)
    one = cost.forward_flops(shape, 1, length)  # one prompt's forward pass
    found = [
        _phase("capture", name, data.n, "prompts", data.n * one, rate, batches),
        _phase("OV tables", name, _rows(data, options), "rows", 0.0, rate, model.n_layers * model.n_heads),
        _phase("DLA", name, data.n, "prompts", 0.0, rate, 1),
    ]
    found += _knockouts(model, name, min(options.knockout_n, data.n), one, options, rate)
    found += _circuit(model, name, data, one, options, rate)
    found += _cast(model, name, data, one, options, rate)
    found += _qk(model, shape, data, options, rate)
    scattered = _scattered(model, options)
    found.append(_phase("scatter", name, scattered, "heads", 0.0, rate, scattered))
    return found


def _knockouts(model: Model, name: str, prompts: int, one: float, options, rate: float) -> list[Phase]:
    """Each component knocked out exactly (a pass from its layer on: half the model, about), and
    on a large model every head screened first (a forward and backward pass). A budgeted report's
    knockouts run in looks (`compute.knockout_looks`) and may stop before the cap: priced at the
    cap (an upper bound), each look's prompts in batches of their own, in units "prompts, up to"."""
    if prompts < 1:
        return []
    heads, mlps = model.n_layers * model.n_heads, model.n_layers
    top = knockout_exact(model, options.knockout_exact)
    exact = heads + mlps if top is None else top + options.top_heads + mlps
    passes = 0.6 * exact + 2 + (0 if top is None else 3)  # + the clean and mean passes (+ the screen)
    looks = knockout_looks(options, prompts)
    if looks is None:
        calls = exact * ceil(prompts / cost.BATCH)
        return [_phase("knockouts", name, exact, "components", passes * prompts * one, rate, calls)]
    added = [stop - start for start, stop in zip((0, *looks.sizes), looks.sizes, strict=False)]
    calls = exact * sum(ceil(size / cost.BATCH) for size in added)
    return [_phase("knockouts", name, prompts, "prompts, up to", passes * prompts * one, rate, calls)]


def _circuit(model: Model, name: str, data: Dataset, one: float, options, rate: float) -> list[Phase]:
    prompts = min(circuit_prompts(model, options.circuit_n), data.n)
    if prompts < 1 or data.corrupted is None:
        return []
    chosen = circuit_options(model, options)
    steps = chosen.steps if chosen.method == "eap-ig" else 0
    exact = chosen.exact_top if chosen.exact_top is not None else _edges(model)
    passes = cost.circuit_passes(steps, exact)
    calls = passes * ceil(prompts / cost.BATCH)
    return [_phase("circuit", name, prompts, "prompts", passes * prompts * one, rate, calls)]


def _cast(model: Model, name: str, data: Dataset, one: float, options, rate: float) -> list[Phase]:
    """The cast's complete passes on the knockouts' prompts (analyses.cast), with CAST_MOVERS movers
    and `top_heads` candidates of each kind: the S-inhibition patch (a clean pass, the twin's, one
    per candidate) and the pair knockouts (1 + movers + candidates + movers x candidates)."""
    prompts = min(options.knockout_n, data.n)
    if prompts < 1 or min(circuit_prompts(model, options.circuit_n), data.n) < 1:
        return []
    if data.corrupted is None or data.task.contrast_role is None:
        return []
    movers, candidates = CAST_MOVERS, options.top_heads
    passes = 2 + candidates + 1 + movers + candidates + movers * candidates
    calls = passes * ceil(prompts / cost.BATCH)
    return [_phase("cast", name, movers * candidates, "pairs", passes * prompts * one, rate, calls)]


def _qk(model: Model, shape: cost.Shape, data: Dataset, options: ReportOptions, rate: float) -> list[Phase]:
    """The QK attribution of `top_heads` labelled heads (the most the report reads; the plan runs
    before any label), each priced at the last layer (the most components upstream), on the first
    `qk_prompts` prompts; none where no label with a key role can name a head on the task."""
    prompts = min(qk_prompts(options), data.n)
    if prompts < 1 or not may_have_keys(data):
        return []
    heads, length = options.top_heads, float(data.lengths.float().mean())
    sources = len(upstream(model, model.n_layers - 1))
    flops = heads * prompts * cost.qk_flops(shape, sources, length)
    calls = heads * 2 * ceil(prompts / cost.BATCH)
    return [_phase("QK", data.task.name, heads, "heads", flops, rate, calls)]


def _scattered(model: Model, options: ReportOptions) -> int:
    """Heads a task's scatter draws: every head of a small model (`selection.pickable_heads`), else
    the sections' leading heads, about."""
    heads = model.n_layers * model.n_heads
    return heads if heads <= options.every_head_up_to else SECTIONS * options.top_heads


def _edges(model: Model) -> int:
    from headscope.scores.circuit import graph

    return len(graph.all_edges(model.arch, model.n_layers))


def _rows(data: Dataset, options: ReportOptions) -> int:
    """The task's OV rows: every keyword instance (context embedding) or distinct keyword token."""
    tokens = data.keywords.token
    return int(tokens.shape[0]) if options.embedding == "context" else int(tokens.unique().numel())


def _detail_rows(data: Dataset, options: ReportOptions) -> int:
    """The task's OV rows read whole: those of its first `ov_detail_n` prompts (every row where None)."""
    if options.ov_detail_n is None:
        return _rows(data, options)
    keywords = data.keywords
    tokens = keywords.token[keywords.batch < options.ov_detail_n]
    return int(tokens.shape[0]) if options.embedding == "context" else int(tokens.unique().numel())


def _phase(name: str, task: str, units: int, unit: str, flops: float, rate: float, calls: int) -> Phase:
    seconds = flops / (rate * cost.EFFICIENCY.get(name, 1.0)) + calls * cost.CALL_SECONDS.get(name, 0.0)
    return Phase(name, task, units, unit, flops, seconds)


def wall_seconds(phases: Sequence[Phase], workers: int = 1) -> float:
    """The predicted wall time: the model-wide phases one after another, the tasks' phases shared
    out to `workers` processes as `workers.shares` shares them (the longest share, over
    PARALLEL_EFFICIENCY where there is more than one)."""
    tasks = list(dict.fromkeys(p.task for p in phases if p.task))
    alone = sum(p.seconds for p in phases if not p.task)
    costs = [sum(p.seconds for p in phases if p.task == task) for task in tasks]
    if workers < 2 or len(tasks) < 2:
        return alone + sum(costs)
    longest = max(sum(costs[i] for i in part) for part in shares(costs, workers))
    return alone + longest / PARALLEL_EFFICIENCY


def peak_bytes(phases: Sequence[Phase], workers: int = 1) -> float:
    """The predicted peak resident bytes of the run: the largest phase's; where the tasks run in
    `workers` forked processes (sharing the model's pages), that many of the largest task phase
    held at once above the model."""
    if not phases:
        return 0.0
    alone = max(phase.peak for phase in phases)
    tasks = {phase.task for phase in phases if phase.task}
    if workers < 2 or len(tasks) < 2:
        return alone
    largest = max(phase.memory for phase in phases if phase.task)
    return max(alone, phases[0].resident + min(workers, len(tasks)) * largest)
