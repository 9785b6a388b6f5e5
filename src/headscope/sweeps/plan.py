"""The plan of a sweep: one job per model, each with its step, family and folder; how many at once.

A checkpoint's step is the one the user gives (`steps`, one per model), else the last whole
number in a local folder's name (`step-00300` -> 300, `checkpoint-1500` -> 1500, `ckpt_3_of_9`
-> 9); hub names and the organism have no step unless given. Models sharing a family (the folder
path with that number written `*`, or every model when `steps` is given) are drawn as one
trajectory, ordered by step.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import psutil

from headscope.errors import HeadscopeError
from headscope.models.devices import usable_cores
from headscope.report.compute import Embedding, ReportOptions

Extra = Literal["knockouts", "circuit"]
EXTRAS: tuple[str, ...] = ("knockouts", "circuit")
GIVEN_FAMILY = "given steps"
NO_STEP_FAMILY = "models"
LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")
RUNS_DIR = "runs"


@dataclass(frozen=True)
class SweepOptions:
    """What each job computes (saved in sweep.json): the report's options less knockouts and
    circuits, unless `extras` names them. `tasks=None`: every built-in task the model's tokenizer
    can spell (no accuracy filter: a checkpoint early in training still gets every task)."""

    tasks: tuple[str, ...] | None = None
    n: int = 200
    seed: int = 0
    k: int = 5
    embedding: Embedding = "context"
    top_heads: int = 4
    extras: tuple[Extra, ...] = ()
    device: str = "auto"
    dtype: str = "float32"
    allow_pickle: bool = False
    pngs: bool = False  # each run's per-figure PNGs: most of a small model's time (26 of 45 s)

    def report_options(self, tasks: tuple[str, ...]) -> ReportOptions:
        return ReportOptions(
            tasks=tasks,
            n=self.n,
            seed=self.seed,
            k=self.k,
            embedding=self.embedding,
            top_heads=self.top_heads,
            knockout_n=32 if "knockouts" in self.extras else 0,
            circuit_n=None if "circuit" in self.extras else 0,
        )

    def matches(self, saved: dict) -> bool:
        """Whether a run folder's saved options are what this sweep would compute."""
        wanted = self.report_options(self.tasks or ()).as_dict()
        keys = ["n", "seed", "k", "embedding", "top_heads", "knockout_n", "circuit_n"]
        keys += ["task_sources"] if self.tasks is not None else []
        wanted["task_sources"] = list(self.tasks or ())
        return all(saved.get(key) == wanted[key] for key in keys)


@dataclass(frozen=True)
class Job:
    """One model of the sweep: what to load, how it is named and ordered, where its run goes."""

    spec: str
    name: str
    step: int | None
    family: str
    folder: Path
    weight_bytes: int | None = field(default=None, compare=False)


def model_list(models: str | Sequence[str] | None, models_file: Path | None) -> list[str]:
    """The models named: a comma-separated string or a list (a `*` pattern expands to the sorted
    folders it matches), or a file of one model a line (# comments and blank lines skipped)."""
    if (models is None) == (models_file is None):
        raise HeadscopeError(
            f"models={models!r}: give the models (M1,M2,...) or a models file, one of the two"
        )
    if models_file is not None:
        path = Path(models_file)
        if not path.is_file():
            raise HeadscopeError(f"models_file={path}: no such file; give a file of one model a line")
        lines = path.read_text(encoding="utf-8").splitlines()
        items = [line.split("#")[0].strip() for line in lines]
    else:
        items = models.split(",") if isinstance(models, str) else list(models)
    found = [spec for item in items if item.strip() for spec in _expanded(item.strip())]
    if not found:
        raise HeadscopeError(
            f"models={models!r}: no model named; give at least one (M1,M2,... or a folder pattern)"
        )
    return list(dict.fromkeys(found))


def _expanded(item: str) -> list[str]:
    if not glob.has_magic(item):
        return [item]
    matched = sorted(p for p in glob.glob(os.path.expanduser(item)) if Path(p).is_dir())
    if not matched:
        raise HeadscopeError(f"models={item!r}: the pattern matches no folder; check the path")
    return matched


def step_of(spec: str) -> int | None:
    """The last whole number in a local folder's name; None for hub names and the organism."""
    path = Path(spec).expanduser()
    if not path.is_dir():
        return None
    found = LAST_NUMBER.search(path.name)
    return int(found.group(1)) if found else None


def family_of(spec: str, step: int | None) -> str:
    if step is None:
        return NO_STEP_FAMILY
    path = Path(spec).expanduser().resolve()
    return str(path.parent / LAST_NUMBER.sub("*", path.name))


def plan_jobs(specs: Sequence[str], steps: Sequence[int] | None, out: Path) -> list[Job]:
    """One job per model, ordered by family, then step (models without a step keep their order)."""
    if steps is not None and len(steps) != len(specs):
        raise HeadscopeError(
            f"steps={list(steps)}: {len(steps)} steps for {len(specs)} models; give one per model"
        )
    jobs = []
    for index, spec in enumerate(specs):
        step = steps[index] if steps is not None else step_of(spec)
        family = GIVEN_FAMILY if steps is not None else family_of(spec, step)
        name = display_name(spec)
        folder = Path(out) / RUNS_DIR / f"{_slug(name)}-{_digest(spec)}"
        jobs.append(Job(spec, name, step, family, folder, weight_bytes(spec)))
    order = {family: i for i, family in reversed(list(enumerate(j.family for j in jobs)))}
    return sorted(jobs, key=lambda j: (order[j.family], -1 if j.step is None else j.step))


def display_name(spec: str) -> str:
    path = Path(spec).expanduser()
    return path.resolve().name if path.is_dir() else spec


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "model"


def _digest(spec: str) -> str:
    path = Path(spec).expanduser()
    key = str(path.resolve()) if path.is_dir() else spec
    return hashlib.sha256(key.encode()).hexdigest()[:8]


# ---- memory -------------------------------------------------------------------------------------

BASE_BYTES = 1 << 30  # one worker with torch, transformers and TransformerLens loaded: measured 0.7 GB
WEIGHT_FACTOR = 3  # the Hugging Face module, the bridge's folded weights and headscope's score copies
UNKNOWN_WEIGHTS = 2 << 30  # a hub model not in the local cache: its size is not known offline
MEMORY_SHARE = 0.8  # of the memory available now, what the sweep's jobs may take


def weight_bytes(spec: str) -> int | None:
    """The size of the model's weight files, when they are on this machine (else None)."""
    from headscope.models.loading import ORGANISM_DIR

    path = ORGANISM_DIR if spec == "organism" else Path(spec).expanduser()
    if not path.is_dir():
        path = _hub_snapshot(spec)
    if path is None:
        return None
    files = [p for pattern in ("*.safetensors", "*.bin") for p in path.glob(pattern)]
    return sum(p.stat().st_size for p in files)


def _hub_snapshot(spec: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True))
    except Exception:  # not cached, not a repository name, or no huggingface_hub
        return None


def job_bytes(job: Job) -> int:
    """Estimated peak memory of one job: a worker's base plus WEIGHT_FACTOR x its weight files."""
    return BASE_BYTES + WEIGHT_FACTOR * (
        job.weight_bytes if job.weight_bytes is not None else UNKNOWN_WEIGHTS
    )


def available_bytes() -> int:
    """Memory available now, on any system (psutil: MemAvailable on Linux)."""
    return int(psutil.virtual_memory().available)


@dataclass(frozen=True)
class Capacity:
    """How many jobs run at once here and why: cores, memory (the largest job) and the jobs asked."""

    jobs: int
    threads: int  # torch threads per job
    per_job: int  # bytes, the largest job's estimate
    available: int  # bytes
    cores: int

    def describe(self) -> str:
        gb = 1 << 30
        return (
            f"{self.jobs} at once: each ~{self.per_job / gb:.1f} GB (1 GB + 3 x its weight files) of "
            f"{self.available / gb:.1f} GB available ({MEMORY_SHARE:.0%} used), {self.cores} cores, "
            f"{self.threads} thread{'s' if self.threads > 1 else ''} each"
        )


def capacity(jobs: Sequence[Job], asked: int | None, cores: int | None = None) -> Capacity:
    """Jobs at once: at most the cores, the asked count and what fits in the memory available."""
    cores = cores or usable_cores()
    largest = max(job_bytes(job) for job in jobs)
    available = available_bytes()
    fits = max(1, math.floor(MEMORY_SHARE * available / largest))
    count = max(1, min(len(jobs), asked or cores, fits, cores))
    return Capacity(count, max(1, cores // count), largest, available, cores)
